"""`fleet task ...`: the task queue (see fleet.tasks for how it is kept in git)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from fleet import canonical
from fleet.cli import dir_option, emit, group_dir_option, json_option, remote_option
from fleet.config import Config
from fleet.errors import FleetError, NothingToDo, UsageError
from fleet.ids import printable
from fleet.repo import FleetRepo
from fleet.tasks import (
    BRANCH,
    MISSING,
    Change,
    Queue,
    Task,
    TaskQueue,
    cycle,
    holder_check,
    new_task,
    new_task_id,
    now,
    parse_stamp,
    public,
    returned,
    stamp,
    task_path,
)

MAX_BATCH = 10_000  # tasks one `add --file` takes in one push
MAX_RESULT = 65_536  # bytes of a result, serialised: every claimer fetches the queue


def _queue(path: Path, remote: str | None) -> TaskQueue:
    return TaskQueue(FleetRepo(path, remote))


def _agent(cfg: Config, agent: str, flag: str = "--as") -> None:
    if agent not in cfg.agents:
        known = ", ".join(sorted(cfg.agents)[:8])
        raise UsageError(f"{flag} {agent}: unknown agent (state/config.json has {known}{', …' if len(cfg.agents) > 8 else ''})")


def read_items(file: Path) -> list[tuple[Any, str]]:
    """Tasks from a .jsonl file (one object a line) or a .json array; each with where it came from."""
    try:
        data = file.read_bytes()
    except OSError as e:
        raise FleetError(f"{file}: cannot read: {e.strerror}") from None
    if file.suffix == ".json":
        items = canonical.load(data, str(file), canonical.MAX_DEPTH)
        if not isinstance(items, list):
            raise FleetError(f"{file}: a .json task file must hold an array of tasks (or use .jsonl, one a line)")
        if not items:
            raise FleetError(f"{file}: no tasks in the file (an empty array)")
        return [(it, f"{file}[{i}]") for i, it in enumerate(items)]
    out = []
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            out.append((canonical.load(line, f"{file}:{n}", canonical.MAX_DEPTH), f"{file}:{n}"))
    if not out:
        raise FleetError(f"{file}: no tasks in the file (one JSON object a line)")
    return out


def add(path: Path, items: list[tuple[Any, str]], *, remote: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Add tasks in one commit and one push. A task whose id exists with the
    same content is already there (a rerun); with other content it is an error."""
    if len(items) > MAX_BATCH:
        raise UsageError(f"{items[0][1].rsplit(':', 1)[0]}: {len(items)} tasks in one add; at most {MAX_BATCH} a push")
    tq = _queue(path, remote)

    def decide(q: Queue, cfg: Config, at: _dt.datetime) -> Change:
        fresh: dict[str, Task] = {}
        origin: dict[str, str] = {}
        same: list[str] = []
        for item, where in items:
            t = new_task(item, where, cfg, at)
            if t.id:
                if t.id in fresh:
                    raise FleetError(f"{where}: task id {t.id!r} appears twice in this batch "
                                     f"(first at {origin[t.id]})")
                old = q.tasks.get(t.id)
                if old is not None:
                    # what was given at creation; `for` may have been slung since
                    if (old.title, old.body, old.priority, old.deps) != (t.title, t.body, t.priority, t.deps):
                        raise FleetError(f"{where}: task id {t.id!r} already exists with other content "
                                         f"({BRANCH}:{task_path(t.id)}); pick another id")
                    same.append(t.id)
                    continue
            else:
                while not t.id or t.id in q.tasks or t.id in fresh:
                    t = replace(t, id=new_task_id(len(q.tasks) + len(fresh) + len(items)))
            fresh[t.id] = t
            origin[t.id] = where
        everything = {**q.tasks, **fresh}
        for t in fresh.values():
            unknown = [d for d in t.deps if d not in everything]
            if unknown:
                raise FleetError(f"{origin[t.id]}: deps: no task {unknown[0]!r} in the queue or this batch")
            failed = [d for d in t.deps if everything[d].status == "failed"]
            if failed:
                raise FleetError(f"{origin[t.id]}: deps: task {failed[0]!r} has failed, so this one could never "
                                 f"be ready; `fleet task reopen {failed[0]}` first")
        loop = cycle(everything, list(fresh))
        if loop:
            raise FleetError(f"deps: a cycle would never be ready: {' -> '.join(loop)}")
        result = {"added": sorted(fresh), "existing": sorted(same)}
        if not fresh:
            return Change([], result)
        titles = [printable(t.title) for t in fresh.values()]
        subject = f"add {next(iter(fresh))}: {titles[0]}" if len(fresh) == 1 else f"add {len(fresh)} tasks"
        body = "\n".join(f"- {i}: {title}" for i, title in zip(fresh, titles, strict=True)) if len(fresh) > 1 else ""
        message = f"task {subject}\n\n{body}".strip() + "\n"
        return Change([(message, {task_path(i): t.to_json() for i, t in fresh.items()})], result)

    ch, pushed = tq.change(decide, dry_run=dry_run)
    return dict(ch.result, pushed=pushed, remote=tq.repo.remote)


