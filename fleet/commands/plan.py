"""`fleet plan`: the workers and agents of the next tick, for `fromJSON`, and
whether that tick is due (``run.every``, the budgets over time, a tick already
under way; see ``fleet.clock``). A plan that finds the tick not due prints the
same JSON with ``"due": false`` and why, writes nothing, and exits 3."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from fleet import summary, tick_tasks
from fleet import world as world_mod
from fleet.cli import MAX_COUNT, dir_option, emit, json_option, remote_option, split
from fleet.clock import MAX_WAIT, Clock, decide, due_now, runner, stop_switch
from fleet.config import format_duration
from fleet.errors import EXIT_NOTHING, FleetError, UsageError
from fleet.outside import main_refusal
from fleet.plan import UnknownAgents, assign, roster
from fleet.repo import FleetRepo
from fleet.spend import spending, utc

MODES = {"schedule": "schedule", "hand": "by hand", "dispatched": "dispatched"}
RELAY_MIN = 60  # a run with less than this left to wait relays at once rather than wait a moment more


def _say(line: str) -> None:
    print(f"fleet: {line}", file=sys.stderr, flush=True)


def plan(path: Path, *, workers: int | None = None, remote: str | None = None,
         agents: list[str] | None = None, hand_out: bool = False, start: bool = False, mode: str = "schedule",
         wait: bool = False, stopped: str | None = None, now: Callable[[], float] = time.time,
         sleep: Callable[[float], None] = time.sleep, say: Callable[[str], None] = _say,
         by: str | None = None, after: int | None = None, relay: int = 0) -> dict[str, Any]:
    """The next tick's plan, and whether it is due now.

    ``mode``: ``schedule`` (a run that found its way here by itself: the pace
    holds it back), ``hand`` (a person asked for this tick now: only the budgets
    and a tick under way hold it back) or ``dispatched`` (the run the last tick
    dispatched). ``wait``: sleep until the tick is due, at most ``run.every``.
    ``start``: record the start on fleet/clock (compare-and-swap), so that no
    other run starts this tick. ``stopped``: the stop switch is on (a
    dispatched run then starts nothing). ``by``: who starts it (default: this
    GitHub Actions run, or this machine and process). ``after``: the tick whose
    merge dispatched this run, which is for the tick after it and no other:
    once another run started that one, this run starts nothing. ``relay``:
    how many runs of this chain waited before this one (``fleet.dispatch``).

    A dispatched run waits at most as long as a job may (``MAX_WAIT``); a tick
    due later than that (a pace of a day, say) is reached by relays: the run
    waits all it may, records a relay on fleet/clock (compare-and-swap, so one
    run of a chain relays once) and answers ``"relay"``, for the workflow's
    relay job to dispatch the next run, which waits in turn. Writes nothing
    but that record when the tick is not due."""
    if mode not in MODES:
        raise UsageError(f"mode {mode!r}: one of {', '.join(MODES)}")
    repo = FleetRepo(path, remote)
    waited = 0.0
    me = by or runner()
    relay_now = False
    while True:
        repo.fetch()  # main, worker branches and fleet/clock: the one moment state changes here
        head = repo.main()
        refused = main_refusal(repo.git, head)
        if refused is not None:  # a change fleet refuses, pushed to main: no worker starts, as no merge builds on it
            raise FleetError(refused.line("no tick starts on it"))
        snap = repo.snapshot(head)
        cfg = snap.config
        if after is not None and after > snap.tick:  # no merge of a tick main has not reached dispatched this run
            raise UsageError(f"--after {after}: beyond the fleet's main, which is at tick {snap.tick}; --after names "
                             "the merged tick whose merge dispatched this run")
        world_mod.warm(snap)
        world_mod.load(cfg, snap.read)  # on Actions the plan job starts a tick: a world that cannot run stops here
        count = workers or cfg.run.workers
        if not 1 <= count <= 256:
            raise UsageError(f"--workers {count}: a tick has 1 to 256 workers (a GitHub matrix holds 256 jobs)")
        at = now()
        tick = snap.tick + 1
        spent = spending(repo, head, cfg, utc(at), tick=snap.tick)
        stop = (stopped or stop_switch({}, cfg)) if mode == "dispatched" else None
        due, _ = due_now(repo, cfg, tick, spent, at, by_hand=mode == "hand", stopped=stop, me=me)
        if after is not None and snap.tick > after and due.reason != "stopped":
            # the chain went on without this run (a scheduled run started tick after + 1, and dispatched its own next)
            due = replace(due, due=False, reason="superseded", next_due=None, late_seconds=None,
                          why=f"tick {after + 1}, the one this run was dispatched for after tick {after}, was started "
                              f"by another run (main is at tick {snap.tick}); that run's merge passes the chain on")
        if wait and not due.due and due.reason == "paced-out" and due.next_due is not None and cfg.run.every:
            pause = due.next_due - at + 0.05
            room = MAX_WAIT - waited
            if pause <= room + 1:
                say(f"{due.why}; waiting {format_duration(pause)} for it")
                sleep(pause)
                waited += pause
                continue
            if room >= RELAY_MIN:  # wait all a job may, then look again: the chain is passed on only when it must be
                say(f"{due.why}; waiting {format_duration(room)}, as long as a job may, then passing the chain on")
                sleep(room)
                waited += room
                continue
            relay_now = True
        break
    relayed: dict[str, Any] | None = None
    if relay_now:
        chain = after if after is not None else snap.tick
        if not start:
            due.why += (f"; it is more than {format_duration(MAX_WAIT)} away, as long as a job may wait "
                        "(a dry run passes no chain on)")
        elif Clock(repo).relay(chain, relay + 1, at, me):
            relayed = {"after": chain, "relay": relay + 1}
            due.why += (f"; it is more than {format_duration(MAX_WAIT)} away, as long as a job may wait, so this "
                        f"run passes the chain on (relay {relay + 1} after tick {chain})")
        else:
            due.why += ("; it is more than a job may wait, and another run of this chain passed the chain on "
                        "(or a tick was merged meanwhile): this run ends here")
    started = None
    if due.due and start:
        won, record = Clock(repo).start(tick, at, cfg, me, MODES[mode])
        if won:
            started = record.to_json() if record else None
        else:  # another run started this tick between our look and our push, or main moved on
            lost = decide(at, tick, cfg.run.every, due.last_start, record, me=me)
            due = lost if not lost.due else replace(
                due, due=False, reason="merged", next_due=None,
                why=f"tick {tick} is not started: main moved on meanwhile (another run merged it)")
    assignment = assign(roster(cfg.agents, agents), count)
    include = [{"worker": int(name[1:]), "name": name, "agents": len(a)} for name, a in assignment.items() if a]
    tasks: dict[str, Any] | None = None
    workers_of = [a for a in roster(cfg.agents, agents) if tick_tasks.task_tools(cfg, a)]
    if due.due and hand_out and workers_of:  # this step runs no model: it may claim for the agents that will
        out = tick_tasks.hand_out_now(repo, workers_of)
        tasks = {"claimed": out.claimed, "holding": out.holding, "idle": out.idle}
    return {
        "tick": tick,
        "main": head,
        "workers": count,
        "push": cfg.run.push_mode(count),
        "deadline_seconds": cfg.run.deadline_seconds,
        "matrix": {"include": include},
        "assignment": {k: v for k, v in assignment.items() if v},
        "agents": ",".join(agents) if agents else "",
        "tasks": tasks,
        **due.to_json(),
        "mode": MODES[mode],
        "waited_seconds": round(waited, 3),
        "start": started,
        "relay": relayed,
        # a field under the 'meaning' policy: the workflow runs the model's merge in a job with no write token
        "meanings": any(policy == "meaning" for policy in cfg.policies.values()),
        "budgets": spent.to_json(),
    }


def _summary(p: dict[str, Any]) -> None:
    """The plan's part of the run's job summary: due or not, how late it started, the day's budget."""
    day = p["budgets"]["day"]
    left = day["left"]
    spent_today = f"${day['cost_usd']:.4f}, {day['tokens']:,} tokens"
    limit = "cannot be counted" if left is None else ", ".join(
        x for x in (f"${left['usd']:.4f}" if left["usd"] is not None else "",
                    f"{left['tokens']:,} tokens" if left["tokens"] is not None else "") if x) or "no budget"
    late = format_duration(p["late_seconds"]) if p["late_seconds"] is not None else "-"
    title = f"fleet plan: tick {p['tick']} " + ("starts" if p["due"] else "is not started")
    summary.table(title, {"due": "yes" if p["due"] else "no", "how": p["mode"], "every": p["every"] or "no pace",
                          "slot": p["slot"] or "-", "started": p["at"], "late": late,
                          "next due": p["next_due"] or "-", "spent today": spent_today, "left today": limit},
                  [p["why"]])


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
@click.option("--start", is_flag=True,
              help="This plan starts the tick: record it on the fleet/clock branch (compare-and-swap), so that no "
                   "other run starts the same tick; exit 3 if another run did first.")
