"""`fleet task ...`: the task queue (see fleet.tasks for how it is kept in git)."""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from fleet import canonical, keys, tasks
from fleet.cli import (
    dir_option,
    emit,
    flag_seconds,
    group_dir_option,
    json_option,
    read_file,
    read_stdin,
    remote_option,
)
from fleet.config import Config
from fleet.errors import FleetError, UsageError
from fleet.ids import printable
from fleet.progress import Progress
from fleet.repo import FleetRepo
from fleet.store import Change, now
from fleet.tasks import Queue, Step, Task, TaskQueue, parse_stamp, task_path

MAX_BATCH = 10_000  # tasks one `add --file` takes in one push
MAX_TASK_FILE = MAX_BATCH * 70_000  # bytes of an `add --file`: that many tasks, each with a long body
MAX_RESULT = 65_536  # bytes of a result, serialised: every claimer fetches the queue
MAX_CLAIM = 100  # tasks one `claim --count` takes in one push


_queues: dict[tuple[str, str | None, float], TaskQueue] = {}


def _queue(path: Path, remote: str | None) -> TaskQueue:
    """The queue of the fleet at ``path``: one per process and clone, so that an agent's
    loop of claims in one process finds the repository, its remote and what it has read
    already without asking git again (a clone whose git config changed is looked up anew)."""
    try:
        stamp = (Path(path) / ".git" / "config").stat().st_mtime
    except OSError:
        stamp = -1.0  # a worktree or a bare repository: its config is elsewhere
    key = (str(Path(path).absolute()), remote, stamp)
    tq = _queues.get(key)
    if tq is None:
        tq = _queues[key] = TaskQueue(FleetRepo(path, remote))
    return tq


def _agent(cfg: Config, agent: str, flag: str = "--as") -> None:
    """Refuse a name that may not claim tasks (``tasks.claimers``, or a tick agent): exit 2."""
    problem = tasks.claimer_problem(cfg, agent)
    if problem:
        raise UsageError(f"{flag}: {problem}")


def read_items(file: Path) -> list[tuple[Any, str]]:
    """Tasks from a .jsonl file (one object a line) or a .json array; each with where it came from.
    ``-``: standard input, read as .jsonl and bounded as a file is."""
    if str(file) == "-":
        data = read_stdin(MAX_TASK_FILE, "a task file").encode()
        file = Path("standard input")
    else:
        data = read_file(file, MAX_TASK_FILE, "a task file")
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
    """Add tasks in one commit and one push (``fleet.tasks.add`` decides)."""
    if len(items) > MAX_BATCH:
        raise UsageError(f"{items[0][1].rsplit(':', 1)[0]}: {len(items)} tasks in one add; at most {MAX_BATCH} a push")
    tq = _queue(path, remote)
    ch, pushed = tq.change(lambda q, cfg, at: tasks.add(q, cfg, at, items).change(), dry_run=dry_run)
    added: tasks.Added = ch.result
    return {"added": sorted(added.added), "existing": sorted(added.existing), "pushed": pushed, "remote": tq.repo.remote,
            "overlaps": [o.to_json() for o in added.overlaps]}


def _step(path: Path, remote: str | None, decide: Callable[[Queue, Config, _dt.datetime], Step], *,
          priority: bool = False, off_branch: bool = False) -> dict[str, Any]:
    """Commit the step ``decide`` takes on the queue (again on a lost race); the task as printed.
    ``priority``: a holder's change, which claims yield to (``BranchStore.change``);
    ``off_branch``: a claim, made on the task's claim ref (``TaskQueue.change``)."""
    ch, _ = _queue(path, remote).change(lambda q, cfg, at: decide(q, cfg, at).change(), priority=priority,
                                        off_branch=off_branch)
    step: Step = ch.result
    return public(step.task)


def claim(path: Path, agent: str, *, lease: float | None = None, remote: str | None = None,
          task_id: str | None = None) -> dict[str, Any]:
    """Claim the first ready task (or ``task_id``) for ``agent``; exit 3 if none is ready."""
    def decide(q: Queue, cfg: Config, at: _dt.datetime) -> Step:
        _agent(cfg, agent)
        return tasks.claim(q, cfg, at, agent, lease=lease, task_id=task_id, spread=True)

    return _step(path, remote, decide, off_branch=True)