def claim(path: Path, agent: str, *, lease: float | None = None, remote: str | None = None,
          task_id: str | None = None) -> dict[str, Any]:
    """Claim the first ready task (or ``task_id``) for ``agent``; exit 3 if none is ready."""
    tq = _queue(path, remote)

    def decide(q: Queue, cfg: Config, at: _dt.datetime) -> Change:
        _agent(cfg, agent)
        seconds = lease if lease is not None else cfg.tasks.lease_seconds
        if task_id is not None:
            t = q.task(task_id)
            if not q.is_ready(t, agent, at):
                doomed = q.doomed_by(t) if t.status == "pending" else None
                if t.status in ("done", "failed") or doomed:
                    # waiting cannot help: say so and fail, so a polling loop stops
                    why = (f"task {task_id} waits for {doomed}, which has failed; `fleet task reopen {doomed}` "
                           "gives it another go" if doomed else _why_not_ready(q, t, agent, at))
                    raise FleetError(f"cannot claim: {why}")
                raise NothingToDo(_why_not_ready(q, t, agent, at))
        else:
            ready = q.ready(agent, at)
            if not ready:
                waits = sorted(t.not_before for t in q.tasks.values() if t.status == "pending"
                               and t.not_before and t.for_ in (None, agent) and not q.blockers(t))
                soon = f"; the next is ready at {waits[0]}" if waits else ""
                raise NothingToDo(f"no task is ready for {agent} ({_summary(q)}){soon}")
            t = ready[0]
        t = replace(t, status="in-progress", token=t.token + 1, attempts=t.attempts + 1, claimed_by=agent,
                    claimed_at=stamp(at), lease_until=stamp(at + _dt.timedelta(seconds=seconds)),
                    updated_at=stamp(at), not_before=None)
        msg = (f"task claim {t.id} by {agent} (token {t.token})\n\n"
               f"{printable(t.title)}\nLease until {t.lease_until}; attempt {t.attempts}.\n\nFleet-Agent: {agent}\n")
        return Change([(msg, {task_path(t.id): t.to_json()})], t)

    ch, _ = tq.change(decide)
    return public(ch.result)


def _summary(q: Queue) -> str:
    c = q.counts()
    return ", ".join(f"{n} {s}" for s, n in c.items() if n) or "the queue is empty"


def _why_not_ready(q: Queue, t: Task, agent: str, at: _dt.datetime) -> str:
    if t.status != "pending":
        by = {"in-progress": f", held by {t.claimed_by}", "done": f", done by {t.claimed_by}",
              "failed": f" after {t.failures} failures (`fleet task reopen {t.id}`)"}[t.status]
        return f"task {t.id} is {t.status}{by}"
    if t.for_ not in (None, agent):
        return f"task {t.id} is slung to {t.for_}"
    if t.not_before and parse_stamp(t.not_before) > at:
        return f"task {t.id} waits until {t.not_before} after its last failure"
    return f"task {t.id} waits for {', '.join(q.blockers(t))}"


