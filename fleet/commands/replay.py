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

from dataclasses import dataclass, field
from pathlib import Path

from fleet.commands.merge import message
from fleet.engine import replay_tick
from fleet.errors import FleetError
from fleet.ledger import tick_inputs, tick_of
from fleet.outside import OutsideCommit, scan
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


def replay(path: Path, remote: str | None = None) -> ReplayReport:
    repo = FleetRepo(path, remote)
    repo.fetch()
    git = repo.git
    head = repo.main()
    history = git.first_parent_log(head)
    rebuilt: str | None = None
    ticks = 0
    first_difference = None
    for commit, parent, body in history:
        tick = tick_of(body)
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
