"""`fleet plan`: the workers and agents of the next tick, for `fromJSON`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from fleet import tick_tasks
from fleet import world as world_mod
from fleet.cli import dir_option, emit, json_option, remote_option, split
from fleet.errors import UsageError
from fleet.plan import UnknownAgents, assign, roster
from fleet.repo import FleetRepo


def plan(path: Path, *, workers: int | None = None, remote: str | None = None,
         agents: list[str] | None = None, hand_out: bool = False) -> dict[str, Any]:
    repo = FleetRepo(path, remote)
    repo.fetch()
    head = repo.main()
    snap = repo.snapshot(head)
    cfg = snap.config
    world_mod.load(cfg, snap.read)  # on Actions the plan job starts a tick: a world that cannot run stops here
    count = workers or cfg.run.workers
    if not 1 <= count <= 256:
        raise UsageError(f"--workers {count}: a tick has 1 to 256 workers (a GitHub matrix holds 256 jobs)")
    assignment = assign(roster(cfg.agents, agents), count)
    include = [{"worker": int(name[1:]), "name": name, "agents": len(a)} for name, a in assignment.items() if a]
    tasks: dict[str, Any] | None = None
    workers_of = [a for a in roster(cfg.agents, agents) if tick_tasks.task_tools(cfg, a)]
    if hand_out and workers_of:  # this step runs no model: it may claim for the agents that will
        out = tick_tasks.hand_out_now(repo, workers_of)
        tasks = {"claimed": out.claimed, "holding": out.holding, "idle": out.idle}
    return {
        "tick": snap.tick + 1,
        "main": head,
        "workers": count,
        "push": cfg.run.push_mode(count),
        "deadline_seconds": cfg.run.deadline_seconds,
        "matrix": {"include": include},
        "assignment": {k: v for k, v in assignment.items() if v},
        "agents": ",".join(agents) if agents else "",
        "tasks": tasks,
    }


# -- the command line --------------------------------------------------------
@click.command("plan")
@dir_option
@json_option
@remote_option
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Workers this tick, 1 to 256 (default: run.workers in config).")
@click.option("--agents", default=None, help="Only these agents this tick (comma-separated).")
@click.option("--matrix", "matrix_only", is_flag=True, help="Print only the matrix, on one line, for $GITHUB_OUTPUT.")
@click.option("--hand-out", "hand_out", is_flag=True,
              help="Also claim a ready task for each agent of the tick whose actions name complete_task or "
                   "fail_task (this step runs no model; the workers that do only read the queue).")
def plan_command(directory: Path, as_json: bool, remote: str | None, workers: int | None, agents: str | None,
                 matrix_only: bool, hand_out: bool) -> None:
    """The workers and agents of the next tick, as JSON for a workflow's fromJSON."""
    try:
        p = plan(directory, workers=workers, remote=remote, agents=split(agents), hand_out=hand_out)
    except UnknownAgents as e:
        raise UsageError(f"--agents: {e}") from None
    if matrix_only:
        click.echo(json.dumps(p["matrix"], separators=(",", ":"), sort_keys=True))
        return

    def text() -> None:
        click.echo(f"tick {p['tick']}: {len(p['matrix']['include'])} worker(s) with agents, push {p['push']}")
        for name, agents_ in p["assignment"].items():
            click.echo(f"  {name}: {', '.join(agents_)}")
        for agent, t in sorted((p["tasks"] or {}).get("claimed", {}).items()):
            click.echo(f"  {agent} works on task {t['id']} (fence {t['fence']}): {t['title']}")

    emit(p, as_json, text)
