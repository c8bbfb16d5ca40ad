"""Replay: rebuild main from genesis and the ledger.

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

Cost: a tick's replay reads only what that tick touched. The listing of the
tree (every path and blob id under ``state/`` and ``schemas/``) is read once
at genesis and after each person's commit, and carried from tick to tick by
the paths each rebuilt commit changed (:class:`Listing`), so that a
world of 86,000 files does not cost a listing of 86,000 entries per tick.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.commands.merge import message
from fleet.config import CONFIG_PATH
from fleet.engine import replay_tick
from fleet.errors import FleetError
from fleet.git import Git
from fleet.ledger import tick_inputs
from fleet.outside import OutsideCommit, scan, tick_commits
from fleet.progress import Progress
from fleet.repo import FleetRepo
from fleet.state import GitSnapshot

REPLAY_REF = "refs/fleet/replay"
LISTED = ("state/", "schemas/")  # what a snapshot lists (GitSnapshot's folders)
ZERO = "0" * 40
# A person's commit that seeds a world changes tens of thousands of files: the
# report names this many of them (and every refused or fixed one), with the count;
# `git show --stat COMMIT` lists the rest.
CHANGES_SHOWN = 100


class Listing:
    """The tree listing of a commit (path -> blob id under ``state/`` and
    ``schemas/``), with its paths also kept sorted so that a folder's files
    are found by bisection rather than by a pass over every path."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.entries = entries
        self.sorted = sorted(entries)

    def under(self, folder: str) -> list[str]:
        """What :meth:`Snapshot.under` answers: the paths below ``folder``, sorted."""
        prefix = folder.rstrip("/") + "/"
        lo = bisect.bisect_left(self.sorted, prefix)
        hi = bisect.bisect_left(self.sorted, prefix[:-1] + "0")  # "0" is the character after "/"
        return self.sorted[lo:hi]

    def carry(self, git: Git, old: str, new: str) -> None:
        """Bring the listing of commit ``old`` to commit ``new``, by the blobs
        that differ between them (one ``diff-tree``, as long as the change)."""
        for _, blob, path in git.changed(old, new, list(LISTED)):
            if blob == ZERO:
                if self.entries.pop(path, None) is not None:
                    del self.sorted[bisect.bisect_left(self.sorted, path)]
            else:
                if path not in self.entries:
                    bisect.insort(self.sorted, path)
                self.entries[path] = blob


class CarriedSnapshot(GitSnapshot):
    """A :class:`GitSnapshot` of ``commit`` whose tree listing is handed in
    (carried from the commit before) instead of read with ``ls-tree``."""

    def __init__(self, git: Git, commit: str, listing: Listing) -> None:
        self.git = git
        self.commit = commit
        self.listing = listing
        self._entries = listing.entries
        self._cache: dict[str, bytes] = {}
        self._reader = None  # GitSnapshot's long-running reader, used only inside `with snap:`

    def under(self, folder: str) -> list[str]:
        return self.listing.under(folder)


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

    def to_json(self) -> dict[str, Any]:
        out = self.__dict__.copy()
        out["outside"] = [_outside_json(oc) for oc in self.outside]
        out["refused"] = len(self.refused)
        out["ok"] = self.ok
        return out


def _outside_json(oc: OutsideCommit) -> dict[str, Any]:
    """``oc.to_json()`` with at most CHANGES_SHOWN changes beside the refused and fixed ones."""
    out = oc.to_json()
    if len(oc.changes) > CHANGES_SHOWN:
        shown = [c for i, c in enumerate(oc.changes) if i < CHANGES_SHOWN or c.refused or c.fixed]
        out["changes"] = [c.__dict__.copy() for c in shown]
    out["changes_total"] = len(oc.changes)
    return out


def replay(path: Path, remote: str | None = None, bar: Progress | None = None) -> ReplayReport:
    """Rebuild main's history into REPLAY_REF; ``bar`` is moved on a commit at a time."""
    repo = FleetRepo(path, remote)
    repo.fetch()
    git = repo.git
    head = repo.main()
    history = git.first_parent_log(head)
    trees = dict(line.split(" ") for line in git.text("log", "--first-parent", "--format=%H %T", head).splitlines())
    rebuilt: str | None = None
    listing: Listing | None = None  # the listing of `rebuilt`, carried from tick to tick
    ticks = 0
    first_difference = None
    if bar is not None:
        bar.total_is(len(history))
    tick_of_commit = tick_commits(git, history)  # a Fleet-Tick trailer its clock does not bear out: a person's
    if not tick_of_commit and git.show(head, CONFIG_PATH) is None:
        # no tick was ever merged and there is no config: some other repository, where a replay
        # "passes" by copying its commits and leaves a ref behind
        raise FleetError(f"{CONFIG_PATH}: missing on main, and no tick in its history; is this a fleet repository? "
                         "(`fleet init DIR` makes one)")
    for commit, parent, _ in history:
        tick = tick_of_commit.get(commit)
        if bar is not None:
            bar.advance(1, f"tick {tick}" if tick is not None else f"commit {commit[:12]}")
        if tick is None or parent is None:
            args = ["commit-tree", trees[commit], "-m", f"replay: {commit}"]
            if rebuilt:
                args += ["-p", rebuilt]
            rebuilt = git.text("-c", "user.name=fleet", "-c", "user.email=fleet@localhost", *args)
            listing = None  # a person's commit may change anything: list its tree afresh
            continue
        assert rebuilt is not None
        if listing is None:
            listing = Listing(git.ls_tree(rebuilt, *LISTED))
        base = CarriedSnapshot(git, rebuilt, listing)
        if base.tick + 1 != tick:
            raise FleetError(f"commit {commit[:12]} says tick {tick} but its parent is at tick {base.tick}")
        inputs = tick_inputs(git, parent, commit, base.config.limits)
        result = replay_tick(base, inputs.applied, inputs.quarantined, inputs.outside, inputs.meanings)
        # The scratch ref fast-import used is dropped once, at the end.
        new = git.write_commit(rebuilt, message(result), result.writes, result.deletes, when=0, keep_scratch=True)
        listing.carry(git, rebuilt, new)
        rebuilt = new
        ticks += 1
        if first_difference is None and git.commit_tree(rebuilt) != trees[commit]:
            rows = git.changed(rebuilt, commit, ["."])
            first_difference = f"tick {tick} (commit {commit[:12]}): " + ", ".join(p for _, _, p in rows[:5])
    assert rebuilt is not None
    git.run("update-ref", REPLAY_REF, rebuilt)
    if ticks:
        git.proc("update-ref", "-d", git.scratch_ref())
    main_tree, replay_tree = trees[head], git.commit_tree(rebuilt)
    return ReplayReport(ticks, len(history), head, main_tree, rebuilt, replay_tree, main_tree == replay_tree,
                        first_difference, scan(git, history))
