"""Which worker runs which agents: rendezvous (highest-random-weight) hashing.

Each (worker, agent) pair gets a pseudo-random score; an agent goes to the
worker with the highest score. Adding a worker moves only the agents that now
score highest on it; every other agent stays where it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from fleet.errors import UsageError


def worker_name(index: int) -> str:
    """Workers are numbered from 1, as people count them."""
    return f"w{index}"


class UnknownAgents(UsageError):
    """Agents asked for that config does not have; a command names its option."""


def _score(worker: str, agent: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{worker}\0{agent}".encode()).digest()[:8], "big")


def roster(configured: Iterable[str], only: list[str] | None = None) -> list[str]:
    """The agents of a tick: all configured ones, or those in ``only``."""
    everyone = sorted(configured)
    if not only:
        return everyone
    unknown = sorted(set(only) - set(everyone))
    if unknown:
        raise UnknownAgents(f"{', '.join(unknown)} not in state/config.json agents")
    return sorted(set(only))


def assign(agents: list[str], workers: int) -> dict[str, list[str]]:
    """Worker name -> its agents (sorted), for every worker 1..workers."""
    if workers < 1:
        raise ValueError("at least one worker")
    names = [worker_name(i) for i in range(1, workers + 1)]
    out: dict[str, list[str]] = {n: [] for n in names}
    for agent in sorted(agents):
        best = max(names, key=lambda w: (_score(w, agent), w))
        out[best].append(agent)
    return out
