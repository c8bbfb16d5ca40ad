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

_dir_option = click.option(
    "-C", "directory", type=click.Path(file_okay=False, path_type=Path), default=".",
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
            click.echo(f"fleet: {e}", err=True)
            sys.exit(e.code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("fleet: interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # a bug: short message, traceback to a file
            log = _log_file()
            try:
                with log.open("a") as f:
                    f.write(f"fleet {__version__}: {' '.join(sys.argv)}\n{traceback.format_exc()}\n")
                where = f"; traceback in {log}"
            except OSError:
                where = ""
            click.echo(f"fleet: internal error: {type(e).__name__}: {e}{where}", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper


def _emit(data: Any, as_json: bool, text: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        text()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleet")
def cli() -> None:
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
@_handled
def merge_cmd(directory: Path, as_json: bool, remote: str | None, tick: int | None,
              inbox: tuple[Path, ...], dry_run: bool, allow_empty: bool) -> None:
    """Apply pending deltas to main: validate, commit one tick, publish."""
    from fleet.commands.merge import merge

    r = merge(directory, tick=tick, inbox=inbox, remote=remote, dry_run=dry_run, allow_empty=allow_empty)

    def text() -> None:
        late = f" ({r.late} late)" if r.late else ""
        click.echo(f"tick {r.tick}: {r.applied} applied{late}, {len(r.quarantined)} quarantined, "
                   f"{len(r.held)} held, {r.duplicates} duplicate(s) dropped, {r.docs_changed} document(s) changed")
        for q in r.quarantined:
            click.echo(f"  quarantined {q['path']} ({q['source']}): {q['reason']}")
        for c in r.held:
            click.echo(f"  held for a person: state/conflicts/{c}.json")
        where = f"to {r.remote}" if r.remote else "locally"
        if r.published:
            click.echo(f"published main {r.commit[:12]} {where}")
        else:
            click.echo(f"dry run: built {r.commit[:12]}, published nothing")

    _emit(r.to_json(), as_json, text)


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


def main() -> None:
    cli(prog_name="fleet")


if __name__ == "__main__":
    main()