def claim_many(path: Path, agent: str, count: int, *, lease: float | None = None,
               remote: str | None = None) -> list[dict[str, Any]]:
    """Claim up to ``count`` ready tasks for ``agent`` in one push (``fleet.tasks.claim_many``);
    exit 3 if none is ready."""
    def decide(q: Queue, cfg: Config, at: _dt.datetime) -> Change:
        _agent(cfg, agent)
        return tasks.claim_many(q, cfg, at, agent, count, lease=lease, spread=True).change()

    ch, _ = _queue(path, remote).change(decide, off_branch=True)
    claimed: tasks.Claimed = ch.result
    return [public(s.task) for s in claimed.steps]


def _checked(task_id: str, agent: str | None, flag: str,
             decide: Callable[[Queue, Config, _dt.datetime], Step]) -> Callable[[Queue, Config, _dt.datetime], Step]:
    """``decide``, once the task exists and ``flag`` names an agent of the config (in that order).
    Only for a claim or a sling: who may claim is asked when a task is handed out, never of
    a holder, who finishes or gives back what it holds by its fence whatever the config says now."""
    def checked(q: Queue, cfg: Config, at: _dt.datetime) -> Step:
        q.task(task_id)
        if agent is not None:
            _agent(cfg, agent, flag)
        return decide(q, cfg, at)
    return checked


def renew(path: Path, task_id: str, fence: int, *, agent: str | None = None, lease: float | None = None,
          remote: str | None = None) -> dict[str, Any]:
    """Extend the lease of the holder of ``fence``."""
    return _step(path, remote, lambda q, cfg, at: tasks.renew(
        q, cfg, at, task_id, fence, agent=agent, lease=lease), priority=True)


def complete(path: Path, task_id: str, fence: int, *, result: Any = None, agent: str | None = None,
             remote: str | None = None) -> dict[str, Any]:
    """Mark the task done with ``result``, for the holder of ``fence``."""
    text = canonical.dumps_line(result)
    keys.refuse(text.decode(), "--result")  # it would reach the queue masked: refused, not silently changed
    size = len(text)
    if size > MAX_RESULT:
        raise FleetError(f"--result: {size:,} bytes; a task's result is at most {MAX_RESULT:,} (put a big result "
                         "in the repository or an artifact, and record where)")
    return _step(path, remote, lambda q, cfg, at: tasks.complete(
        q, at, task_id, fence, result=result, agent=agent), priority=True)


def fail(path: Path, task_id: str, fence: int, *, reason: str, agent: str | None = None,
         remote: str | None = None) -> dict[str, Any]:
    """Give the task back as failed, for the holder of ``fence``."""
    return _step(path, remote, lambda q, cfg, at: tasks.fail(
        q, cfg, at, task_id, fence, reason=reason, agent=agent), priority=True)


def release(path: Path, task_id: str, fence: int, *, agent: str | None = None,
            remote: str | None = None) -> dict[str, Any]:
    """Give the task back unfinished, for the holder of ``fence``."""
    return _step(path, remote, lambda q, cfg, at: tasks.release(
        q, cfg, at, task_id, fence, agent=agent), priority=True)


def reopen(path: Path, task_id: str, *, remote: str | None = None) -> dict[str, Any]:
    """Give a failed task another go (``fleet.tasks.reopen``)."""
    return _step(path, remote, lambda q, cfg, at: tasks.reopen(q, at, task_id))


def sling(path: Path, task_id: str, agent: str | None, *, remote: str | None = None) -> dict[str, Any]:
    """Put a pending task on one agent's hook (or, with no agent, back on everyone's)."""
    return _step(path, remote, _checked(task_id, agent, "AGENT", lambda q, cfg, at: tasks.sling(q, at, task_id, agent)))


def public(t: Task, q: Queue | None = None, at: _dt.datetime | None = None,
           cfg: Config | None = None) -> dict[str, Any]:
    """A task as commands print it: the document plus what the queue (and the
    config: whether the one it is slung to may claim it) makes of it."""
    # "token", the fence's earlier name, is printed too until --token goes (deprecated)
    out = dict(t.to_json(), path=task_path(t.id), token=t.fence)
    if q is not None:
        out["blocked_by"] = q.blockers(t)
        out["stranded"] = tasks.stranded(cfg, t) if cfg is not None else None
        out["ready"] = q.is_ready(t, None, at or now()) and not out["stranded"]
        doom = q.doom(t) if t.status == "pending" else None
        out["doomed_by"] = doom.by if doom else None
        out["never_ready"] = doom.text(t.id) if doom else None
        out["wave"] = q.waves()[t.id]
        held = q.paths_held_by(t) if t.status == "pending" else None
        out["paths_held_by"] = held.by.id if held else None
    if t.status == "in-progress" and t.lease_until:
        out["expired"] = parse_stamp(t.lease_until) < (at or now())
    return out


