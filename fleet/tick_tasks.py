"""Tasks inside ticks: agents of a tick work on tasks of the queue.

An agent whose ``actions`` name ``complete_task`` or ``fail_task`` works on
tasks. Before the workers start, a step that runs no model (``fleet task
hand-out``: the plan job on Actions, ``fleet run`` locally) claims a ready
task for each such agent that holds none, with the agent as the claimer and
a fence. The worker, which holds no credential, reads the queue, shows the
agent its task, and turns a ``complete_task`` or ``fail_task`` call into an
outcome in the delta (``meta.tasks``: task, fence, done or failed, result or
reason). The merge job, the only writer, applies the outcomes of the deltas it
applied, each with its fence: a stale fence (the lease ran out and the task
went to someone else) is refused, and the refusal is recorded in the tick's
commit and the merge's report, while the delta itself, with the agent's
result, stays in the ledger: recorded, never lost.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fleet.config import Config
from fleet.errors import FleetError, NothingToDo
from fleet.ids import ID_PATTERN, printable

if TYPE_CHECKING:  # the queue is imported where it is used: a worker whose agents have no task never loads it
    from fleet.store import Change
    from fleet.tasks import Queue, Task

COMPLETE = "complete_task"
FAIL = "fail_task"
TOOLS = (COMPLETE, FAIL)
_TASK_ID = {"type": "string", "pattern": ID_PATTERN, "description": "Your task's id."}
DEFINITIONS: dict[str, dict[str, Any]] = {
    COMPLETE: {"name": COMPLETE, "description": "Report your task done, with what you did or found.",
               "input_schema": {"type": "object", "additionalProperties": False, "required": ["task", "result"],
                                "properties": {"task": _TASK_ID, "result": {"type": "string", "minLength": 1, "maxLength": 4000}}}},
    FAIL: {"name": FAIL, "description": "Give your task back as failed, and say why.",
           "input_schema": {"type": "object", "additionalProperties": False, "required": ["task", "reason"],
                            "properties": {"task": _TASK_ID, "reason": {"type": "string", "minLength": 1, "maxLength": 4000}}}},
}


def task_tools(cfg: Config, agent: str) -> tuple[str, ...]:
    """The task tools ``agent`` has: those its ``actions`` name."""
    a = cfg.agents.get(agent)
    if a is None or a.actions is None:
        return ()
    return tuple(t for t in TOOLS if t in a.actions)


def task_agents(cfg: Config) -> list[str]:
    return sorted(a for a in cfg.agents if task_tools(cfg, a))


def held(q: Queue, agent: str, at: _dt.datetime) -> Task | None:
    """The task ``agent`` holds with a live lease, if any (the oldest claim)."""
    from fleet.tasks import parse_stamp

    mine = [t for t in q.tasks.values() if t.status == "in-progress" and t.claimed_by == agent
            and t.lease_until is not None and parse_stamp(t.lease_until) > at]
    return min(mine, key=lambda t: (t.claimed_at or "", t.id)) if mine else None


def brief(t: Task) -> dict[str, Any]:
    """What the turn gets of its task: id, fence, title and body."""
    from fleet import tasks

    out: dict[str, Any] = {"id": t.id, "fence": t.fence, "title": t.title}
    if t.body is not tasks.MISSING and t.body is not None:
        out["body"] = t.body
    return out


@dataclass
class HandOut:
    claimed: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> brief of the task claimed now
    holding: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> brief of the task it held already
    idle: dict[str, str] = field(default_factory=dict)  # agent -> why it got none


def hand_out(q: Queue, cfg: Config, at: _dt.datetime, agents: list[str] | None = None) -> Change:
    """Claim a ready task for every agent with task tools that holds none: one
    commit per claim, one push for all (``TaskQueue.change`` decides again on a lost race)."""
    out = HandOut()
    from fleet import tasks
    from fleet.store import Change

    commits: list[tuple[str, dict[str, Any]]] = []
    tasks_now = dict(q.tasks)
    for agent in agents if agents is not None else task_agents(cfg):
        if not task_tools(cfg, agent):
            continue
        view = q.with_tasks(dict(tasks_now))  # a Queue is one read: a fresh one after each claim
        mine = held(view, agent, at)
        if mine is not None:
            out.holding[agent] = brief(mine)
            continue
        try:
            step = tasks.claim(view, cfg, at, agent)
        except (NothingToDo, FleetError) as e:
            out.idle[agent] = str(e)
            continue
        tasks_now[step.task.id] = step.task
        out.claimed[agent] = brief(step.task)
        commits.extend(step.change().commits)
    return Change(commits, out)


# -- outcomes, in a delta and at the merge -------------------------------------------

def outcome(agent_task: dict[str, Any] | None, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The outcome a call reports, for ``meta.tasks``; ValueError if the agent holds no such task."""
    if agent_task is None:
        raise ValueError("you hold no task this tick")
    if given.get("task") != agent_task["id"]:
        raise ValueError(f"your task is {agent_task['id']!r}, not {printable(str(given.get('task')), 80)!r}")
    if name == COMPLETE:
        return {"task": agent_task["id"], "fence": agent_task["fence"], "outcome": "done", "result": given["result"]}
    return {"task": agent_task["id"], "fence": agent_task["fence"], "outcome": "failed", "reason": given["reason"]}