@click.option("--now", "by_hand", is_flag=True,
              help="A person asks for this tick now: run.every does not hold it back (budgets and a tick under "
                   "way still do).")
@click.option("--ticks", type=click.IntRange(1, 100000), default=None,
              help="Ticks the chain this run starts runs, this one included (the workflow's ticks input, which the "
                   "merge passes on); checked here, so that a bad value stops the run before any work.")
@click.option("--wait", is_flag=True,
              help="A run the last tick dispatched: wait until the tick is due (saying why; a tick further away than "
                   "a job may wait is passed on to a new run: see --relay), and "
                   "start nothing if the stop switch (FLEET_STOP, run.self_dispatch false) is on.")
@click.option("--after", type=click.IntRange(0, MAX_COUNT), default=None, metavar="N",
              help="With --wait: the tick whose merge dispatched this run; it starts tick N+1 or nothing.")
@click.option("--relay", type=click.IntRange(0, MAX_COUNT), default=0, metavar="N",
              help="With --wait: how many runs of this chain already waited as long as a job may (the workflow's "
                   "relay input); a tick still further away than that is passed on to run N+1.")
def plan_command(directory: Path, as_json: bool, remote: str | None, workers: int | None, agents: str | None,
                 matrix_only: bool, hand_out: bool, start: bool, by_hand: bool, ticks: int | None, wait: bool,
                 after: int | None, relay: int) -> None:
    """The workers and agents of the next tick, as JSON for a workflow's fromJSON.

    Says whether the tick is due (run.every, budgets.day and budgets.month, a
    tick another run started) and when the next one is; when it is not due it
    prints the same JSON with "due": false, writes nothing and exits 3."""
    if by_hand and wait:
        raise UsageError("--now and --wait: a run is started by hand or dispatched, not both")
    if after is not None and not wait:
        raise UsageError("--after names the tick that dispatched this run: it goes with --wait")
    if relay and not wait:
        raise UsageError("--relay counts the runs of a dispatched chain: it goes with --wait")
    mode = "hand" if by_hand else "dispatched" if wait else "schedule"
    try:
        p = plan(directory, workers=workers, remote=remote, agents=split(agents), hand_out=hand_out, start=start,
                 mode=mode, wait=wait, stopped=stop_switch() if wait else None, after=after, relay=relay)
    except UnknownAgents as e:
        raise UsageError(f"--agents: {e}") from None
    p["ticks"] = ticks
    _summary(p)
    if matrix_only:
        click.echo(json.dumps(p["matrix"], separators=(",", ":"), sort_keys=True))
    else:
        def text() -> None:
            click.echo(f"tick {p['tick']}: {len(p['matrix']['include'])} worker(s) with agents, push {p['push']}")
            for name, agents_ in p["assignment"].items():
                click.echo(f"  {name}: {', '.join(agents_)}")
            for agent, t in sorted((p["tasks"] or {}).get("claimed", {}).items()):
                click.echo(f"  {agent} works on task {t['id']} (fence {t['fence']}): {t['title']}")
            click.echo(p["why"])
            day, month = p["budgets"]["day"], p["budgets"]["month"]
            for name, period in (("today", day), ("this month", month)):
                if period["budget"] is not None:
                    unknown = (f" (tick {period['uncounted']} spent an unknown amount)"
                               if period["uncounted"] is not None else "")
                    click.echo(f"{name}: {period['said']} of {_limit(period['budget'])}{unknown}")

        emit(p, as_json, text)
    if not p["due"]:
        if as_json or matrix_only:  # the text above said why already
            click.echo(f"fleet: {p['why']}", err=True)
        sys.exit(EXIT_NOTHING)


def _limit(budget: dict[str, Any]) -> str:
    return " and ".join(x for x in (f"${budget['usd']:.2f}" if budget.get("usd") is not None else "",
                                    f"{budget['tokens']:,} tokens" if budget.get("tokens") is not None else "") if x)

