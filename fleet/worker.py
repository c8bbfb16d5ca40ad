"""What a worker hands to the merge: a commit of delta files on its own branch.

A worker never writes state. Its deltas go to ``deltas/<worker>/<stream>/<id>.json``
in a commit on ``fleet/t<tick>/<worker>``, on top of the main it read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleet import canonical
from fleet.delta import file_path
from fleet.git import Git
from fleet.repo import worker_branch


def commit_deltas(git: Git, base: str, tick: int, worker: str, bodies: Iterable[dict[str, Any]],
                  parent: str | None = None) -> str:
    """Commit delta bodies for one worker and tick; returns the commit.

    ``parent`` is the worker branch's current commit when adding to it (its
    earlier delta files stay); otherwise the commit sits on ``base`` (main).
    """
    files = {}
    for body in bodies:
        if body["worker"] != worker:
            raise ValueError(f"delta {body['id']} belongs to worker {body['worker']}, not {worker}")
        files[file_path(body)] = canonical.dumps(body)
    return commit_files(git, parent or base, tick, worker, files)


def commit_files(git: Git, base: str, tick: int, worker: str, files: dict[str, bytes]) -> str:
    """The commit a worker hands over: its delta files (``deltas/<worker>/...``)
    on top of ``base``. Real workers (``fleet work``, from their worktree) and
    the tests and benchmarks that stand in for them all commit through here."""
    return git.write_commit(base, f"fleet: worker {worker}, tick {tick}: {len(files)} delta(s)\n", files, [])


def stage_branch(git: Git, tick: int, worker: str, commit: str, old: str | None = None) -> bool:
    """Point the local worker branch at ``commit`` (compare-and-swap on ``old``)."""
    return git.update_ref(f"refs/heads/{worker_branch(tick, worker)}", commit, old)