@dataclass
class Applied:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)  # {task, agent, fence, outcome, why}

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "failed": self.failed, "refused": self.refused}

    def lines(self) -> list[str]:
        """For the tick's commit message: what became of each outcome that could not be applied."""
        return [f"Task outcome refused: {r['agent']} reported {r['task']} {r['outcome']} with fence {r['fence']}: {r['why']}"
                for r in self.refused]


def apply_outcomes(q: Queue, cfg: Config, at: _dt.datetime, reported: list[tuple[str, dict[str, Any]]]) -> Change:
    """The queue's change for the outcomes of the tick's applied deltas, (agent, outcome) in
    merge order. Each goes through the holder check with its fence; one that cannot be
    applied is refused with the reason. Applying the same outcomes again changes nothing."""
    from fleet import tasks
    from fleet.store import Change

    out = Applied()
    commits: list[tuple[str, dict[str, Any]]] = []
    now = dict(q.tasks)
    for agent, o in reported:
        view = q.with_tasks(dict(now))  # a Queue is one read: a fresh one after each change
        t = now.get(o["task"])
        try:
            if t is None:
                raise FleetError(f"no task {o['task']!r} in the queue")
            if o["outcome"] == "done":
                if t.status == "done" and t.fence == o["fence"] and t.claimed_by == agent:
                    out.done.append(t.id)  # applied by an earlier attempt of this merge
                    continue
                step = tasks.complete(view, at, t.id, o["fence"], result=o.get("result"), agent=agent)
                out.done.append(t.id)
            else:
                if t.fence == o["fence"] and t.status != "in-progress" and t.error == o.get("reason"):
                    out.failed.append(t.id)  # applied by an earlier attempt of this merge
                    continue
                step = tasks.fail(view, cfg, at, t.id, o["fence"], reason=str(o.get("reason", "")), agent=agent)
                out.failed.append(t.id)
        except FleetError as e:
            out.refused.append({"task": o["task"], "agent": agent, "fence": o["fence"], "outcome": o["outcome"],
                                "why": printable(str(e), 500)})
            continue
        now[step.task.id] = replace(step.task)
        commits.extend(step.change().commits)
    return Change(commits, out)


def hand_out_now(repo: Any, agents: list[str] | None = None) -> HandOut:
    """Claim tasks for the tick's agents with task tools, on ``repo``'s remote
    (a fleet.repo.FleetRepo); what each agent now holds, or why it holds none."""
    from fleet.tasks import TaskQueue

    ch, _ = TaskQueue(repo).change(lambda q, cfg, at: hand_out(q, cfg, at, agents))
    result: HandOut = ch.result
    return result
