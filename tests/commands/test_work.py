"""`fleet work`: one worker's slice of one tick, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import fleet_cli

from fleet.commands.init import init
from fleet.git import Git


def test_work_outbox_hands_files_to_merge_inbox(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    bare = tmp_path / "o.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)
    outbox = tmp_path / "outbox"
    for i in (1, 2):
        p = fleet_cli(repo, "work", "--worker", str(i), "--workers", "2", "--remote", str(bare), "--outbox", str(outbox))
        assert p.returncode == 0, p.stderr
    assert Git(bare).refs("refs/heads/fleet/") == []  # nothing pushed by workers
    assert len(list(outbox.rglob("*.json"))) == 6
    m = fleet_cli(repo, "merge", "--remote", str(bare), "--inbox", str(outbox), "--json")
    assert m.returncode == 0, m.stderr
    assert json.loads(m.stdout)["applied"] == 6
    assert list(outbox.rglob("*.json")) == []


def test_worker_failure_publishes_explicit_empty_deltas(tmp_path: Path) -> None:
    """A worker out of time publishes the error as an empty delta, never a partial one."""
    repo = tmp_path / "x"
    init(repo)
    bare = tmp_path / "o.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)
    p = fleet_cli(repo, "work", "--worker", "1", "--workers", "1", "--remote", str(bare), "--timeout", "0", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["errors"] == 6
    m = json.loads(fleet_cli(repo, "merge", "--remote", str(bare), "--json").stdout)
    assert (m["applied"], m["noop"], m["merged"], m["docs_changed"]) == (0, 6, 6, 0)  # in the ledger, no change
    env = dict(os.environ)
    assert env is not None
