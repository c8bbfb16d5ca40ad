"""Agent streams: many turns in flight, each ending in exactly one delta.

A turn that finishes becomes a delta with the ops its tool calls produced (or
an explicit no-op). A turn that fails, is still running at the deadline, or
may not start because a budget ran out becomes an explicit empty delta that
says why; it is never partial, and the turns that did finish are kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet import delta as delta_mod
from fleet import faults, keys, knowledge, tick_messages, tick_tasks
from fleet import world as world_mod
from fleet.config import Budget, Config, Price
from fleet.prompt import PromptBuilder
from fleet.providers import Provider, TurnRequest
from fleet.records import Usage
from fleet.state import Snapshot
from fleet.tools import to_ops
from fleet.world import View


class BudgetExhausted(Exception):
    """No new turn starts: the reason is recorded in the agent's empty delta."""


@dataclass
class Spending:
    """Tokens and dollars spent by this worker this tick, with in-flight reservations."""

    limit: Budget
    spent: Usage = Usage()
    reserved_tokens: int = 0
    reserved_usd: float = 0.0
    stops: list[str] = field(default_factory=list)

    def reserve(self, tokens: int, usd: float) -> None:
        if self.limit.tokens is not None and self.spent.tokens + self.reserved_tokens + tokens > self.limit.tokens:
            raise BudgetExhausted(f"the tick's token budget for this worker ({self.limit.tokens}) is spent")
        if self.limit.usd is not None and self.spent.cost_usd + self.reserved_usd + usd > self.limit.usd:
            raise BudgetExhausted(f"the tick's dollar budget for this worker (${self.limit.usd}) is spent")
        self.reserved_tokens += tokens
        self.reserved_usd += usd

    def settle(self, tokens: int, usd: float, used: dict[str, Any] | None) -> None:
        self.reserved_tokens -= tokens
        self.reserved_usd -= usd
        if used:
            self.spent += Usage.parse(used)


def _share(budget: Budget, workers: int) -> Budget:
    return Budget(None if budget.tokens is None else budget.tokens // workers,
                  None if budget.usd is None else budget.usd / workers)


