"""A secret's value in a name the merge turns into a path (a worker's folder) never
reaches the tree: its records go to the quarantine file of no worker, so the file and
its records say one thing, and a replay, with the key or without, writes the same tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import Fleet, run

from fleet import canonical
from fleet.delta import Op, file_path

SECRET = "ghp_SECRETvalue456"


@pytest.mark.parametrize("folder", [SECRET, f"w-{SECRET}", f"{SECRET}-7"])
def test_a_worker_folder_named_with_a_secret_never_becomes_a_path(fleet: Fleet, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  folder: str) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    inbox = tmp_path / "in"
    ok = fleet.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 1), worker="w2")
    hostile = fleet.delta("cleo", Op("set", "agents", "cleo", ("bio",), "hello"), worker=folder)
    for body in (ok, hostile):
        (inbox / file_path(body)).parent.mkdir(parents=True, exist_ok=True)
        (inbox / file_path(body)).write_bytes(canonical.dumps(body))
    run(fleet, "merge", "--inbox", str(inbox))
    tree = subprocess.run(["git", "ls-tree", "-r", "--name-only", "main"], cwd=fleet.path, check=True,
                          capture_output=True, text=True).stdout
    assert SECRET not in tree and "[REDACTED]" not in tree, tree
    assert any(p.endswith("/_unknown.jsonl") for p in tree.split()), tree
    run(fleet, "replay", "--check")
    monkeypatch.delenv("GITHUB_TOKEN")
    run(fleet, "replay", "--check")
