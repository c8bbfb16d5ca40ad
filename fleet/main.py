"""The `fleet` command line: parses arguments and dispatches, nothing else.

Exit codes: 0 success, 1 a failure the message explains, 2 a usage error,
3 nothing to do. An unexpected error prints one line and writes the
traceback to a log file; a traceback is never the interface.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from fleet import __version__
from fleet.errors import EXIT_FAILURE, EXIT_NOTHING, FleetError
from fleet import summary
from fleet.secrets import redact

def _inherit_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    """`fleet -C DIR status` and `fleet status -C DIR` both work, as with git."""
    if value is not None:
        return value
    parent = ctx.parent
    while parent is not None:  # `fleet -C DIR task add` and `fleet task -C DIR add`
        if parent.params.get("directory") is not None:
            return parent.params["directory"]
        parent = parent.parent
    return Path(".")


_dir_option = click.option(
    "-C", "directory", type=click.Path(file_okay=False, path_type=Path), default=None, callback=_inherit_dir,
    help="Run as if fleet was started in DIR (the fleet repository).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
_remote_option = click.option(
    "--remote", default=None, metavar="NAME",
    help="Where the fleet's main lives: a remote name, URL or path (default: git config fleet.remote, "
         "which fleet run sets, else origin, else this repository).",
)


def _log_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleet"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        import tempfile

        base = Path(tempfile.gettempdir())
    return base / "fleet.log"


def _handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn FleetError into one line and an exit code; anything else into a log file."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FleetError as e:
            message = redact(str(e))
            click.echo(f"fleet: {message}", err=True)
            if kwargs.get("as_json"):  # scripts reading --json get JSON on every exit
                click.echo(json.dumps({"error": message, "exit": e.code}))
            sys.exit(e.code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("fleet: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # `fleet log | head`: the reader left; leave quietly, as git does
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)
        except Exception as e:  # a bug: short message, traceback to a file
            import traceback

            log = _log_file()
            try:
                with log.open("a") as f:
                    f.write(redact(f"fleet {__version__}: {' '.join(sys.argv)}\n{traceback.format_exc()}\n"))
                where = f"; traceback in {log}"
            except OSError:
                where = ""
            click.echo(f"fleet: internal error: {type(e).__name__}: {redact(str(e))}{where}", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper


def _emit(data: Any, as_json: bool, text: Callable[[], None]) -> None:
    if as_json:
        click.echo(redact(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)))
    else:
        text()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleet")
@click.option("-C", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run as if fleet was started in DIR (the fleet repository).")
def cli(directory: Path | None) -> None:
    """Run fleets of LLM agents with git as the only coordination layer.

    Exit codes: 0 success, 1 failure (the message says why), 2 usage error,
    3 nothing to do.
    """


@cli.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_json_option
@_handled
def init_cmd(directory: Path, as_json: bool) -> None:
    """Create a new fleet repository in DIRECTORY with the example world."""
    from fleet.commands.init import init

    sha = init(directory)

    def text() -> None:
        click.echo(f"created fleet repository {directory} (genesis {sha[:12]}, tick 0)")
        click.echo(f"next: cd {directory} && fleet run")

    _emit({"path": str(directory.resolve()), "genesis": sha, "tick": 0}, as_json, text)


@cli.command("merge")
@_dir_option
@_json_option
@_remote_option
@click.option("--tick", type=int, default=None, help="Merge only if this is the next tick.")
@click.option("--inbox", "inbox", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Also take delta files from this folder (repeatable); they are removed once merged.")
@click.option("--dry-run", is_flag=True, help="Decide and build the commit, but publish nothing.")
@click.option("--allow-empty", is_flag=True, help="Advance the tick even with no deltas.")
@click.option("--github", "use_github", is_flag=True,
              help="Open or update a pull request per held conflict, and apply the fallback of closed ones "
                   "(GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_TOKEN).")
@_handled
def merge_cmd(directory: Path, as_json: bool, remote: str | None, tick: int | None,
              inbox: tuple[Path, ...], dry_run: bool, allow_empty: bool, use_github: bool) -> None:
    """Apply pending deltas to main: validate, commit one tick, publish."""
    from fleet.commands.merge import merge
    from fleet.github import GitHubSettings

    settings = GitHubSettings.from_env() if use_github else None
    r = merge(directory, tick=tick, inbox=inbox, remote=remote, dry_run=dry_run, allow_empty=allow_empty,
              github=settings)

    def text() -> None:
        late = f" ({r.late} late)" if r.late else ""
        click.echo(f"tick {r.tick}: {r.applied} applied{late}, {len(r.quarantined)} quarantined, "
                   f"{len(r.held)} held, {r.duplicates} duplicate(s) dropped, {r.docs_changed} document(s) changed")
        for q in r.quarantined:
            click.echo(f"  quarantined {q['path']} ({q['source']}): {q['reason']}")
        for c in r.held:
            click.echo(f"  held for a person: state/conflicts/{c}.json")
        for c in r.resolved:
            click.echo(f"  decided: {c} (a person's resolution applied)")
        if r.pulls:
            p = r.pulls
            click.echo(f"conflict pull requests: {len(p['opened'])} opened, {len(p['updated'])} updated, "
                       f"{len(p['fallbacks']) if p.get('fallbacks') else 0} closed unmerged (fallback), "
                       f"{len(p['deferred'])} deferred to the next run, {p['requests']} GitHub requests")
            for o in p["opened"]:
                click.echo(f"  opened #{o['number']} for {o['conflict']} ({o['branch']})")
        where = f"to {r.remote}" if r.remote else "locally"
        if r.published:
            click.echo(f"published main {r.commit[:12]} {where}")
        else:
            click.echo(f"dry run: built {r.commit[:12]}, published nothing")

    _emit(r.to_json(), as_json, text)
    tokens, cost = summary.money(r.usage)
    summary.table(f"fleet merge: tick {r.tick}" + ("" if r.published else " (dry run: nothing published)"),
                  {"models": summary.cell(", ".join(r.models) or "none"), "agents": r.agents, "deltas": r.applied, "conflicts": len(r.held), "quarantined": len(r.quarantined),
                   "tokens": tokens, "cost": cost},
                  [f"decided: {c}" for c in r.resolved]
                  + [f"pull request #{o['number']} opened for {o['conflict']}" for o in (r.pulls or {}).get("opened", [])])
    summary.quarantined(r.quarantined)


@cli.command("validate")
@_dir_option
@_json_option
@click.argument("path", required=False, type=click.Path(path_type=Path))
@_handled
def validate_cmd(directory: Path, as_json: bool, path: Path | None) -> None:
    """Check state documents and delta files on disk against their schemas."""
    from fleet.commands.validate import validate
    from fleet.git import toplevel

    root = toplevel(directory)
    count, problems = validate(root, path)

    def text() -> None:
        for p in problems:
            click.echo(str(p))
        click.echo(f"{count} file(s) checked, {len(problems)} problem(s)", err=bool(problems))

    _emit({"checked": count, "problems": [p.__dict__ for p in problems]}, as_json, text)
    if problems:
        sys.exit(EXIT_FAILURE)


@cli.command("replay")
@_dir_option
@_json_option
@_remote_option
@click.option("--check", is_flag=True, help="Exit 1 unless the rebuilt state is byte-identical to main.")
@_handled
def replay_cmd(directory: Path, as_json: bool, remote: str | None, check: bool) -> None:
    """Rebuild state from genesis and the ledger (into refs/fleet/replay)."""
    from fleet.commands.replay import REPLAY_REF, replay

    r = replay(directory, remote)

    def text() -> None:
        click.echo(f"replayed {r.ticks} tick(s) over {r.commits} commit(s) into {REPLAY_REF} ({r.replay[:12]})")
        if r.identical:
            click.echo(f"byte-identical to main: tree {r.main_tree[:12]}")
        else:
            click.echo(f"differs from main (tree {r.main_tree[:12]} vs {r.replay_tree[:12]}); "
                       f"first at {r.first_difference}")
        for oc in r.outside:
            click.echo(f"outside the merge engine{' (refused)' if oc.refused else ''}: {oc.summary()}")
        if r.refused:
            click.echo(f"{len(r.refused)} commit(s) outside the merge engine left changes fleet refuses "
                       "(files only the merge engine writes, or invalid state): fix or revert them on main", err=True)

    _emit(r.to_json(), as_json, text)
    if check and not r.ok:
        sys.exit(EXIT_FAILURE)


@cli.command("log")
@_dir_option
@_json_option
@_remote_option
@click.argument("doc", required=False)
@click.option("--agent", default=None, help="Only this agent's deltas.")
@click.option("-n", "--limit", default=50, show_default=True, help="At most this many entries.")
@_handled
def log_cmd(directory: Path, as_json: bool, remote: str | None, doc: str | None, agent: str | None, limit: int) -> None:
    """Which deltas changed DOC (collection/id), by whom, newest first."""
    from fleet.commands.log import log

    entries = log(directory, doc, agent, limit, remote)

    def text() -> None:
        if not entries:
            click.echo("no deltas found")
        for e in entries:
            if e.status == "outside":
                click.echo(f"tick {e.tick:<5} {e.utc}  commit {e.commit[:12]} by {e.author}, outside the merge "
                           f"engine ({e.reason!r}): {'; '.join(e.ops)}")
                continue
            what = ("; ".join(e.ops) or f"no change: {e.reason or 'no reason given'}") if e.status == "applied" \
                else f"QUARANTINED: {e.reason}"
            click.echo(f"tick {e.tick:<5} {e.utc}  {e.agent:<12} {e.worker:<8} {e.delta}  {what}")

    _emit([e.to_json() for e in entries], as_json, text)


@cli.command("status")
@_dir_option
@_json_option
@_remote_option
@_handled
def status_cmd(directory: Path, as_json: bool, remote: str | None) -> None:
    """The merged tick, workers' health, open conflicts, tasks by state, tokens and cost."""
    from fleet.commands.status import status

    s = status(directory, remote)

    def text() -> None:
        click.echo(f"tick {s['tick']} (main {s['main'][:12]}{', remote ' + s['remote'] if s['remote'] else ''})")
        last, tot = s["last"], s["totals"]
        click.echo(f"last tick: {last['applied']} applied, {last['quarantined']} quarantined, {last['held']} held")
        click.echo(f"all ticks: {tot['applied']} applied, {tot['quarantined']} quarantined, {tot['held']} held")
        u = tot.get("usage") or {}
        if u:
            click.echo(f"tokens: {u.get('input_tokens', 0)} in, {u.get('output_tokens', 0)} out; cost ${u.get('cost_usd', 0):.4f}")
        click.echo(f"pending worker branches: {len(s['pending_branches'])}")
        if s["workers"]:
            click.echo("workers: " + ", ".join(
                f"{w['worker']} {w['status']} (last tick {w['lastTick']})" for w in s["workers"]))
        t = s["tasks"]
        click.echo(f"tasks: {t['pending']} pending ({t['ready']} ready), {t['in-progress']} in progress"
                   f"{' (' + str(t['expired']) + ' lease(s) expired: run fleet watchdog)' if t['expired'] else ''}, "
                   f"{t['done']} done, {t['failed']} failed")
        for c in s["open_conflicts"]:
            click.echo(f"  conflict {c['id']}: {c['doc']} {c['path']} ({c['candidates']} candidates, since tick {c['opened_tick']})")
        if s["stalled"]:
            click.echo(f"warning: {s['stalled']}")
        for oc in s["outside"]:
            files = ", ".join(f"{c['how']} {c['path']}" for c in oc["changes"][:10])
            more = f", and {len(oc['changes']) - 10} more" if len(oc["changes"]) > 10 else ""
            click.echo(f"warning: commit {oc['commit'][:12]} by {oc['author']} ({oc['subject']!r}) changed state "
                       f"outside the merge engine: {files}{more}")
            for why in oc["refused"]:
                click.echo(f"warning: refused: {why}; fix or revert it on main (`fleet replay --check` fails until then)")
        f = s["fleet"]
        if f["carried"] is not None and not f["same"]:
            edited = " with source that differs from it" if f["carried"] == f["installed"] else ""
            click.echo(f"warning: this repository carries fleet {f['carried']} in {f['path']}, and fleet "
                       f"{f['installed']} is installed{edited}: the workflows run the carried one, `fleet` here "
                       "runs the installed one")
            if f["shadows"]:
                click.echo(f"warning: {f['path']} at the top shadows the installed fleet for `python -m fleet` run "
                           "here; move it to .github/actions/fleet/, where `fleet init` puts it now")

    _emit(s, as_json, text)


