"""`fleet revert DELTA`: undo one delta's effects with a compensating change
that the next merge applies (``fleet.revert``), or a refusal naming the later
deltas that built on it. Like `fleet resolve`, it commits a person's decision
on the fleet's main (``state/resolutions/revert-<delta>.json``) with a
compare-and-swap push; the merge engine alone changes the documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fleet import resolve
from fleet.cli import dir_option, emit, json_option, remote_option
from fleet.repo import FleetRepo
from fleet.revert import plan
from fleet.state import GitSnapshot


def revert(path: Path, delta_id: str, remote: str | None = None) -> resolve.Proposed:
    repo = FleetRepo(path, remote)
    by = f"fleet revert by {resolve.person(repo.git)}"

    def build(snap: GitSnapshot) -> tuple[str, dict[str, Any]]:
        waiting = [a.path.rsplit("/", 1)[-1].removesuffix(".json")
                   for a in repo.arrivals(repo.sources(), snap.config.limits.max_delta_bytes)]
        return plan(repo.git, snap.commit, delta_id, by, waiting)

    return resolve.propose(repo, build, f"fleet revert: undo delta {delta_id}\n")


# -- the command line --------------------------------------------------------
@click.command("revert")
@dir_option
@json_option
@remote_option
@click.argument("delta")
def revert_command(directory: Path, as_json: bool, remote: str | None, delta: str) -> None:
    """Undo one delta with a compensating change at the next merge, or say which later deltas built on it."""
    p = revert(directory, delta, remote)

    def text() -> None:
        if p.already:
            click.echo(f"already recorded: {p.path} on the fleet's main (commit {p.commit[:12]}) reverts {delta}; "
                       "nothing to do")
            return
        where = f"to {p.remote}" if p.remote else "locally"
        docs = ", ".join(d["path"] + (" (removed)" if d["doc"] is None else "") for d in p.body["docs"])
        click.echo(f"recorded {p.path} on the fleet's main (commit {p.commit[:12]}, published {where}): the next "
                   f"`fleet merge` (or `fleet run`) sets {docs} as they would be had {delta} never come")

    emit({"delta": delta, "path": p.path, "commit": p.commit, "tick": p.body["tick"], "docs": p.body["docs"],
          "replaced": p.replaced, "already": p.already, "remote": p.remote}, as_json, text)
