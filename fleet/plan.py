"""Which worker runs which agents: rendezvous (highest-random-weight) hashing.

Each (worker, agent) pair gets a pseudo-random score; an agent goes to the
worker with the highest score. Adding a worker moves only the agents that now
score highest on it; every other agent stays where it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from fleet.errors import UsageError
from fleet.ids import printable


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
        raise UnknownAgents(f"{', '.join(printable(a, 80) for a in unknown)} not in state/config.json agents")
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


def agents_of(agents: list[str], workers: int, worker: str) -> list[str]:
    """``assign(agents, workers)[worker]`` without scoring every pair: an agent
    is another worker's as soon as one worker outscores this one, which takes
    a few scores for most agents, not one per worker (at 256 workers and
    10,240 agents, some 80,000 hashes instead of 2.6 million)."""
    if workers < 1:
        raise ValueError("at least one worker")
    names = [worker_name(i) for i in range(1, workers + 1)]
    mine = []
    for agent in sorted(agents):
        own = (_score(worker, agent), worker)
        if all((_score(w, agent), w) < own for w in names if w != worker):
            mine.append(agent)
    return mine
