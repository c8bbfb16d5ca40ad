"""A deleted built-in origin (``.git/fleet/origin.git``): every command that reads
the fleet says, in one line, that it is missing and what `fleet run` does about
it, and that is what `fleet run` then does (fleet.repo.missing_origin)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import fleet_cli

from fleet.commands.init import init
from fleet.git import Git

READERS = [("status",), ("log",), ("plan",), ("task", "list"), ("replay", "--check"), ("merge",), ("watchdog",),
           ("report", "--out", "r.html")]


@pytest.mark.parametrize("view", [True, False])
def test_each_reader_says_the_origin_is_missing_and_what_fleet_run_does(tmp_path: Path, view: bool) -> None:
    repo = tmp_path / "x"
    init(repo)
    assert fleet_cli(repo, "run", "--ticks", "2", "--workers", "2").returncode == 0
    origin = repo / ".git" / "fleet" / "origin.git"
    shutil.rmtree(origin)
    user = Git(repo)
    if not view:  # no last view of it here: run makes it from your main
        user.run("update-ref", "-d", "refs/fleet/origin/main")
    agent = sorted(json.loads((repo / "state/config.json").read_text())["agents"])[0]
    for args in [*READERS, ("msg", "inbox", agent)]:
        p = fleet_cli(repo, *args)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1, (args, p.stderr)
        assert lines[0].startswith(f"fleet: the fleet's built-in origin {origin} is missing; `fleet run` "), lines
        assert ("rebuilds it from this clone's last view" in lines[0]) == view, lines
        assert ("makes it anew from your main" in lines[0]) == (not view), lines
        assert "does not appear to be a git repository" not in p.stderr
    p = fleet_cli(repo, "run", "--ticks", "1", "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert ("rebuilt it from this clone's last view" in p.stderr) == view, p.stderr
    tick = json.loads(user.show("refs/fleet/origin/main", "state/fleet.json") or b"")["tick"]
    assert tick == (3 if view else 1)  # as said: the fleet goes on, or starts from your main's tick
    assert fleet_cli(repo, "status").returncode == 0


def test_another_missing_remote_is_still_named_as_git_names_it(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    p = fleet_cli(repo, "status", "--remote", str(tmp_path / "gone.git"))
    assert p.returncode == 1 and "git fetch from" in p.stderr and "built-in origin" not in p.stderr, p.stderr
