"""`fleet replay [--check]`: rebuild main from genesis and the ledger.

The replay itself is :mod:`fleet.replay`; this module parses and renders.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet.cli import dir_option, emit, json_option, remote_option
from fleet.errors import EXIT_FAILURE
from fleet.progress import Progress
from fleet.replay import REPLAY_REF, ReplayReport, replay

__all__ = ["REPLAY_REF", "ReplayReport", "replay", "replay_command"]


# -- the command line --------------------------------------------------------
@click.command("replay")
@dir_option
@json_option
@remote_option
@click.option("--check", is_flag=True, help="Exit 1 unless the rebuilt state is byte-identical to main.")
def replay_command(directory: Path, as_json: bool, remote: str | None, check: bool) -> None:
    """Rebuild state from genesis and the ledger (into refs/fleet/replay)."""
    with Progress("replay", total=0, as_json=as_json) as bar:
        r = replay(directory, remote, bar)

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

    emit(r.to_json(), as_json, text)
    if check and not r.ok:
        sys.exit(EXIT_FAILURE)