async def run_turns(
    provider: Provider,
    snap: Snapshot,
    agents: list[str],
    *,
    tick: int,
    worker: str,
    workers: int = 1,
    concurrency: int | None = None,
    deadline: float | None = None,
    finished: dict[str, dict[str, Any]] | None = None,
    tasks: dict[str, dict[str, Any]] | None = None,
    world: world_mod.World | None = None,
    knowledge_docs: Sequence[knowledge.Doc] = (),
    inboxes: dict[str, list[dict[str, Any]]] | None = None,
    view: View | None = None,
) -> list[dict[str, Any]]:
    """One turn per agent, at most ``concurrency`` at once; one delta body each.

    ``finished`` (agent -> delta) fills as turns complete, so a caller that is
    interrupted keeps the work already done. ``tasks``: the task each agent
    holds this tick (fleet.tick_tasks), shown in its prompt with the tools to
    report on it. ``knowledge_docs``: knowledge from other repositories
    (fleet.knowledge), ranked for each agent in its prompt. ``inboxes``: the
    unacked messages of each agent on the bus (fleet.tick_messages), shown in
    its prompt. ``view``: main as the turns read it (default: a view of
    ``snap`` at the next tick that reads what the turns ask of it).
    """
    finished = {} if finished is None else finished
    held = dict(tasks or {})
    cfg: Config = snap.config
    world = world if world is not None else world_mod.load(cfg, snap.read)
    declared = frozenset(world.tools)
    # every turn reads main as the tick started, never another turn's calls:
    # what an agent does does not depend on which agents share its worker
    # a view reads only what the turns ask of it (fleet.world.View)
    view = view if view is not None else View(snap, tick=snap.tick + 1)
    builder = PromptBuilder(view, world.prompt, cfg.run.context_tokens, cfg.name, knowledge_docs)
    builder.read_ahead(agents)  # what every agent's prompt shows first, in one request
    streams = max(1, min(concurrency or cfg.run.concurrency, len(agents)))
    sem = asyncio.Semaphore(streams)
    spend = Spending(_share(cfg.tick_budget, workers))
    price_of = getattr(provider, "price", None)
    # The shared prefix can be read from the cache only once a response that
    # wrote it has gone out: the first turn runs alone, the rest then read it.
    primed = asyncio.Event()
    # retry-after may ask for any wait: a turn as a whole has a limit too
    turn_limit = cfg.run.turn_timeout_seconds * (cfg.run.max_retries + 1) + 60

    async def one(i: int, agent: str) -> dict[str, Any]:
        stream = f"s{i % streams + 1}"
        if i:
            await primed.wait()
        try:
            return await _turn(stream, agent)
        finally:
            primed.set()

    async def _turn(stream: str, agent: str) -> dict[str, Any]:
        async with sem:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("the worker's deadline passed before this turn started")
            tools = world.tools_of(cfg, agent)
            task = held.get(agent)
            ttools = tick_tasks.task_tools(cfg, agent) if task else ()
            ltools = knowledge.lesson_tools(cfg, agent)
            mtools = tick_messages.message_tools(cfg, agent)
            inbox = (inboxes or {}).get(agent) if mtools else None
            offered = (world.definitions(tools) + [tick_tasks.DEFINITIONS[n] for n in ttools]
                       + [tick_messages.DEFINITIONS[n] for n in mtools])
            offered += [knowledge.LESSON_DEFINITION] if ltools else []
            prompt = builder.for_agent(agent, task, inbox)
            model = cfg.model_of(agent)
            max_tokens = cfg.run.max_tokens
            budget = cfg.budget_of(agent)
            if budget.tokens is not None:
                max_tokens = min(max_tokens, budget.tokens - prompt.total_tokens)
                if max_tokens < 16:
                    raise BudgetExhausted(f"agent budget of {budget.tokens} tokens is less than its prompt ({prompt.total_tokens})")
            price: Price | None = price_of(model) if price_of else None
            estimate_usd = price.cost({"input_tokens": prompt.total_tokens, "output_tokens": max_tokens}) if price else 0.0
            if budget.usd is not None and estimate_usd > budget.usd:
                raise BudgetExhausted(f"agent budget of ${budget.usd} is less than this turn may cost (${estimate_usd:.4f})")
            estimate_tokens = prompt.total_tokens + max_tokens
            spend.reserve(estimate_tokens, estimate_usd)
            result = None
            try:
                request = TurnRequest(agent, tick, view, offered, tools, prompt, model, max_tokens, task, inbox)
                result = await asyncio.wait_for(provider.turn(request), turn_limit)
            finally:
                spend.settle(estimate_tokens, estimate_usd, result.usage if result else None)
        calls, lessons, lesson_rejected = knowledge.take_lessons(result.calls, ltools)
        conv = to_ops(agent, tick, calls, view, tools, declared, task=task, task_tools=ttools,
                      message_tools=mtools, inbox_ids={m["id"] for m in inbox or ()}, cfg=cfg)
        meta: dict[str, Any] = {"provider": provider.name, "model": result.model, "usage": result.usage}
        if conv.rejected or lesson_rejected:
            meta["rejected"] = (conv.rejected + lesson_rejected)[:21]
        if lessons:
            meta["lessons"] = lessons
        if conv.tasks:
            meta["tasks"] = conv.tasks
        if conv.messages:
            meta["messages"] = conv.messages
        if conv.acks:
            meta["acks"] = conv.acks
        if conv.noop is not None:
            meta["noop"] = conv.noop if result.calls or not result.text else "answered without a tool call"
            if lessons and not calls:
                meta["noop"] = "recorded a lesson, changed nothing"
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
    offline = getattr(provider, "price", None) is None or provider.name == "offline"
    for i, (agent, t) in enumerate(zip(agents, tasks, strict=True)):
        model = getattr(provider, "model", None) if offline else cfg.model_of(agent)
        stream = f"s{i % streams + 1}"
        if t in pending:
            error = "the worker's deadline passed before this turn finished"
        elif isinstance(t.exception(), (TimeoutError, BudgetExhausted)):
            error = f"not started: {t.exception()}" if isinstance(t.exception(), BudgetExhausted) else str(t.exception())
        elif t.exception() is not None:
            error = f"turn failed: {type(t.exception()).__name__}: {t.exception()}"
        else:
            out.append(t.result())
            continue
        out.append(delta_mod.make(tick=tick, worker=worker, stream=stream, agent=agent,
                                  meta={"provider": provider.name, "model": model, "error": keys.redact(error)[:2000]}))
    return out