@cli.command("plan")
@_dir_option
@_json_option
@_remote_option
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Workers this tick, 1 to 256 (default: run.workers in config).")
@click.option("--agents", default=None, help="Only these agents this tick (comma-separated).")
@click.option("--matrix", "matrix_only", is_flag=True, help="Print only the matrix, on one line, for $GITHUB_OUTPUT.")
@_handled
def plan_cmd(directory: Path, as_json: bool, remote: str | None, workers: int | None, agents: str | None,
             matrix_only: bool) -> None:
    """The workers and agents of the next tick, as JSON for a workflow's fromJSON."""
    from fleet.commands.plan import plan

    p = plan(directory, workers=workers, remote=remote, agents=_split(agents))
    if matrix_only:
        click.echo(json.dumps(p["matrix"], separators=(",", ":"), sort_keys=True))
        return

    def text() -> None:
        click.echo(f"tick {p['tick']}: {len(p['matrix']['include'])} worker(s) with agents, push {p['push']}")
        for name, agents_ in p["assignment"].items():
            click.echo(f"  {name}: {', '.join(agents_)}")

    _emit(p, as_json, text)


@cli.command("work")
@_dir_option
@_json_option
@_remote_option
@click.option("--worker", type=int, required=True, help="This worker's number, 1..W.")
@click.option("--workers", type=click.IntRange(1, 256), required=True, help="How many workers this tick has (W, 1 to 256).")
@click.option("--tick", type=int, default=None, help="Refuse to work unless this is the next tick.")
@click.option("--provider", default=None, help="auto, offline or anthropic (default: run.provider in config; auto is anthropic when ANTHROPIC_API_KEY is set).")
@click.option("--outbox", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Coalesced mode: write the delta files here for the fan-in merge instead of pushing.")
@click.option("--concurrency", type=int, default=None, help="Agent turns in flight at once (default: run.concurrency).")
@click.option("--timeout", type=float, default=None, help="Seconds until unfinished turns become error deltas.")
@click.option("--agents", default=None, help="Only these agents this tick (comma-separated).")
@_handled
def work_cmd(directory: Path, as_json: bool, remote: str | None, worker: int, workers: int, tick: int | None,
             provider: str | None, outbox: Path | None, concurrency: int, timeout: float | None,
             agents: str | None) -> None:
    """One worker's slice of one tick, ending in a pushed delta set."""
    from fleet.commands.work import work

    r = work(directory, worker=worker, workers=workers, tick=tick, remote=remote, provider=provider,
             outbox=outbox, concurrency=concurrency, timeout=timeout, only_agents=_split(agents))

    def text() -> None:
        where = f"pushed {r.branch}" if r.pushed else f"handed to {r.outbox}"
        click.echo(f"worker {r.worker}, tick {r.tick}: fetched main {r.main[:12]}; {r.deltas} delta(s) "
                   f"for {len(r.agents)} agent(s), {r.errors} error(s); {where} ({r.seconds:.1f}s); "
                   f"provider {r.provider}, model {', '.join(r.models)}")

    _emit(r.to_json(), as_json, text)
    tokens, cost = summary.money(r.usage)
    summary.table(f"fleet work: worker {r.worker}, tick {r.tick}",
                  {"provider": r.provider, "model": summary.cell(", ".join(r.models)), "agents": len(r.agents),
                   "deltas": r.deltas, "errors": r.errors, "tokens": tokens, "cost": cost},
                  [f"pushed {r.branch}" if r.pushed else f"handed to {r.outbox}"])


@cli.command("run")
@_dir_option
@_json_option
@click.option("--ticks", type=int, default=1, show_default=True, help="How many ticks to run.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Worker processes per tick, 1 to 256 (default: run.workers).")
@click.option("--remote", default=None, metavar="URL",
              help="The fleet's remote; default: a local bare origin in .git/fleet/origin.git.")
@click.option("--provider", default=None, help="auto, offline or anthropic (default: run.provider in config; auto is anthropic when ANTHROPIC_API_KEY is set).")
@click.option("--push", type=click.Choice(["direct", "coalesced"]), default=None,
              help="Force a push mode (default: by fleet size, run.push in config).")
@click.option("--deadline", type=float, default=None, help="Seconds a tick waits for its workers.")
@_handled
def run_cmd(directory: Path, as_json: bool, ticks: int, workers: int | None, remote: str | None,
            provider: str | None, push: str | None, deadline: float | None) -> None:
    """The whole loop on one machine: W workers in parallel, then the merge, tick after tick."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from fleet.commands.run import run

    console = Console(stderr=as_json, highlight=False, soft_wrap=True)
    progress = Progress(TextColumn("[bold]fleet run"), BarColumn(), TextColumn("{task.completed}/{task.total} ticks"),
                        TimeElapsedColumn(), console=console, transient=True)

    def started(r: Any) -> None:
        if r.created_origin:
            console.print(f"created a local bare origin for this fleet: {r.remote}")
        else:
            console.print(f"fleet remote: {r.remote}")
        console.print(f"provider {r.provider}, model {', '.join(r.models)}", markup=False)
        if r.note:
            console.print(f"note: {r.note}", markup=False)
        if r.local_main:
            console.print(r.local_main)
        progress.start()  # only now: an error before the first tick prints one line, nothing else

    def ticked(t: Any) -> None:
        progress.advance(task)
        progress.console.print(
            f"tick {t.tick}: {t.delivered}/{t.workers} workers delivered ({t.mode}), {t.applied} applied, "
            f"{t.quarantined} quarantined, {t.held} held in {t.seconds:.1f}s")

    task = progress.add_task("run", total=ticks)
    try:
        report = run(directory, ticks=ticks, workers=workers, remote=remote, provider=provider, push=push,
                     deadline=deadline, on_start=started, on_tick=ticked)
    finally:
        if progress.live.is_started:
            progress.stop()
    data = report.to_json()
    if as_json:
        _emit(data, True, lambda: None)
    else:
        table = Table(title="fleet run", show_header=True)
        for col in ("ticks", "last tick", "applied", "quarantined", "held", "seconds"):
            table.add_column(col, justify="right")
        table.add_row(str(len(report.ticks)), str(data["tick"]), str(data["applied"]), str(data["quarantined"]),
                      str(data["held"]), f"{report.seconds:.1f}")
        console.print(table)
        if report.interrupted:
            console.print("interrupted: no half-done work was left behind; what finished workers pushed waits for "
                          "the merge, and `fleet run` resumes there")
    if report.interrupted:
        sys.exit(130)


# -- the task queue ------------------------------------------------------
@cli.group("task")
@click.option("-C", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run as if fleet was started in DIR (the fleet repository).")
def task_group(directory: Path | None) -> None:
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


@task_group.command("add")
@_dir_option
@_json_option
@_remote_option
@click.argument("title", required=False)
@click.option("--body", default=None, help="The whole task, for the agent that claims it.")
@click.option("--priority", type=click.IntRange(0, 4), default=None, help="0 most urgent … 4 (default 2).")
@click.option("--dep", "deps", multiple=True, help="A task that must be done first (repeatable).")
@click.option("--for", "target", default=None, metavar="AGENT", help="Sling it to one agent from the start.")
@click.option("--id", "task_id", default=None, help="Choose the id (default: tk- and a short random suffix).")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Add every task in F.jsonl (one JSON object a line) in one push.")
@click.option("--dry-run", is_flag=True, help="Check the tasks, push nothing.")
@_handled
def task_add_cmd(directory: Path, as_json: bool, remote: str | None, title: str | None, body: str | None,
                 priority: int | None, deps: tuple[str, ...], target: str | None, task_id: str | None,
                 file: Path | None, dry_run: bool) -> None:
    """Add a task (TITLE), or many from --file, in one commit and one push."""
    from fleet.commands.task import add, read_items

    if (title is None) == (file is None):
        raise FleetError("give a TITLE or --file F.jsonl (one of them)", code=2)
    if file is not None:
        if any(v is not None for v in (body, priority, target, task_id)) or deps:
            raise FleetError("--file takes its fields from the file; --body, --priority, --dep, --for and --id "
                             "are for a single TITLE", code=2)
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

    _emit(r, as_json, text)


@task_group.command("claim")
@_dir_option
@_json_option
@_remote_option
@_as_option(required=True)
@click.option("--task", "task_id", default=None, help="Claim this task rather than the first ready one.")
@click.option("--lease", type=click.FloatRange(1, 604800), default=None,
              help="Seconds the claim holds (default: tasks.lease_seconds in config); renew at half.")
@_handled
def task_claim_cmd(directory: Path, as_json: bool, remote: str | None, agent: str, task_id: str | None,
                   lease: float | None) -> None:
    """Claim the first ready task for AGENT; exit 3 when nothing is ready."""
    from fleet.commands.task import claim

    t = claim(directory, agent, lease=lease, remote=remote, task_id=task_id)

    def text() -> None:
        click.echo(f"claimed {t['id']} for {agent}: token {t['token']}, lease until {t['leaseUntil']}")
        _task_detail(t)

    _emit(t, as_json, text)


def _holder_command(verb: str, helptext: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__doc__ = helptext
        for deco in reversed((task_group.command(verb), _dir_option, _json_option, _remote_option,
                              click.argument("task_id", metavar="TASK"), _token_option, _as_option())):
            fn = deco(fn)
        return fn
    return wrap


@_holder_command("renew", "Extend the lease on TASK (do it at half the lease).")
@click.option("--lease", type=click.FloatRange(1, 604800), default=None, help="Seconds from now (default: config).")
@_handled
def task_renew_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, token: int,
                   agent: str | None, lease: float | None) -> None:
    from fleet.commands.task import renew

    t = renew(directory, task_id, token, agent=agent, lease=lease, remote=remote)
    _emit(t, as_json, lambda: click.echo(f"renewed {t['id']}: token {t['token']}, lease until {t['leaseUntil']}"))


@_holder_command("complete", "Mark TASK done, with an optional JSON result.")
@click.option("--result", "result", default=None, help="The result, as JSON (a string is '\"text\"').")
@click.option("--result-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The result, from a JSON file.")
@_handled
def task_complete_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, token: int,
                      agent: str | None, result: str | None, result_file: Path | None) -> None:
    from fleet import canonical
    from fleet.commands.task import complete

    value = None
    if result is not None and result_file is not None:
        raise FleetError("give --result or --result-file, not both", code=2)
    if result is not None:
        try:
            value = canonical.load(result.encode(), "--result", canonical.MAX_DEPTH)
        except FleetError as e:
            raise FleetError(f"{e} (a string is given as '\"text\"')", code=2) from None
    elif result_file is not None:
        result_file = _under(directory, result_file)
        try:
            value = canonical.load(result_file.read_bytes(), str(result_file), canonical.MAX_DEPTH)
        except OSError as e:
            raise FleetError(f"{result_file}: cannot read: {e.strerror}") from None
    t = complete(directory, task_id, token, result=value, agent=agent, remote=remote)
    _emit(t, as_json, lambda: click.echo(f"done: {t['id']} by {t['claimedBy']} (token {t['token']})"))


@_holder_command("fail", "Give TASK back as failed: retried after a delay, or failed for good after max_failures.")
@click.option("--reason", required=True, help="What went wrong, for the next agent and for people.")
@_handled
def task_fail_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, token: int,
                  agent: str | None, reason: str) -> None:
    from fleet.commands.task import fail

    t = fail(directory, task_id, token, reason=reason, agent=agent, remote=remote)
    after = f"ready again at {t['notBefore']}" if t["status"] == "pending" else "failed for good: a person decides"
    _emit(t, as_json, lambda: click.echo(f"failed: {t['id']} (failure {t['failures']}); {after}"))


@_holder_command("release", "Give TASK back unfinished, without counting a failure.")
@_handled
def task_release_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, token: int,
                     agent: str | None) -> None:
    from fleet.commands.task import release

    t = release(directory, task_id, token, agent=agent, remote=remote)
    _emit(t, as_json, lambda: click.echo(f"released {t['id']}: pending again"))


@task_group.command("reopen")
@_dir_option
@_json_option
@_remote_option
@click.argument("task_id", metavar="TASK")
@_handled
def task_reopen_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str) -> None:
    """Give a failed TASK another go: pending again, failures forgiven, token kept."""
    from fleet.commands.task import reopen

    t = reopen(directory, task_id, remote=remote)
    _emit(t, as_json, lambda: click.echo(f"reopened {t['id']}: pending again"))


def _under(directory: Path, file: Path) -> Path:
    """A relative path given with -C DIR is relative to DIR, as with git -C."""
    return file if file.is_absolute() else directory / file


@task_group.command("sling")
@_dir_option
@_json_option
@_remote_option
@click.argument("task_id", metavar="TASK")
@click.argument("agent", metavar="AGENT", required=False)
@_handled
def task_sling_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str, agent: str | None) -> None:
    """Put pending TASK on AGENT's hook: only AGENT may claim it (no AGENT: anyone again)."""
    from fleet.commands.task import sling

    t = sling(directory, task_id, agent, remote=remote)
    _emit(t, as_json, lambda: click.echo(f"{t['id']} is slung to {agent}" if agent else f"{t['id']} is anyone's"))


def _task_list(directory: Path, as_json: bool, remote: str | None, **kw: Any) -> None:
    from fleet.commands.task import listing

    r = listing(directory, remote=remote, **kw)

    def text() -> None:
        if not r["tasks"]:
            click.echo("no task is ready" if kw.get("ready_only") else "no tasks")
        for t in r["tasks"]:
            click.echo(_task_line(t))
        c = r["counts"]
        click.echo(", ".join(f"{n} {s}" for s, n in c.items()), err=True)

    _emit(r, as_json, text)


@task_group.command("ready")
@_dir_option
@_json_option
@_remote_option
@_as_option()
@_handled
def task_ready_cmd(directory: Path, as_json: bool, remote: str | None, agent: str | None) -> None:
    """Tasks that can be claimed now (for AGENT: including those slung to it), in claim order."""
    _task_list(directory, as_json, remote, agent=agent, ready_only=True)


@task_group.command("list")
@_dir_option
@_json_option
@_remote_option
@click.option("--status", type=click.Choice(["pending", "in-progress", "done", "failed"]), default=None)
@click.option("--agent", default=None, help="Only tasks held by, done by or slung to this agent.")
@_handled
def task_list_cmd(directory: Path, as_json: bool, remote: str | None, status: str | None, agent: str | None) -> None:
    """Every task: open ones first, by priority and age."""
    _task_list(directory, as_json, remote, status=status, agent=agent)


@task_group.command("show")
@_dir_option
@_json_option
@_remote_option
@click.argument("task_id", metavar="TASK")
@_handled
def task_show_cmd(directory: Path, as_json: bool, remote: str | None, task_id: str) -> None:
    """One task and its history: every commit that changed it."""
    from fleet.commands.task import show

    t = show(directory, task_id, remote=remote)

    def text() -> None:
        _task_detail(t)
        click.echo("")
        click.echo("history:")
        for h in t["history"]:
            click.echo(f"  {h['at']}  {h['commit'][:10]}  {h['what']}")

    _emit(t, as_json, text)


@cli.command("watchdog")
@_dir_option
@_json_option
@_remote_option
@click.option("--dry-run", is_flag=True, help="Say what would be returned and marked, commit nothing.")
@click.option("--grace", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds past a lease's end before it is returned (for clocks a little apart).")
@_handled
def watchdog_cmd(directory: Path, as_json: bool, remote: str | None, dry_run: bool, grace: float) -> None:
    """Return expired task leases and mark dead workers, a commit each that says why; exit 3 if all is well."""
    from fleet.commands.watchdog import watchdog

    r = watchdog(directory, remote=remote, dry_run=dry_run, grace=grace)

    def text() -> None:
        for t in r["returned"]:
            click.echo(f"returned {t['id']}: lease of {t['holder']} (token {t['token']}) ran out")
        for t in r["failed"]:
            click.echo(f"failed {t['id']}: lease of {t['holder']} ran out, too many failures; a person decides")
        for w in r["workers"]:
            click.echo(f"worker {w['worker']} {w['status']}: {w['reason']}")
        if r["stalled"]:
            click.echo(f"warning: {r['stalled']}")
        if not r["commits"]:
            click.echo("all leases current, no worker changed")
        elif dry_run:
            click.echo(f"dry run: {r['commits']} commit(s) not made")
        else:
            click.echo(f"pushed {r['commits']} commit(s) to {r['branch']} on {r['remote'] or 'this repository'}")

    _emit(r, as_json, text)
    rows = {"returned": len(r["returned"]), "failed": len(r["failed"]),
            "workers dead": sum(1 for w in r["workers"] if w["status"] == "dead"),
            "workers back": sum(1 for w in r["workers"] if w["status"] == "alive")}
    summary.table("fleet watchdog" + (" (dry run: nothing committed)" if dry_run else ""), rows,
                  [f"returned {t['id']} (lease of {t['holder']})" for t in r["returned"]]
                  + [f"worker {w['worker']} {w['status']}: {w['reason']}" for w in r["workers"]]
                  + ([f"warning: {r['stalled']}"] if r["stalled"] else []))
    if r["stalled"]:
        summary.warning("fleet watchdog", r["stalled"])
    if not r["commits"] and not r["stalled"]:
        sys.exit(EXIT_NOTHING)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def main() -> None:
    cli(prog_name="fleet")


if __name__ == "__main__":
    main()
