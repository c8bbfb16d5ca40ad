"""`fleet replay [--check]`: rebuild main from genesis and the ledger.

Every first-parent commit of main is either a tick commit (it names its tick
in a ``Fleet-Tick`` trailer) or a person's commit (genesis, a config change).
A person's commit is taken as it is; a tick commit is recomputed by the merge
engine from the deltas its ledger lines name, on top of the rebuilt parent.
The rebuilt history is written to ``refs/fleet/replay``; ``--check`` compares
its tree with main's, byte for byte (same tree id).

A person's commit is never a silent input: the report names every one that
changed state or schemas (``outside``), with its author and files, and
``--check`` fails when one left a change in a file only the merge engine
writes (see ``fleet.outside``), even though replay reproduces it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from fleet.cli import dir_option, emit, json_option, remote_option
from fleet.commands.merge import message
from fleet.engine import replay_tick
from fleet.errors import EXIT_FAILURE, FleetError
from fleet.ledger import tick_inputs, tick_of
from fleet.outside import OutsideCommit, scan
from fleet.progress import Progress
from fleet.repo import FleetRepo
from fleet.state import GitSnapshot

REPLAY_REF = "refs/fleet/replay"


@dataclass
class ReplayReport:
    ticks: int
    commits: int
    main: str
    main_tree: str
    replay: str
    replay_tree: str
    identical: bool
    first_difference: str | None
    outside: list[OutsideCommit] = field(default_factory=list)

    @property
    def refused(self) -> list[OutsideCommit]:
        """The person's commits that changed what only the merge engine writes."""
        return [oc for oc in self.outside if oc.refused]

    @property
    def ok(self) -> bool:
        """What ``--check`` asks: byte-identical, and no refused input."""
        return self.identical and not self.refused

    def to_json(self) -> dict:
        out = self.__dict__.copy()
        out["outside"] = [oc.to_json() for oc in self.outside]
        out["refused"] = len(self.refused)
        out["ok"] = self.ok
        return out


def replay(path: Path, remote: str | None = None, bar: Progress | None = None) -> ReplayReport:
    """Rebuild main's history into REPLAY_REF; ``bar`` is moved on a commit at a time."""
    repo = FleetRepo(path, remote)
    repo.fetch()
    git = repo.git
    head = repo.main()
    history = git.first_parent_log(head)
    rebuilt: str | None = None
    ticks = 0
    first_difference = None
    if bar is not None:
        bar.total_is(len(history))
    for commit, parent, body in history:
        tick = tick_of(body)
        if bar is not None:
            bar.advance(1, f"tick {tick}" if tick is not None else f"commit {commit[:12]}")
        if tick is None or parent is None:
            args = ["commit-tree", git.commit_tree(commit), "-m", f"replay: {commit}"]
            if rebuilt:
                args += ["-p", rebuilt]
            rebuilt = git.text("-c", "user.name=fleet", "-c", "user.email=fleet@localhost", *args)
            continue
        assert rebuilt is not None
        base = GitSnapshot(git, rebuilt)
        if base.tick + 1 != tick:
            raise FleetError(f"commit {commit[:12]} says tick {tick} but its parent is at tick {base.tick}")
        inputs = tick_inputs(git, parent, commit, base.config.limits)
        result = replay_tick(base, inputs.applied, inputs.quarantined, inputs.outside)
        rebuilt = git.write_commit(rebuilt, message(result), result.writes, result.deletes, when=0)
        ticks += 1
        if first_difference is None and git.commit_tree(rebuilt) != git.commit_tree(commit):
            rows = git.changed(rebuilt, commit, ["."])
            first_difference = f"tick {tick} (commit {commit[:12]}): " + ", ".join(p for _, _, p in rows[:5])
    assert rebuilt is not None
    git.run("update-ref", REPLAY_REF, rebuilt)
    main_tree, replay_tree = git.commit_tree(head), git.commit_tree(rebuilt)
    return ReplayReport(ticks, len(history), head, main_tree, rebuilt, replay_tree, main_tree == replay_tree,
                        first_difference, scan(git, history))


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
