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
from fleet.errors import UsageError
from fleet.prompt import Prompt
from fleet.tools import ToolCall
from fleet.world import Tool, View

NAMES = ("auto", "offline", "anthropic")
OFFLINE_MODEL = "offline-1"
CONFIG_SETTING = "run.provider in state/config.json"


@dataclass
class TurnRequest:
    agent: str
    tick: int
    view: View  # main as the tick started
    tools: list[dict[str, Any]]  # the agent's own tools, as the model is given them
    specs: dict[str, Tool] = field(default_factory=dict)  # the same, as the world declares them
    prompt: Prompt | None = None
    model: str = ""
    max_tokens: int = 1024
    task: dict[str, Any] | None = None  # the task the agent holds this tick (fleet.tick_tasks.brief)
    inbox: list[dict[str, Any]] | None = None  # its unacked messages, if it is on the bus (fleet.tick_messages)


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


class ProviderUnavailable(UsageError):
    """The provider asked for cannot run: unknown, or anthropic without a key.

    ``from_config`` says whether run.provider named it; otherwise the caller
    did, and a command says how with :meth:`for_option`.
    """

    def __init__(self, name: str, *, from_config: bool, missing_key: bool) -> None:
        self.name, self.from_config, self.missing_key = name, from_config, missing_key
        super().__init__(self.for_option("provider"))

    def for_option(self, option: str) -> str:
        """The message, naming ``option`` (``--provider``) as the way to choose a provider."""
        source = CONFIG_SETTING if self.from_config else option
        if self.missing_key:
            return (f"{source} says anthropic, which needs ANTHROPIC_API_KEY; set it, or use "
                    f"{option} auto (anthropic when a key is set) or {option} offline")
        return f"{source}: unknown provider {self.name!r} (known: {', '.join(NAMES)})"


def choose(name: str | None, cfg: Config) -> tuple[str, str | None]:
    """The provider that will run (``offline`` or ``anthropic``) and a note that
    says why, when ``auto`` chose it.

    ``auto`` (the default) is anthropic when ``ANTHROPIC_API_KEY`` (or
    ``ANTHROPIC_AUTH_TOKEN``) is set, offline otherwise. An explicit setting,
    ``name`` or ``run.provider`` in config, wins; an explicit anthropic without
    a key is :class:`ProviderUnavailable`, not a silent run on the offline provider.
    """
    from fleet.providers.anthropic import has_key

    from_config = name is None
    name = cfg.run.provider if name is None else name
    if name not in NAMES:
        raise ProviderUnavailable(name, from_config=from_config, missing_key=False)
    if name == "auto":
        if has_key():
            return "anthropic", "provider auto: ANTHROPIC_API_KEY is set, so the anthropic provider runs"
        return "offline", "provider auto: no ANTHROPIC_API_KEY, so the offline provider runs"
    if name == "anthropic" and not has_key():
        raise ProviderUnavailable(name, from_config=from_config, missing_key=True)
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