def _holder_change(path: Path, remote: str | None, task_id: str, token: int, agent: str | None, verb: str,
                   apply: Any) -> dict[str, Any]:
    tq = _queue(path, remote)

    def decide(q: Queue, cfg: Config, at: _dt.datetime) -> Change:
        t = q.task(task_id)
        if agent is not None:
            _agent(cfg, agent)
        done = apply(t, cfg, at, True)
        if done is not None:  # the same call again: already recorded
            return Change([], done)
        holder_check(t, token, agent, verb)
        new, line = apply(t, cfg, at, False)
        new = replace(new, updated_at=stamp(at))
        msg = f"task {verb} {t.id} by {t.claimed_by} (token {token}){line}\n\nFleet-Agent: {t.claimed_by}\n"
        return Change([(msg, {task_path(t.id): new.to_json()})], new)

    ch, _ = tq.change(decide)
    return public(ch.result)


def renew(path: Path, task_id: str, token: int, *, agent: str | None = None, lease: float | None = None,
          remote: str | None = None) -> dict[str, Any]:
    def apply(t: Task, cfg: Config, at: _dt.datetime, probe: bool) -> Any:
        if probe:
            return None
        until = stamp(at + _dt.timedelta(seconds=lease if lease is not None else cfg.tasks.lease_seconds))
        return replace(t, lease_until=until), f"\n\nLease until {until}."

    return _holder_change(path, remote, task_id, token, agent, "renew", apply)


def complete(path: Path, task_id: str, token: int, *, result: Any = None, agent: str | None = None,
             remote: str | None = None) -> dict[str, Any]:
    def apply(t: Task, cfg: Config, at: _dt.datetime, probe: bool) -> Any:
        if probe:
            if t.status == "done" and t.token == token and (None if t.result is MISSING else t.result) == result:
                return t  # a retried complete: the first one landed
            return None
        return replace(t, status="done", result=result, lease_until=None, done_at=stamp(at), error=None), ""

    size = len(canonical.dumps_line(result))
    if size > MAX_RESULT:
        raise FleetError(f"--result: {size:,} bytes; a task's result is at most {MAX_RESULT:,} (put a big result "
                         "in the repository or an artifact, and record where)")

    return _holder_change(path, remote, task_id, token, agent, "complete", apply)


def fail(path: Path, task_id: str, token: int, *, reason: str, agent: str | None = None,
         remote: str | None = None) -> dict[str, Any]:
    reason = reason.strip() or "no reason given"

    def apply(t: Task, cfg: Config, at: _dt.datetime, probe: bool) -> Any:
        if probe:
            return None
        return returned(t, cfg, at, reason[:4000])

    return _holder_change(path, remote, task_id, token, agent, "fail", apply)


def release(path: Path, task_id: str, token: int, *, agent: str | None = None,
            remote: str | None = None) -> dict[str, Any]:
    def apply(t: Task, cfg: Config, at: _dt.datetime, probe: bool) -> Any:
        if probe:
            return None
        return replace(t, status="pending", claimed_by=None, claimed_at=None, lease_until=None), "\n\nGiven back unfinished."

    return _holder_change(path, remote, task_id, token, agent, "release", apply)


def reopen(path: Path, task_id: str, *, remote: str | None = None) -> dict[str, Any]:
    """Give a failed task another go: pending again, its failures forgiven.
    Its token stays, so the next claim gets a higher one."""
    tq = _queue(path, remote)

    def decide(q: Queue, cfg: Config, at: _dt.datetime) -> Change:
        t = q.task(task_id)
        if t.status != "failed":
            raise FleetError(f"cannot reopen task {task_id}: it is {t.status}; only a failed task is reopened")
        new = replace(t, status="pending", failures=0, claimed_by=None, claimed_at=None, lease_until=None,
                      not_before=None, updated_at=stamp(at))
        msg = f"task reopen {task_id} after {t.failures} failures\n\nLast error: {printable((None if t.error is MISSING else t.error) or 'none recorded', 2000)}\n"
        return Change([(msg, {task_path(task_id): new.to_json()})], new)

    ch, _ = tq.change(decide)
    return public(ch.result)


def sling(path: Path, task_id: str, agent: str | None, *, remote: str | None = None) -> dict[str, Any]:
    """Put a pending task on one agent's hook (or, with no agent, back on everyone's)."""
    tq = _queue(path, remote)

    def decide(q: Queue, cfg: Config, at: _dt.datetime) -> Change:
        t = q.task(task_id)
        if agent is not None:
            _agent(cfg, agent, "AGENT")
        if t.for_ == agent:
            return Change([], t)
        if t.status != "pending":
            raise FleetError(f"cannot sling task {task_id}: it is {t.status}; only a pending task can be slung")
        new = replace(t, updated_at=stamp(at), for_=agent)
        msg = f"task sling {task_id} to {agent}\n" if agent else f"task unsling {task_id}: anyone may claim it\n"
        return Change([(msg, {task_path(task_id): new.to_json()})], new)

    ch, _ = tq.change(decide)
    return public(ch.result)