def listing(path: Path, *, status: str | None = None, agent: str | None = None, ready_only: bool = False,
            wave: int | None = None, remote: str | None = None) -> dict[str, Any]:
    """Every task (or the ready ones, in claim order), each with its wave; ``wave``: only that wave."""
    q, cfg = _queue(path, remote).load()
    at = now()
    if ready_only:
        if agent is not None:
            _agent(cfg, agent)
        rows = [t for t in q.ready(agent, at) if not tasks.stranded(cfg, t)]
    else:
        rows = sorted(q.tasks.values(), key=lambda t: (t.status not in ("in-progress", "pending"), t.priority,
                                                     t.created_at, t.id))
        if status:
            rows = [t for t in rows if t.status == status]
        if agent:
            rows = [t for t in rows if agent in (t.claimed_by, t.for_)]
    if wave is not None:
        rows = [t for t in rows if q.waves()[t.id] == wave]
    out = {"tasks": [public(t, q, at, cfg) for t in rows], "counts": q.counts(), "tip": q.tip,
           "quarantined": [{"where": w, "reason": r} for w, r in q.quarantined]}
    if ready_only:  # and why the others that could be are not
        out["stranded"] = [{"id": t.id, "title": t.title, "for": t.for_, "why": why}
                           for t in q.ready(agent, at) if (why := tasks.stranded(cfg, t))
                           and (wave is None or q.waves()[t.id] == wave)]
        out["held_back"] = [dict(asdict(h.where), id=t.id, title=t.title, held_by=h.by.id, holder=h.by.claimed_by)
                            for t, h in q.held_back(agent, at) if wave is None or q.waves()[t.id] == wave]
    return out


