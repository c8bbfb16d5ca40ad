"""The Anthropic provider: the official SDK, Messages API, tool use.

One call per agent turn. Tools come first, then the system prompt whose shared
part ends in a cache breakpoint, so the tick's common prefix is paid for once.
The SDK retries 429, 5xx and 529 (overloaded) with backoff and honours
``retry-after``; each call has a timeout. ``ANTHROPIC_API_KEY`` and
``ANTHROPIC_BASE_URL`` are read as every SDK user expects.
"""

from __future__ import annotations

import os
from typing import Any

from fleet import keys
from fleet.config import Config, Price
from fleet.errors import UsageError
from fleet.providers import TurnRequest, TurnResult
from fleet.tools import ToolCall

DEFAULT_PRICE = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)


def has_key() -> bool:
    return bool(os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"))


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, cfg: Config, *, api_key: str | None = None, base_url: str | None = None) -> None:
        import anthropic

        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key and not os.environ.get("ANTHROPIC_AUTH_TOKEN"):
            raise UsageError("provider anthropic needs ANTHROPIC_API_KEY (or use the offline provider)")
        keys.register(key)
        self.cfg = cfg
        self.model = cfg.run.model
        self.client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=base_url or os.environ.get("ANTHROPIC_BASE_URL") or None,
            max_retries=cfg.run.max_retries,
            timeout=cfg.run.turn_timeout_seconds,
        )

    def price(self, model: str) -> Price:
        """The price of ``model``: exact name, else the longest configured name it
        starts with (the API answers an alias with a dated id), else the default."""
        if model in self.cfg.models:
            return self.cfg.models[model]
        prefixes = [m for m in self.cfg.models if model.startswith(m)]
        return self.cfg.models[max(prefixes, key=len)] if prefixes else DEFAULT_PRICE

    async def turn(self, request: TurnRequest) -> TurnResult:
        assert request.prompt is not None, "the anthropic provider needs an assembled prompt"
        tools = [dict(t) for t in request.tools]
        msg = await self.client.messages.create(
            model=request.model,
            max_tokens=request.max_tokens,
            system=request.prompt.system,
            messages=request.prompt.messages,
            tools=tools,
            metadata={"user_id": request.agent},
        )
        calls = [ToolCall(b.name, b.input) for b in msg.content if b.type == "tool_use"]
        text = "".join(b.text for b in msg.content if b.type == "text")
        u = msg.usage
        usage: dict[str, Any] = {
            "input_tokens": _count(u, "input_tokens"),
            "output_tokens": _count(u, "output_tokens"),
            "cache_read_input_tokens": _count(u, "cache_read_input_tokens"),
            "cache_creation_input_tokens": _count(u, "cache_creation_input_tokens"),
        }
        usage["cost_usd"] = round(self.price(request.model).cost(usage), 6)
        model = msg.model if isinstance(msg.model, str) and is_safe_model(msg.model) else request.model
        return TurnResult(calls, model, usage, text=text)

    async def aclose(self) -> None:
        await self.client.close()


MAX_TOKENS_COUNT = 1_000_000_000  # far beyond any real turn; the bound schemas/delta.schema.json sets


def _count(usage: Any, name: str) -> int:
    """A token count from the API's answer, or a ValueError that fails this turn
    (never the worker) if it is not one."""
    value = getattr(usage, name, 0) or 0
    if type(value) is not int or not 0 <= value <= MAX_TOKENS_COUNT:
        raise ValueError(f"the API answered usage.{name} = {str(value)[:40]}, which is not a token count")
    return value


def is_safe_model(name: str) -> bool:
    """A model name as the API gives them (letters, digits, '.', '-', '_', ':', '@', '/')."""
    return 0 < len(name) <= 128 and all(c.isascii() and (c.isalnum() or c in ".-_:@/") for c in name)
