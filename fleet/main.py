"""The `fleet` command line: maps a command's name to its module and handles
errors once, for every command.

Each command lives in ``fleet/commands/<name>.py`` (its options, its entry
function and its output) and is imported only when it runs, so `fleet --help`
and `fleet --version` stay fast (as pip's ``commands_dict``).

Exit codes: 0 success, 1 a failure the message explains, 2 a usage error,
3 nothing to do. An unexpected error prints one line and writes the
traceback to a log file; a traceback is never the interface.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.exceptions import NoArgsIsHelpError

from fleet import __version__
from fleet.cli import JSON_META, group_dir_option
from fleet.errors import EXIT_FAILURE, FleetError
from fleet.ids import printable_lines, utf8
from fleet.keys import redact

# Name -> the one-line help `fleet --help` lists, so listing imports no command.
# Each module fleet.commands.<name> defines `<name>_command`; tests check the two agree.
COMMANDS: dict[str, str] = {
    "dispatch": "Pass a chain of dispatched runs on: dispatch the next run of the tick workflow, which waits "
                "in turn.",
    "init": "Create a new fleet repository in DIRECTORY with the example world.",
    "log": "Which deltas changed DOC (collection/id), by whom, newest first.",
    "merge": "Apply pending deltas to main: validate, commit one tick, publish.",
    "msg": "The message bus: per-agent inboxes and archives, and heartbeats, on the bus's branches.",
    "plan": "The workers and agents of the next tick, as JSON for a workflow's fromJSON.",
    "replay": "Rebuild state from genesis and the ledger (into refs/fleet/replay).",
    "report": "A static HTML report of the fleet's history in DIR: charts with text alternatives, no network.",
    "resolve": "Decide a held conflict without GitHub: the next fleet merge applies it.",
    "revert": "Undo one delta with a compensating change at the next merge, or say which later deltas built on it.",
    "run": "The whole loop on one machine: W workers in parallel, then the merge, tick after tick.",
    "status": "The merged tick, workers' health, open conflicts, tasks by state, tokens and cost.",
    "task": "The task queue on the fleet/tasks branch: every change is a compare-and-swap push.",
    "validate": "Check state documents and delta files on disk against their schemas.",
    "watchdog": "Return expired task leases and mark dead workers, a commit each that says why; "
                "exit 3 if all is well.",
    "work": "One worker's slice of one tick, ending in a pushed delta set.",
}


def _log_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleet"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        import tempfile

        base = Path(tempfile.gettempdir())
    return base / "fleet.log"


@contextmanager
def error_handler(ctx: click.Context) -> Iterator[None]:
    """Turn FleetError into one line and an exit code; anything else into a log file."""
    try:
        yield
    except FleetError as e:
        message = printable_lines(redact(str(e)))
        click.echo(f"fleet: {message}", err=True)
        if ctx.meta.get(JSON_META):  # scripts reading --json get JSON on every exit
            import json

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
        where = _log_traceback()
        if isinstance(e, OSError) and e.filename is not None and e.strerror:
            # the file system said no (a file where a folder must be, a full disk, no
            # permission): the file and the reason, not a bug report
            names = " -> ".join(printable_lines(redact(os.fsdecode(f))) for f in (e.filename, e.filename2) if f)
            click.echo(f"fleet: {names}: {e.strerror}{where}", err=True)
        else:
            click.echo(f"fleet: internal error: {type(e).__name__}: {redact(str(e))}{where}", err=True)
        sys.exit(EXIT_FAILURE)


def _log_traceback() -> str:
    """The traceback of the exception being handled, appended to the log; where it went."""
    import traceback

    log = _log_file()
    try:
        with log.open("a", errors="backslashreplace") as f:
            f.write(redact(f"fleet {__version__}: {' '.join(sys.argv)}\n{traceback.format_exc()}\n"))
        return f"; traceback in {log}"
    except OSError:
        return ""


class OneLineUsage(click.ClickException):
    """A usage error as every other error is shown: one line, with where to read more
    (click's own takes four: usage, hint, a blank line, the error)."""

    exit_code = 2

    def __init__(self, error: click.UsageError, where: str) -> None:
        super().__init__(error.format_message())
        self.command_path = error.ctx.command_path if error.ctx is not None else where

    def show(self, file: Any = None) -> None:
        message = printable_lines(redact(self.format_message())).rstrip(".")
        click.echo(f"fleet: {message} (see '{self.command_path} --help')", err=True)


class Fleet(click.Group):
    """The command group that imports a command only when it runs."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except NoArgsIsHelpError:
            raise  # `fleet` alone: the help, as click shows it
        except click.UsageError as e:
            raise OneLineUsage(e, info_name or "fleet") from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        command: click.Command = getattr(importlib.import_module(f"fleet.commands.{cmd_name}"), f"{cmd_name}_command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but from COMMANDS, so `fleet --help` imports no command."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        # A bare Command shortens the help exactly as the real one would.
        rows = [(name, click.Command(name, help=COMMANDS[name]).get_short_help_str(limit)) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for arg in args:
            if not utf8(arg):
                # bytes that are not UTF-8 (Python keeps them as surrogates): every name fleet
                # writes is UTF-8 text, so such an argument is refused before anything reads it
                raise click.UsageError(f"argument '{printable_lines(arg)}' is not UTF-8 text (shown escaped); "
                                       "fleet's names, paths and texts are UTF-8", ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with error_handler(ctx):
            try:
                return super().invoke(ctx)
            except NoArgsIsHelpError:
                raise  # `fleet task` alone: its help
            except click.UsageError as e:  # a command's options, parsed as it starts
                where = " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
                raise OneLineUsage(e, where) from None


@click.group(cls=Fleet, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleet")
@group_dir_option
def cli(directory: Path | None) -> None:
    """Run fleets of LLM agents with git as the only coordination layer.

    Exit codes: 0 success, 1 failure (the message says why), 2 usage error,
    3 nothing to do.
    """


def main() -> None:
    """The command line (the console script is fleet.entry's, which guards its start)."""
    cli(prog_name="fleet")


if __name__ == "__main__":
    main()
