"""What a worker hands to the merge: a commit of delta files on its own branch.

A worker never writes state. Its deltas go to ``deltas/<worker>/<stream>/<id>.json``
in a commit on ``fleet/t<tick>/<worker>``, on top of the main it read.
"""

from __future__ import annotations

from typing import Any, Iterable

from fleet import canonical
from fleet.delta import file_path
from fleet.git import Git
from fleet.repo import worker_branch


def commit_deltas(git: Git, base: str, tick: int, worker: str, bodies: Iterable[dict[str, Any]],
                  parent: str | None = None) -> str:
    """Commit delta files for one worker and tick; returns the commit.

    ``parent`` is the worker branch's current commit when adding to it (its
    earlier delta files stay); otherwise the commit sits on ``base`` (main).
    """
    writes = {}
    for body in bodies:
        if body["worker"] != worker:
            raise ValueError(f"delta {body['id']} belongs to worker {body['worker']}, not {worker}")
        writes[file_path(body)] = canonical.dumps(body)
    n = len(writes)
    return git.write_commit(parent or base, f"fleet: worker {worker}, tick {tick}: {n} delta(s)\n", writes, [])


def stage_branch(git: Git, tick: int, worker: str, commit: str, old: str | None = None) -> bool:
    """Point the local worker branch at ``commit`` (compare-and-swap on ``old``)."""
    return git.update_ref(f"refs/heads/{worker_branch(tick, worker)}", commit, old)
