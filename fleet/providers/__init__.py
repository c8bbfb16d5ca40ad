"""Model providers: one interface, a real implementation and an offline one.

A provider takes one agent's turn (its persona, the tick, a view of the
world, the tools) and returns the tool calls the model chose, with the model
name and the usage. Providers never write anything; the worker turns calls
into ops (fleet.tools) and ops into deltas (fleet.streams).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from fleet.errors import FleetError
from fleet.tools import ToolCall, World


@dataclass
class TurnRequest:
    agent: str
    tick: int
    persona: str
    world: World
    tools: list[dict[str, Any]]


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


def get(name: str, *, seed: int = 0) -> Provider:
    """The provider called ``name``: ``offline`` (built in) for now."""
    if name == "offline":
        from fleet.providers.offline import OfflineProvider

        return OfflineProvider(seed)
    raise FleetError(f"unknown provider {name!r} (known: offline)", code=2)