def listing(path: Path, *, status: str | None = None, agent: str | None = None, ready_only: bool = False,
            remote: str | None = None) -> dict[str, Any]:
    q, cfg = _queue(path, remote).load()
    at = now()
    if ready_only:
        if agent is not None:
            _agent(cfg, agent)
        rows = q.ready(agent, at)
    else:
        rows = sorted(q.tasks.values(), key=lambda t: (t.status not in ("in-progress", "pending"), t.priority,
                                                     t.created_at, t.id))
        if status:
            rows = [t for t in rows if t.status == status]
        if agent:
            rows = [t for t in rows if agent in (t.claimed_by, t.for_)]
    return {"tasks": [public(t, q, at) for t in rows], "counts": q.counts(), "tip": q.tip}


def show(path: Path, task_id: str, *, remote: str | None = None) -> dict[str, Any]:
    """One task and its history: every commit that changed it, oldest first."""
    tq = _queue(path, remote)
    q, _ = tq.load()
    t = public(q.task(task_id), q)
    out = tq.git.run("log", "--reverse", "--format=%H%x00%cI%x00%s%x1e", q.tip or "HEAD", "--", task_path(task_id))
    history = []
    for rec in out.decode().split("\x1e"):
        rec = rec.strip("\n")
        if rec:
            sha, when, subject = rec.split("\x00")
            history.append({"commit": sha, "at": when, "what": subject})
    return dict(t, history=history)


# -- the command line --------------------------------------------------------
@click.group("task")
@group_dir_option
def task_command(directory: Path | None) -> None:
    """The task queue on the fleet/tasks branch: every change is a compare-and-swap push.

    claim hands out a fencing token; renew, complete, fail and release must name it.
    """


def _task_line(t: dict[str, Any]) -> str:
    who = f" {t['claimedBy']}" if t["claimedBy"] else ""
    extra = ""
    if t["status"] == "in-progress":
        extra = f" token {t['token']}, lease until {t['leaseUntil']}" + (" (EXPIRED)" if t.get("expired") else "")
    elif t["status"] == "pending" and t.get("doomedBy"):
        extra = f" never ready: {t['doomedBy']} failed"
    elif t["status"] == "pending" and t.get("blockedBy"):
        extra = f" waits for {', '.join(t['blockedBy'])}"
    elif t["status"] == "pending" and t.get("notBefore") and not t.get("ready"):
        extra = f" retry after {t['notBefore']}"
    slung = f" for {t['for']}" if t["for"] else ""
    return f"{t['id']:<14} P{t['priority']} {t['status']:<11}{who}{slung}  {t['title']}{'  [' + extra.strip() + ']' if extra else ''}"


def _task_detail(t: dict[str, Any]) -> None:
    click.echo(f"{t['id']}: {t['title']}")
    click.echo(f"  status {t['status']}, priority {t['priority']}, token {t['token']}, attempts {t['attempts']}, "
               f"failures {t['failures']}")
    if t["claimedBy"]:
        click.echo(f"  claimed by {t['claimedBy']} at {t['claimedAt']}" +
                   (f", lease until {t['leaseUntil']}" if t["leaseUntil"] else ""))
    if t["for"]:
        click.echo(f"  slung to {t['for']}")
    if t["deps"]:
        click.echo(f"  deps: {', '.join(t['deps'])}")
    if t.get("error"):
        click.echo(f"  last error: {t['error']}")
    if t.get("body"):
        click.echo("")
        click.echo(t["body"])


def _token_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--token", type=click.IntRange(1), required=True,
                        help="The fencing token claim printed; a stale one is refused.")(fn)


def _as_option(required: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--as", "agent", required=required, default=None, metavar="AGENT",
                        help="The agent acting" + ("." if required else " (checked against the holder)."))


