"""`fleet resolve CONFLICT --choose CANDIDATE | --value JSON`: a person's
decision on a held conflict, without GitHub.

It does what merging the conflict's pull request does: the resolution file
``state/resolutions/<conflict>.json`` lands on the fleet's main in a commit
by you (a compare-and-swap push), and the next `fleet merge` applies it and
says so. The decision is checked first as the merge will check it: an
unknown conflict, a candidate that is not one, JSON that does not parse or a
value the schema refuses is one line naming it, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fleet import canonical, keys, resolve
from fleet.cli import dir_option, emit, json_option, remote_option
from fleet.errors import UsageError
from fleet.ids import printable
from fleet.repo import FleetRepo


def decide(path: Path, conflict: str, choose: str | None = None, value: str | None = None,
           remote: str | None = None) -> resolve.Proposed:
    if (choose is None) == (value is None):
        raise UsageError("give exactly one of --choose CANDIDATE (a delta id, or 'base') and --value JSON")
    parsed: Any = None
    if value is not None:
        keys.refuse(value, "--value")
        parsed = canonical.load(value.encode("utf-8", errors="surrogateescape"), "--value")
        keys.refuse(canonical.dumps(parsed).decode("utf-8", errors="surrogateescape"), "--value")  # \u escapes
    repo = FleetRepo(path, remote)
    by = f"fleet resolve by {resolve.person(repo.git)}"
    what = f"choose {choose}" if choose is not None else "an explicit value"
    return resolve.propose(repo, lambda snap: resolve.decision(snap, conflict, choose, parsed, by),
                           f"fleet resolve: decide {printable(conflict, 100)} ({printable(what, 120)})\n")


# -- the command line --------------------------------------------------------
@click.command("resolve")
@dir_option
@json_option
@remote_option
@click.argument("conflict")
@click.option("--choose", default=None, metavar="CANDIDATE",
              help="The candidate delta whose value stands, or 'base' for the value from before the conflict.")
@click.option("--value", default=None, metavar="JSON", help="An explicit value instead, as JSON ('\"text\"', 3, null).")
def resolve_command(directory: Path, as_json: bool, remote: str | None, conflict: str, choose: str | None,
                    value: str | None) -> None:
    """Decide a held conflict without GitHub: the next fleet merge applies it."""
    p = decide(directory, conflict, choose, value, remote)

    def text() -> None:
        if p.already:
            click.echo(f"already recorded: {p.path} on the fleet's main (commit {p.commit[:12]}) decides the same; "
                       "nothing to do")
            return
        where = f"to {p.remote}" if p.remote else "locally"
        verb = "replaced the pending decision with" if p.replaced else "recorded"
        click.echo(f"{verb} {p.path} on the fleet's main (commit {p.commit[:12]}, published {where}); "
                   "the next `fleet merge` (or `fleet run`) applies it")

    emit({"conflict": p.body["conflict"], "path": p.path, "commit": p.commit, "decision": p.body,
          "replaced": p.replaced, "already": p.already, "remote": p.remote}, as_json, text)
