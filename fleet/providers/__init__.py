"""Model providers: one interface, a real implementation and an offline one.

A provider takes one agent's turn (the assembled prompt, the tools, the
model) and returns the tool calls the model chose, with the model name and the
usage. Providers never write anything; the worker turns calls into ops
(fleet.tools) and ops into deltas (fleet.streams).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleet.config import Config
from fleet.errors import FleetError
from fleet.prompt import Prompt
from fleet.tools import ToolCall, World

NAMES = ("offline", "anthropic")


@dataclass
class TurnRequest:
    agent: str
    tick: int
    persona: str
    world: World
    tools: list[dict[str, Any]]
    prompt: Prompt | None = None
    model: str = ""
    max_tokens: int = 1024


@dataclass
class TurnResult:
    calls: list[ToolCall]
    model: str
    usage: dict[str, Any] = field(default_factory=dict)
    text: str = ""


class Provider(Protocol):
    name: str

    async def turn(self, request: TurnRequest) -> TurnResult: ...

    async def aclose(self) -> None: ...


def choose(name: str | None, cfg: Config) -> tuple[str, str | None]:
    """The provider that will run, and a note if it is not the one asked for."""
    name = name or cfg.run.provider
    if name not in NAMES:
        raise FleetError(f"unknown provider {name!r} (known: {', '.join(NAMES)})", code=2)
    if name == "anthropic":
        from fleet.providers.anthropic import has_key

        if not has_key():
            return "offline", "no ANTHROPIC_API_KEY: running the offline provider instead"
    return name, None


def get(name: str | None, cfg: Config, *, quiet: bool = False) -> Provider:
    """The provider ``name`` (default: run.provider in config).

    Without an API key the anthropic provider cannot run; the offline one
    runs instead, and says so on stderr.
    """
    name, note = choose(name, cfg)
    if note and not quiet:
        print(f"fleet: {note}", file=sys.stderr)
    if name == "anthropic":
        from fleet.providers.anthropic import AnthropicProvider

        return AnthropicProvider(cfg)
    from fleet.providers.offline import OfflineProvider

    return OfflineProvider(cfg.run.seed)
