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

NAMES = ("auto", "offline", "anthropic")
OFFLINE_MODEL = "offline-1"


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
    """The provider that will run (``offline`` or ``anthropic``) and a note that
    says why, when ``auto`` chose it.

    ``auto`` (the default) is anthropic when ``ANTHROPIC_API_KEY`` (or
    ``ANTHROPIC_AUTH_TOKEN``) is set, offline otherwise. An explicit setting,
    ``--provider`` or ``run.provider`` in config, wins; an explicit anthropic
    without a key is a usage error, not a silent run on the offline provider.
    """
    from fleet.providers.anthropic import has_key

    source = "--provider" if name else "run.provider in state/config.json"
    name = name or cfg.run.provider
    if name not in NAMES:
        raise FleetError(f"{source}: unknown provider {name!r} (known: {', '.join(NAMES)})", code=2)
    if name == "auto":
        if has_key():
            return "anthropic", "provider auto: ANTHROPIC_API_KEY is set, so the anthropic provider runs"
        return "offline", "provider auto: no ANTHROPIC_API_KEY, so the offline provider runs"
    if name == "anthropic" and not has_key():
        raise FleetError(f"{source} says anthropic, which needs ANTHROPIC_API_KEY; set it, or use "
                         "--provider auto (anthropic when a key is set) or --provider offline", code=2)
    return name, None


def models(name: str, cfg: Config) -> list[str]:
    """The models provider ``name`` runs for the agents of ``cfg`` (as configured;
    each delta records the model that answered)."""
    if name != "anthropic":
        return [OFFLINE_MODEL]
    return sorted({cfg.model_of(a) for a in cfg.agents} or {cfg.run.model})


def get(name: str | None, cfg: Config, *, quiet: bool = False) -> Provider:
    """The provider ``name`` (default: run.provider in config), chosen as
    :func:`choose` says; what ``auto`` chose is said on stderr."""
    name, note = choose(name, cfg)
    if note and not quiet:
        print(f"fleet: {note}", file=sys.stderr)
    if name == "anthropic":
        from fleet.providers.anthropic import AnthropicProvider

        return AnthropicProvider(cfg)
    from fleet.providers.offline import OfflineProvider

    return OfflineProvider(cfg.run.seed)
