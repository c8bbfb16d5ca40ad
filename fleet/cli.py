"""What every command's command line shares: the `-C`, `--json` and `--remote`
options and the one way output is printed (text, or JSON with `--json`).

Each command's own options, its rendering and its job summary live in its
module under ``fleet/commands``; ``fleet.main`` maps names to those modules.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fleet.ids import json_lines, printable_lines
from fleet.keys import redact

# ctx.meta is shared by every context of one invocation, so the error handler in
# fleet.main can see --json on a subcommand it never parsed.
JSON_META = "fleet.json"


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


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta[JSON_META] = value
    return value


DIR_HELP = "Run as if fleet was started in DIR (the fleet repository)."
# A group's -C: recorded as given, for its subcommands' dir_option to inherit.
group_dir_option = click.option("-C", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
                                help=DIR_HELP)
dir_option = click.option("-C", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
                          callback=_inherit_dir, help=DIR_HELP)
json_option = click.option("--json", "as_json", is_flag=True, callback=_remember_json,
                           help="Print JSON instead of text.")
remote_option = click.option(
    "--remote", default=None, metavar="NAME",
    help="Where the fleet's main lives: a remote name, URL or path (default: git config fleet.remote, "
         "which fleet run sets, else origin, else this repository).",
)


def emit(data: Any, as_json: bool, text: Callable[[], None]) -> None:
    """Print ``data`` as JSON with ``--json``, else call ``text`` to print it for people."""
    if as_json:
        import json  # here: `fleet --help` needs none

        click.echo(json_lines(redact(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))))
    else:
        # The text passes through redaction as a whole, as JSON does: a remote's
        # URL with credentials, an error quoting a key, never reach the screen;
        # nor does a character a terminal would obey (a name's escape sequence).
        out = io.StringIO()
        ctx = click.get_current_context(silent=True)
        color = ctx.color if ctx is not None else None
        if ctx is not None:  # click strips escape sequences it writes to a file: kept, to be shown escaped
            ctx.color = True
        try:
            with contextlib.redirect_stdout(out):
                text()
        finally:
            if ctx is not None:
                ctx.color = color
        click.echo(printable_lines(redact(out.getvalue())), nl=False)


def split(value: str | None, flag: str = "--agents") -> list[str] | None:
    """A comma-separated option (``--agents a,b``) as a list; None when not given
    (or given empty, as a workflow input left blank is). Commas that name nothing
    (``--agents ,``) are a usage error, not every agent."""
    if not value or not value.strip():
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        from fleet.errors import UsageError

        raise UsageError(f"{flag} {value!r}: names nothing (A,B: names separated by commas; leave it out for all)")
    return names


def read_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a file a person names (``--file``, ``--result-file``), read no
    further than ``limit`` + 1 bytes: a device (/dev/zero), a FIFO or a huge file
    is one line, not a process that fills memory or waits for ever."""
    from fleet.errors import FleetError
    from fleet.repo import read_regular

    data = read_regular(str(path), limit)
    if data is None:
        raise FleetError(f"{path}: cannot read: no such file")
    if isinstance(data, str):
        raise FleetError(f"{path}: {data.replace('only regular files in the inbox are read', f'{what} is read from a regular file')}")
    if isinstance(data, tuple):
        raise FleetError(f"{path}: {data[1]:,} bytes or more; {what} is at most {limit:,} bytes")
    return data


def read_stdin(limit: int, what: str) -> str:
    """Standard input as UTF-8 text, read no further than ``limit`` + 1 bytes."""
    import sys

    from fleet.errors import FleetError

    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise FleetError(f"standard input: more than {limit:,} bytes; {what} is at most {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FleetError(f"standard input: not UTF-8 text (byte {e.start} is {data[e.start:e.start + 1]!r})") from None



# The largest count or tick an option takes: every integer fleet writes is within
# 64 bits, and JSON readers in JavaScript hold integers exactly up to 2**53.
MAX_COUNT = 2**53


def check_output(directory: Path, out: Path, flag: str, *, folder: bool, ours: Callable[[Path], bool]) -> None:
    """Where a command writes what a person asked for (``--out``, ``--outbox``,
    ``--propose-meanings``): never the fleet's own folder, state/, schemas/ or .git/
    (validate would refuse the file there, or git would carry it), and never over
    what fleet did not write: an existing file, or a folder holding files, passes
    only if ``ours`` says fleet wrote it (a page of an earlier report, answers of an
    earlier merge). A usage error naming the flag otherwise."""
    from fleet.errors import FleetError, UsageError
    from fleet.git import toplevel

    own = "a folder of its own" if folder else "a file of its own"
    try:
        where = out.resolve()
        top: Path | None = toplevel(directory).resolve()
    except (OSError, RuntimeError):
        return  # a path that cannot be resolved: the write says so
    except FleetError:
        top = None  # not a fleet: only what is there is guarded
    if top is not None:
        if where == top:
            raise UsageError(f"{flag} {out}: is the fleet's own folder; name {own}")
        from fleet.repo import is_own_outbox

        runs = flag == "--outbox" and any(is_own_outbox(f) for f in (where, *where.parents))  # `fleet run`'s
        for inside in ("state", "schemas", ".git"):
            if (where == top / inside or top / inside in where.parents) and not runs:
                raise UsageError(f"{flag} {out}: is inside the fleet's {inside}/; name {own}")
    try:
        if folder and (where.exists() or where.is_symlink()) and not where.is_dir():
            raise UsageError(f"{flag} {out}: is a file, not a folder; name a folder of its own")
        if folder and where.is_dir() and any(where.iterdir()) and not ours(where):
            raise UsageError(f"{flag} {out}: holds files fleet did not write; name a new or empty folder, "
                             "or one fleet wrote to before")
        if not folder and (where.exists() or where.is_symlink()) and not (where.is_file() and ours(where)):
            raise UsageError(f"{flag} {out}: exists and is not a file fleet wrote; name a new file")
    except OSError as e:
        raise UsageError(f"{flag} {out}: cannot be read: {e.strerror or e}") from None


def flag_seconds(flag: str, value: float, *, zero: bool = False, low: float | None = None,
                 high: float | None = None) -> float:
    """A duration given by flag, in seconds: finite, above 0 (or 0 with ``zero``, or
    at least ``low``) and at most ``high`` (default :data:`MAX_DURATION`, 366 days,
    the longest run.every), else a usage error naming the flag and the option's range
    (a click range lets NaN through, so an option with one says it here too)."""
    from fleet.config import MAX_DURATION, format_duration  # here: `fleet --help` reads no config
    from fleet.errors import UsageError

    high = MAX_DURATION if high is None else high
    above = value >= low if low is not None else (0 <= value if zero else 0 < value)
    if not above or not value <= high:  # nan fails both
        start = f"{low:g}" if low is not None else ("0" if zero else "above 0")
        raise UsageError(f"{flag}: {value!r} is not a number of seconds from {start} to {int(high)} "
                         f"({format_duration(int(high))})")
    return value