@task_command.command("add")
@dir_option
@json_option
@remote_option
@click.argument("title", required=False)
@click.option("--body", default=None, help="The whole task, for the agent that claims it.")
@click.option("--priority", type=click.IntRange(0, 4), default=None, help="0 most urgent … 4 (default 2).")
@click.option("--dep", "deps", multiple=True, help="A task that must be done first (repeatable).")
@click.option("--for", "target", default=None, metavar="AGENT", help="Sling it to one agent from the start.")
@click.option("--id", "task_id", default=None, help="Choose the id (default: tk- and a short random suffix).")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Add every task in F.jsonl (one JSON object a line) in one push.")
@click.option("--dry-run", is_flag=True, help="Check the tasks, push nothing.")
def task_add_cmd(directory: Path, as_json: bool, remote: str | None, title: str | None, body: str | None,
                 priority: int | None, deps: tuple[str, ...], target: str | None, task_id: str | None,
                 file: Path | None, dry_run: bool) -> None:
    """Add a task (TITLE), or many from --file, in one commit and one push."""
    if (title is None) == (file is None):
        raise UsageError("give a TITLE or --file F.jsonl (one of them)")
    if file is not None:
        if any(v is not None for v in (body, priority, target, task_id)) or deps:
            raise UsageError("--file takes its fields from the file; --body, --priority, --dep, --for and --id "
                             "are for a single TITLE")
        items = read_items(_under(directory, file))
    else:
        item: dict[str, Any] = {"title": title}
        for k, v in (("body", body), ("priority", priority), ("for", target), ("id", task_id)):
            if v is not None:
                item[k] = v
        if deps:
            item["deps"] = list(deps)
        items = [(item, "add")]
    r = add(directory, items, remote=remote, dry_run=dry_run)

    def text() -> None:
        for i in r["added"]:
            click.echo(f"added {i}")
        for i in r["existing"]:
            click.echo(f"already there: {i}")
        if r["added"]:
            click.echo(f"dry run: {len(r['added'])} task(s) checked, nothing pushed" if dry_run
                       else f"pushed {len(r['added'])} task(s) to {r['remote'] or 'this repository'}")

    emit(r, as_json, text)


@task_command.command("claim")
@dir_option
@json_option
@remote_option
@_as_option(required=True)
@click.option("--task", "task_id", default=None, help="Claim this task rather than the first ready one.")
@click.option("--lease", type=click.FloatRange(1, 604800), default=None,
              help="Seconds the claim holds (default: tasks.lease_seconds in config); renew at half.")
def task_claim_cmd(directory: Path, as_json: bool, remote: str | None, agent: str, task_id: str | None,
                   lease: float | None) -> None:
    """Claim the first ready task for AGENT; exit 3 when nothing is ready."""
    t = claim(directory, agent, lease=lease, remote=remote, task_id=task_id)

    def text() -> None:
        click.echo(f"claimed {t['id']} for {agent}: token {t['token']}, lease until {t['leaseUntil']}")
        _task_detail(t)

    emit(t, as_json, text)


def _holder_command(verb: str, helptext: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__doc__ = helptext
        for deco in reversed((task_command.command(verb), dir_option, json_option, remote_option,
                              click.argument("task_id", metavar="TASK"), _token_option, _as_option())):
            fn = deco(fn)
        return fn
    return wrap


@_holder_command("renew", "Extend the lease on TASK (do it at half the lease).")
@click.option("--lease", type=click.FloatRange(1, 604800), default=None, help="Seconds from now (default: config).")
def task_renew_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, token: int,
                   agent: str | None, lease: float | None) -> None:
    t = renew(directory, task_id, token, agent=agent, lease=lease, remote=remote)
    emit(t, as_json, lambda: click.echo(f"renewed {t['id']}: token {t['token']}, lease until {t['leaseUntil']}"))


@_holder_command("complete", "Mark TASK done, with an optional JSON result.")
@click.option("--result", "result", default=None, help="The result, as JSON (a string is '\"text\"').")
@click.option("--result-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The result, from a JSON file.")
def task_complete_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, token: int,
                      agent: str | None, result: str | None, result_file: Path | None) -> None:
    value = None
    if result is not None and result_file is not None:
        raise UsageError("give --result or --result-file, not both")
    if result is not None:
        try:
            value = canonical.load(result.encode(), "--result", canonical.MAX_DEPTH)
        except FleetError as e:
            raise UsageError(f"{e} (a string is given as '\"text\"')") from None
    elif result_file is not None:
        result_file = _under(directory, result_file)
        try:
            value = canonical.load(result_file.read_bytes(), str(result_file), canonical.MAX_DEPTH)
        except OSError as e:
            raise FleetError(f"{result_file}: cannot read: {e.strerror}") from None
    t = complete(directory, task_id, token, result=value, agent=agent, remote=remote)
    emit(t, as_json, lambda: click.echo(f"done: {t['id']} by {t['claimedBy']} (token {t['token']})"))


