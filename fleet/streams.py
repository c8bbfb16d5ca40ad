"""Agent streams: many turns in flight, each ending in exactly one delta.

A turn that finishes becomes a delta with the ops its tool calls produced (or
an explicit no-op). A turn that fails, or is still running at the deadline,
becomes an explicit empty delta carrying the error; it is never partial, and
the turns that did finish are kept.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fleet import delta as delta_mod
from fleet import faults
from fleet.config import Config
from fleet.providers import Provider, TurnRequest
from fleet.state import Snapshot
from fleet.tools import TOOLS, World, to_ops


def world_of(snap: Snapshot) -> World:
    """The view of the world the tools check calls against."""
    cfg = snap.config
    def ids(coll: str) -> list[str]:
        if coll not in cfg.collections:
            return []
        return [p.rsplit("/", 1)[1][:-5] for p in snap.under(f"state/{coll}")]
    posts: dict[str, str] = {}
    if "posts" in cfg.collections:
        import orjson
        paths = snap.under("state/posts")
        for p, data in snap.read_many(paths).items():
            if data:
                doc = orjson.loads(data)
                posts[doc["id"]] = doc.get("author", "")
    following = set()
    for f in ids("follows"):
        a, _, b = f.partition("--")
        following.add((a, b))
    return World(agents=set(cfg.agents), channels=set(ids("channels")), posts=posts,
                 following=following, reactions=set(ids("reactions")))


def personas(snap: Snapshot, agents: list[str]) -> dict[str, str]:
    import orjson
    cfg = snap.config
    if "agents" not in cfg.collections:
        return {a: "" for a in agents}
    paths = {a: cfg.collections["agents"].doc_path(a) for a in agents}
    blobs = snap.read_many(paths.values())
    out = {}
    for a, p in paths.items():
        data = blobs.get(p)
        out[a] = orjson.loads(data).get("persona", "") if data else ""
    return out


async def run_turns(
    provider: Provider,
    snap: Snapshot,
    agents: list[str],
    *,
    tick: int,
    worker: str,
    concurrency: int = 8,
    deadline: float | None = None,
    finished: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One turn per agent, at most ``concurrency`` at once; one delta body each.

    ``finished`` (agent -> delta) fills as turns complete, so a caller that is
    interrupted keeps the work already done.
    """
    finished = {} if finished is None else finished
    world = world_of(snap)
    persona = personas(snap, agents)
    streams = max(1, min(concurrency, len(agents)))
    sem = asyncio.Semaphore(streams)
    model = getattr(provider, "model", None)
    meta_base = {"provider": provider.name, "model": model}

    async def one(i: int, agent: str) -> dict[str, Any]:
        stream = f"s{i % streams + 1}"
        async with sem:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("the worker's deadline passed before this turn started")
            result = await provider.turn(TurnRequest(agent, tick, persona[agent], world, TOOLS))
        conv = to_ops(agent, tick, result.calls, world)
        meta: dict[str, Any] = {**meta_base, "model": result.model, "usage": result.usage}
        if conv.rejected:
            meta["rejected"] = conv.rejected
        if conv.noop is not None:
            meta["noop"] = conv.noop
        body = delta_mod.make(tick=tick, worker=worker, stream=stream, agent=agent, ops=conv.ops, meta=meta)
        finished[agent] = body
        faults.point("work.during-streams")
        return body

    tasks = [asyncio.ensure_future(one(i, a)) for i, a in enumerate(agents)]
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    out = []
    for i, (agent, t) in enumerate(zip(agents, tasks)):
        stream = f"s{i % streams + 1}"
        if t in pending:
            error = "the worker's deadline passed before this turn finished"
        elif isinstance(t.exception(), TimeoutError):
            error = str(t.exception())
        elif t.exception() is not None:
            error = f"turn failed: {type(t.exception()).__name__}: {t.exception()}"
        else:
            out.append(t.result())
            continue
        out.append(delta_mod.make(tick=tick, worker=worker, stream=stream, agent=agent,
                                  meta={**meta_base, "error": error}))
    return out