def show(path: Path, task_id: str, *, remote: str | None = None) -> dict[str, Any]:
    """One task and its history: every commit that changed it, oldest first."""
    tq = _queue(path, remote)
    q, cfg = tq.load()
    t = public(q.task(task_id), q, cfg=cfg)
    # the branch's history of the task, and its claim the branch has not merged yet (on its claim ref)
    tips = [c for c in (q.tip, q.unfolded.get(task_id)) if c] or ["HEAD"]
    history = []
    for c in tq.git.commits("--reverse", "--date-order", *tips, "--", task_path(task_id)):  # any bytes a person wrote
        when = _dt.datetime.fromtimestamp(c.committed, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        history.append({"commit": c.sha, "at": when, "what": c.message.split("\n", 1)[0]})
    return dict(t, history=history)


# -- the command line --------------------------------------------------------
@click.group("task")
@group_dir_option
def task_command(directory: Path | None) -> None:
    """The task queue on the fleet/tasks branch: every change is a compare-and-swap push.

    claim hands out a fence (a fencing token); renew, complete, fail and release must name it.
    """
    for tq in _queues.values():  # what this command's reads leave unread, said once it is over
        tq.quarantined = []
    click.get_current_context().call_on_close(_say_quarantined)


def _say_quarantined() -> None:
    """One line (on stderr) per bad file the queue read past: named, left in place, not read."""
    for tq in _queues.values():
        for line in tasks.quarantine_lines(tq.quarantined):
            click.echo(line, err=True)
        tq.quarantined = []


def _task_line(t: dict[str, Any]) -> str:
    who = f" {printable(t['claimed_by'], 130)}" if t["claimed_by"] else ""
    extra = ""
    if t["status"] == "in-progress":
        extra = f" fence {t['fence']}, lease until {t['lease_until']}" + (" (EXPIRED)" if t.get("expired") else "")
    elif t["status"] == "pending" and t.get("never_ready"):
        extra = f" never ready: {t['never_ready']}"
    elif t["status"] == "pending" and t.get("blocked_by"):
        extra = f" waits for {', '.join(t['blocked_by'])}"
    elif t["status"] == "pending" and t.get("stranded"):
        extra = f"no claim takes it: {t['stranded']}"
    elif t["status"] == "pending" and t.get("paths_held_by"):
        extra = f" paths held by {t['paths_held_by']}"
    elif t["status"] == "pending" and t.get("not_before") and not t.get("ready"):
        extra = f" retry after {t['not_before']}"
    slung = f" for {printable(t['for'], 130)}" if t["for"] else ""
    return f"{t['id']:<14} P{t['priority']} W{t['wave']} {t['status']:<11}{who}{slung}  {t['title']}{'  [' + extra.strip() + ']' if extra else ''}"


def _shared_text(o: dict[str, Any]) -> str:
    """Where two tasks' paths meet, as fleet.overlap.Shared says it."""
    from fleet import overlap

    return str(overlap.Shared(o["mine"], o["theirs"], o["covers"]))


def _task_detail(t: dict[str, Any]) -> None:
    click.echo(f"{t['id']}: {t['title']}")
    click.echo(f"  status {t['status']}, priority {t['priority']}, fence {t['fence']}, attempts {t['attempts']}, "
               f"failures {t['failures']}")
    if t["claimed_by"]:
        click.echo(f"  claimed by {printable(t['claimed_by'], 130)} at {t['claimed_at']}" +
                   (f", lease until {t['lease_until']}" if t["lease_until"] else ""))
    if t["for"]:
        click.echo(f"  slung to {printable(t['for'], 130)}")
    if t["deps"]:
        click.echo(f"  deps: {', '.join(t['deps'])}")
    if t.get("paths"):
        click.echo(f"  paths: {', '.join(t['paths'])}")
    if t.get("error"):
        click.echo(f"  last error: {t['error']}")
    if t.get("body"):
        click.echo("")
        click.echo(t["body"])


MAX_FENCE = tasks.MAX_FENCE


def _fence_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--fence N``, the name the brief fixes ("token" means model tokens to
    anyone running LLM agents). ``--token N``, the earlier name, is accepted for
    one release with a note on stderr; the command sees ``fence`` either way."""
    @functools.wraps(fn)
    def wrapper(*args: Any, fence: int | None, old_token: int | None, **kwargs: Any) -> Any:
        if old_token is not None:
            click.echo("warning: --token is deprecated and goes away in the next release; use --fence", err=True)
            if fence is not None and fence != old_token:
                raise UsageError(f"--fence {fence} and --token {old_token} disagree; give --fence alone")
            fence = old_token
        if fence is None:
            raise UsageError("missing option --fence N: the fence that `fleet task claim` printed")
        return fn(*args, fence=fence, **kwargs)

    wrapper = click.option("--token", "old_token", type=click.IntRange(1, MAX_FENCE), default=None, hidden=True,
                           help="Deprecated: the earlier name of --fence.")(wrapper)
    return click.option("--fence", "fence", type=click.IntRange(1, MAX_FENCE), default=None, metavar="N",
                        help="The fence (fencing token) claim printed; a stale one is refused. [required]")(wrapper)


def _as_option(required: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    # (no default when required: click 8.2 and later take an explicit default=None as given)
    return click.option("--as", "agent", required=required, **({} if required else {"default": None}), metavar="AGENT",
                        help="The agent acting" + ("." if required else " (checked against the holder)."))


@task_command.command("add")
@dir_option
@json_option
@remote_option
@click.argument("title", required=False)
@click.option("--body", default=None, help="The whole task, for the agent that claims it.")
@click.option("--priority", type=click.IntRange(0, 4), default=None, help="0 most urgent … 4 (default 2).")
@click.option("--dep", "deps", multiple=True, help="A task that must be done first (repeatable).")
@click.option("--path", "paths", multiple=True, metavar="PATH",
              help="A file, folder or glob (src/*.py, docs/) of the code repository this task will touch "
                   "(repeatable). Tasks whose paths overlap are never in progress at once.")
@click.option("--for", "target", default=None, metavar="AGENT", help="Sling it to one agent from the start.")
@click.option("--id", "task_id", default=None, help="Choose the id (default: tk- and a short random suffix).")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Add every task in F.jsonl (one JSON object a line) in one push ('-': read them from "
                   "standard input).")
@click.option("--dry-run", is_flag=True, help="Check the tasks, push nothing.")
def task_add_cmd(directory: Path, as_json: bool, remote: str | None, title: str | None, body: str | None,
                 priority: int | None, deps: tuple[str, ...], paths: tuple[str, ...], target: str | None,
                 task_id: str | None, file: Path | None, dry_run: bool) -> None:
    """Add a task (TITLE), or many from --file, in one commit and one push."""
    if (title is None) == (file is None):
        raise UsageError("give a TITLE or --file F.jsonl (one of them)")
    if file is not None:
        if any(v is not None for v in (body, priority, target, task_id)) or deps or paths:
            raise UsageError("--file takes its fields from the file; --body, --priority, --dep, --path, --for and "
                             "--id are for a single TITLE")
        with Progress(f"task add: reading {file}", as_json=as_json):  # a spinner on a terminal: files can be big
            items = read_items(file if str(file) == "-" else _under(directory, file))
    else:
        item: dict[str, Any] = {"title": title}
        for k, v in (("body", body), ("priority", priority), ("for", target), ("id", task_id)):
            if v is not None:
                item[k] = v
        if deps:
            item["deps"] = list(deps)
        if paths:
            from fleet import overlap

            for p in paths:  # a bad flag is a usage error, found before anything is fetched
                try:
                    overlap.parse(p)
                except overlap.PathRule as e:
                    raise UsageError(f"--path {p[:60]!r}: {e}") from None
            item["paths"] = list(paths)
        items = [(item, "add")]
    with Progress(f"task add: checking and pushing {len(items)} task(s)", as_json=as_json or file is None):
        r = add(directory, items, remote=remote, dry_run=dry_run)

    def text() -> None:
        for i in r["added"]:
            click.echo(f"would add {i}" if dry_run else f"added {i}")
        for i in r["existing"]:
            click.echo(f"already there: {i}")
        for o in r["overlaps"]:
            click.echo(f"warning: {o['task']} shares paths with {o['with']} ({o['status']}): "
                       f"{_shared_text(o)}; they will not be in progress at once", err=True)
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
@click.option("--count", type=click.IntRange(1, MAX_CLAIM), default=None,
              help=f"Claim up to N ready tasks in one push (at most {MAX_CLAIM}); prints {{\"tasks\": [...]}}.")
def task_claim_cmd(directory: Path, as_json: bool, remote: str | None, agent: str, task_id: str | None,
                   lease: float | None, count: int | None) -> None:
    """Claim the first ready task for AGENT; exit 3 when nothing is ready.

    AGENT is a tick agent or a name tasks.claimers matches. A task whose paths
    overlap those of a task in progress is not handed out until that one is done.
    With --count N, up to N tasks in one push, each with its own fence.
    """
    lease = None if lease is None else flag_seconds("--lease", lease, low=1, high=604800)  # (a range lets NaN through)
    if count is not None:
        if task_id is not None:
            raise UsageError("--count: claims the first ready tasks; --task names one, give one or the other")
        got = claim_many(directory, agent, count, lease=lease, remote=remote)

        def many() -> None:
            for t in got:
                click.echo(f"claimed {t['id']} for {agent}: fence {t['fence']}, lease until {t['lease_until']}")

        emit({"tasks": got}, as_json, many)
        return
    t = claim(directory, agent, lease=lease, remote=remote, task_id=task_id)

    def text() -> None:
        click.echo(f"claimed {t['id']} for {agent}: fence {t['fence']}, lease until {t['lease_until']}")
        _task_detail(t)

    emit(t, as_json, text)


def _holder_command(verb: str, helptext: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__doc__ = helptext
        for deco in reversed((task_command.command(verb), dir_option, json_option, remote_option,
                              click.argument("task_id", metavar="TASK"), _fence_option, _as_option())):
            fn = deco(fn)
        return fn
    return wrap


@_holder_command("renew", "Extend the lease on TASK (do it at half the lease).")
@click.option("--lease", type=click.FloatRange(1, 604800), default=None, help="Seconds from now (default: config).")
def task_renew_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, fence: int,
                   agent: str | None, lease: float | None) -> None:
    lease = None if lease is None else flag_seconds("--lease", lease, low=1, high=604800)  # (a range lets NaN through)
    t = renew(directory, task_id, fence, agent=agent, lease=lease, remote=remote)
    emit(t, as_json, lambda: click.echo(f"renewed {t['id']}: fence {t['fence']}, lease until {t['lease_until']}"))


@_holder_command("complete", "Mark TASK done, with an optional JSON result.")
@click.option("--result", "result", default=None, help="The result, as JSON (a string is '\"text\"').")
@click.option("--result-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The result, from a JSON file.")
def task_complete_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, fence: int,
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
        value = canonical.load(read_file(result_file, MAX_RESULT, "a task's result"), str(result_file),
                               canonical.MAX_DEPTH)
    t = complete(directory, task_id, fence, result=value, agent=agent, remote=remote)
    emit(t, as_json, lambda: click.echo(f"done: {t['id']} by {t['claimed_by']} (fence {t['fence']})"))


@_holder_command("fail", "Give TASK back as failed: retried after a delay, or failed for good after max_failures.")
@click.option("--reason", required=True, help="What went wrong, for the next agent and for people.")
def task_fail_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, fence: int,
                  agent: str | None, reason: str) -> None:
    if len(reason) > tasks.MAX_REASON:  # kept whole or not at all: a reason cut short says something else
        raise UsageError(f"--reason: at most {tasks.MAX_REASON:,} characters ({len(reason):,} given)")
    keys.refuse(reason, "--reason")
    t = fail(directory, task_id, fence, reason=reason, agent=agent, remote=remote)
    after = f"ready again at {t['not_before']}" if t["status"] == "pending" else "failed for good: a person decides"
    emit(t, as_json, lambda: click.echo(f"failed: {t['id']} (failure {t['failures']}); {after}"))


@_holder_command("release", "Give TASK back unfinished, without counting a failure.")
def task_release_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, fence: int,
                     agent: str | None) -> None:
    t = release(directory, task_id, fence, agent=agent, remote=remote)
    emit(t, as_json, lambda: click.echo(f"released {t['id']}: pending again, ready at {t['not_before']}"))


@task_command.command("reopen")
@dir_option
@json_option
@remote_option
@click.argument("task_id", metavar="TASK")
def task_reopen_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str) -> None:
    """Give a failed TASK another go: pending again, failures forgiven, fence kept."""
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
        for h in r.get("stranded", []):
            click.echo(f"stranded: {h['id']} is {h['why']}; `fleet task sling {h['id']} AGENT` gives it to another",
                       err=True)
        for h in r.get("held_back", []):
            click.echo(f"held back: {h['id']} shares paths with {h['held_by']} (in progress, held by {printable(str(h['holder']), 130)}): "
                       f"{_shared_text(h)}", err=True)
        c = r["counts"]
        click.echo(", ".join(f"{n} {s}" for s, n in c.items()), err=True)

    emit(r, as_json, text)


# a wave is at most the number of tasks; beyond any queue's size it is a typo
_wave_option = click.option("--wave", type=click.IntRange(0, 1_000_000), default=None, metavar="N",
                            help="Only tasks of wave N: 0 has no deps, N waits for tasks of lower waves only.")


@task_command.command("ready")
@dir_option
@json_option
@remote_option
@_as_option()
@_wave_option
def task_ready_cmd(directory: Path, as_json: bool, remote: str | None, agent: str | None, wave: int | None) -> None:
    """Tasks that can be claimed now (for AGENT: including those slung to it), in claim order.

    Tasks held back only because a task in progress shares their paths are named
    on stderr, with the task that holds them ("held_back" in --json).
    """
    _task_list(directory, as_json, remote, agent=agent, ready_only=True, wave=wave)


@task_command.command("list")
@dir_option
@json_option
@remote_option
@click.option("--status", type=click.Choice(["pending", "in-progress", "done", "failed"]), default=None)
@click.option("--agent", default=None, help="Only tasks held by, done by or slung to this agent.")
@_wave_option
def task_list_cmd(directory: Path, as_json: bool, remote: str | None, status: str | None, agent: str | None,
                  wave: int | None) -> None:
    """Every task with its wave (W0: no deps; else one more than its deps' highest): open ones first, by priority and age."""
    if agent is not None and not agent:
        raise UsageError("--agent: an empty name matches no agent; leave --agent out to list every task")
    _task_list(directory, as_json, remote, status=status, agent=agent, wave=wave)


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


@task_command.command("hand-out")
@dir_option
@json_option
@remote_option
def task_hand_out_cmd(directory: Path, as_json: bool, remote: str | None) -> None:
    """Claim a ready task for each agent whose actions name complete_task or
    fail_task and that holds none: the step before a tick's workers, which run
    the model and hold no credential (fleet.tick_tasks)."""
    from fleet import tick_tasks

    out = tick_tasks.hand_out_now(FleetRepo(directory, remote))

    def text() -> None:
        for agent, t in sorted(out.claimed.items()):
            click.echo(f"{agent}: claimed {t['id']} (fence {t['fence']}): {t['title']}")
        for agent, t in sorted(out.holding.items()):
            click.echo(f"{agent}: still holds {t['id']} (fence {t['fence']})")
        for agent, why in sorted(out.idle.items()):
            click.echo(f"{agent}: no task ({why})")
        if not (out.claimed or out.holding or out.idle):
            click.echo("no agent has task tools (complete_task or fail_task in its actions)")

    emit({"claimed": out.claimed, "holding": out.holding, "idle": out.idle}, as_json, text)