@_holder_command("fail", "Give TASK back as failed: retried after a delay, or failed for good after max_failures.")
@click.option("--reason", required=True, help="What went wrong, for the next agent and for people.")
def task_fail_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, token: int,
                  agent: str | None, reason: str) -> None:
    t = fail(directory, task_id, token, reason=reason, agent=agent, remote=remote)
    after = f"ready again at {t['notBefore']}" if t["status"] == "pending" else "failed for good: a person decides"
    emit(t, as_json, lambda: click.echo(f"failed: {t['id']} (failure {t['failures']}); {after}"))


@_holder_command("release", "Give TASK back unfinished, without counting a failure.")
def task_release_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, token: int,
                     agent: str | None) -> None:
    t = release(directory, task_id, token, agent=agent, remote=remote)
    emit(t, as_json, lambda: click.echo(f"released {t['id']}: pending again"))


@task_command.command("reopen")
@dir_option
@json_option
@remote_option
@click.argument("task_id", metavar="TASK")
def task_reopen_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str) -> None:
    """Give a failed TASK another go: pending again, failures forgiven, token kept."""
    t = reopen(directory, task_id, remote=remote)
    emit(t, as_json, lambda: click.echo(f"reopened {t['id']}: pending again"))


def _under(directory: Path, file: Path) -> Path:
    """A relative path given with -C DIR is relative to DIR, as with git -C."""
    return file if file.is_absolute() else directory / file


@task_command.command("sling")
@dir_option
@json_option
@remote_option
@click.argument("task_id", metavar="TASK")
@click.argument("agent", metavar="AGENT", required=False)
def task_sling_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, agent: str | None) -> None:
    """Put pending TASK on AGENT's hook: only AGENT may claim it (no AGENT: anyone again)."""
    t = sling(directory, task_id, agent, remote=remote)
    emit(t, as_json, lambda: click.echo(f"{t['id']} is slung to {agent}" if agent else f"{t['id']} is anyone's"))


def _task_list(directory: Path, as_json: bool, remote: str | None, **kw: Any) -> None:
    r = listing(directory, remote=remote, **kw)

    def text() -> None:
        if not r["tasks"]:
            click.echo("no task is ready" if kw.get("ready_only") else "no tasks")
        for t in r["tasks"]:
            click.echo(_task_line(t))
        c = r["counts"]
        click.echo(", ".join(f"{n} {s}" for s, n in c.items()), err=True)

    emit(r, as_json, text)


@task_command.command("ready")
@dir_option
@json_option
@remote_option
@_as_option()
def task_ready_cmd(directory: Path, as_json: bool, remote: str | None, agent: str | None) -> None:
    """Tasks that can be claimed now (for AGENT: including those slung to it), in claim order."""
    _task_list(directory, as_json, remote, agent=agent, ready_only=True)


@task_command.command("list")
@dir_option
@json_option
@remote_option
@click.option("--status", type=click.Choice(["pending", "in-progress", "done", "failed"]), default=None)
@click.option("--agent", default=None, help="Only tasks held by, done by or slung to this agent.")
def task_list_cmd(directory: Path, as_json: bool, remote: str | None, status: str | None, agent: str | None) -> None:
    """Every task: open ones first, by priority and age."""
    _task_list(directory, as_json, remote, status=status, agent=agent)


@task_command.command("show")
@dir_option
@json_option
@remote_option
@click.argument("task_id", metavar="TASK")
def task_show_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str) -> None:
    """One task and its history: every commit that changed it."""
    t = show(directory, task_id, remote=remote)

    def text() -> None:
        _task_detail(t)
        click.echo("")
        click.echo("history:")
        for h in t["history"]:
            click.echo(f"  {h['at']}  {h['commit'][:10]}  {h['what']}")

    emit(t, as_json, text)
