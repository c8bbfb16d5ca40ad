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
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from fleet import __version__
from fleet.errors import EXIT_FAILURE, FleetError
from fleet import summary
from fleet.secrets import redact

def _inherit_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    """`fleet -C DIR status` and `fleet status -C DIR` both work, as with git."""
    if value is not None:
        return value
    return ctx.find_root().params.get("directory") or Path(".")


_dir_option = click.option(
    "-C", "directory", type=click.Path(file_okay=False, path_type=Path), default=None, callback=_inherit_dir,
    help="Run as if fleet was started in DIR (the fleet repository).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
_remote_option = click.option(
    "--remote", default=None, metavar="NAME",
    help="Remote whose main the fleet uses (default: origin if it exists, else this repository).",
)


def _log_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleet"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
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
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
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
@_handled
def init_cmd(directory: Path) -> None:
    """Create a new fleet repository in DIRECTORY with the example world."""
    from fleet.commands.init import init

    sha = init(directory)
    click.echo(f"created fleet repository {directory} (genesis {sha[:12]}, tick 0)")
    click.echo(f"next: cd {directory} && fleet status")


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
                  {"agents": r.agents, "deltas": r.applied, "conflicts": len(r.held), "quarantined": len(r.quarantined),
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

    _emit(r.to_json(), as_json, text)
    if check and not r.identical:
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
            what = "; ".join(e.ops) if e.status == "applied" else f"QUARANTINED: {e.reason}"
            click.echo(f"tick {e.tick:<5} {e.utc}  {e.agent:<12} {e.worker:<8} {e.delta}  {what}")

    _emit([e.to_json() for e in entries], as_json, text)


@cli.command("status")
@_dir_option
@_json_option
@_remote_option
@_handled
def status_cmd(directory: Path, as_json: bool, remote: str | None) -> None:
    """The merged tick, pending worker branches, open conflicts and usage."""
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
        for c in s["open_conflicts"]:
            click.echo(f"  conflict {c['id']}: {c['doc']} {c['path']} ({c['candidates']} candidates, since tick {c['opened_tick']})")

    _emit(s, as_json, text)


@cli.command("plan")
@_dir_option
@_json_option
@_remote_option
@click.option("--workers", type=int, default=None, help="Workers this tick (default: run.workers in config).")
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
@click.option("--workers", type=int, required=True, help="How many workers this tick has (W).")
@click.option("--tick", type=int, default=None, help="Refuse to work unless this is the next tick.")
@click.option("--provider", default=None, help="Model provider (default: run.provider in config).")
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
                   f"for {len(r.agents)} agent(s), {r.errors} error(s); {where} ({r.seconds:.1f}s)")

    _emit(r.to_json(), as_json, text)
    tokens, cost = summary.money(r.usage)
    summary.table(f"fleet work: worker {r.worker}, tick {r.tick}",
                  {"agents": len(r.agents), "deltas": r.deltas, "errors": r.errors, "tokens": tokens, "cost": cost},
                  [f"pushed {r.branch}" if r.pushed else f"handed to {r.outbox}"])


@cli.command("run")
@_dir_option
@_json_option
@click.option("--ticks", type=int, default=1, show_default=True, help="How many ticks to run.")
@click.option("--workers", type=int, default=None, help="Worker processes per tick (default: run.workers).")
@click.option("--remote", default=None, metavar="URL",
              help="The fleet's remote; default: a local bare origin in .git/fleet/origin.git.")
@click.option("--provider", default=None, help="Model provider (default: run.provider in config).")
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
        if r.note:
            console.print(f"note: {r.note}")

    def ticked(t: Any) -> None:
        progress.advance(task)
        progress.console.print(
            f"tick {t.tick}: {t.delivered}/{t.workers} workers delivered ({t.mode}), {t.applied} applied, "
            f"{t.quarantined} quarantined, {t.held} held in {t.seconds:.1f}s")

    with progress:
        task = progress.add_task("run", total=ticks)
        report = run(directory, ticks=ticks, workers=workers, remote=remote, provider=provider, push=push,
                     deadline=deadline, on_start=started, on_tick=ticked)
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
            console.print("interrupted: nothing was left behind; `fleet run` resumes at the next unmerged tick")
    if report.interrupted:
        sys.exit(130)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def main() -> None:
    cli(prog_name="fleet")


if __name__ == "__main__":
    main()
