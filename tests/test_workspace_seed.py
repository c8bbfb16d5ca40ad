"""A fresh worker downloads only what changed since the checkout it runs in.

On GitHub Actions every worker is a fresh runner with a shallow checkout of
main; a private cache that ignored it downloaded main twice. These tests run a
worker in a real shallow clone of a real origin and count the objects its
cache had to receive."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import Fleet

from fleet.commands.merge import merge
from fleet.commands.work import work
from fleet.errors import FleetError
from fleet.git import Git
from fleet.workspace import Workspace


def grow(bare: Path, files: int) -> None:
    """Many documents on the origin's main, as a fleet some months old has."""
    git = Git(bare)
    writes = {f"state/channels/c{i:05d}.json": (f'{{"id": "c{i:05d}", "members": [], "name": "channel {i}", '
                                                f'"description": "{"x" * 200}", "post_count": 0}}\n').encode() for i in range(files)}
    commit = git.write_commit(git.rev_parse("refs/heads/main"), "many channels\n", writes, [])
    git.run("update-ref", "refs/heads/main", commit)


def fetched_objects(cache: Path, linked: set[str]) -> int:
    """Objects the cache received: loose, or in packs it did not link from the checkout."""
    n = 0
    for idx in (cache / "objects" / "pack").glob("pack-*.idx"):
        if idx.stem in linked:
            continue
        out = subprocess.run(["git", "show-index"], stdin=idx.open("rb"), capture_output=True, check=True).stdout
        n += len(out.splitlines())
    loose = subprocess.run(["git", "count-objects", "-v"], cwd=cache, capture_output=True, text=True, check=True)
    return n + int(dict(line.split(": ") for line in loose.stdout.splitlines())["count"])


def checkout(bare: Path, where: Path, depth: bool = True) -> Path:
    args = ["git", "clone", "--quiet", "-b", "main", *(["--depth", "1"] if depth else []), bare.as_uri(), str(where)]
    subprocess.run(args, check=True)
    return where


def test_a_fresh_worker_in_a_checkout_downloads_only_what_changed_since(origin_fleet: tuple[Fleet, Path],
                                                                        tmp_path: Path) -> None:
    fleet, bare = origin_fleet
    grow(bare, 2000)
    runner = checkout(bare, tmp_path / "runner")  # actions/checkout: depth 1
    merge(fleet.path, tick=1, allow_empty=True)  # main moved on a tick after the checkout
    total = int(subprocess.run(["git", "rev-list", "--objects", "--count", "main"], cwd=bare, capture_output=True,
                               text=True, check=True).stdout.split()[0])
    linked = {p.stem for p in (runner / ".git" / "objects" / "pack").glob("pack-*.idx")}
    r = work(runner, worker=1, workers=1, remote=str(bare))
    assert r.tick == 2 and r.main == Git(bare).rev_parse("refs/heads/main")
    cache = runner / ".git" / "fleet" / "workers" / "w1.git"
    got = fetched_objects(cache, linked)
    assert 0 < got < total // 20, (got, total)  # the tick's few changed objects, not the 2,000 documents again
    assert Git(cache).refs("refs/fleet/seed/") == []  # the seed refs are gone once used
    # the cache holds main whole, by its own files: the checkout's packs may go away now
    for p in (runner / ".git" / "objects" / "pack").glob("pack-*"):
        os.unlink(p)
    assert subprocess.run(["git", "rev-list", "--objects", "--quiet", "refs/fleet/main"], cwd=cache).returncode == 0
    merge(fleet.path, tick=2, allow_empty=True, inbox=())  # and the next tick's fetch works from the cache alone
    assert work(runner, worker=1, workers=1, remote=str(bare)).tick == 3


def test_a_seed_that_lacks_objects_is_dropped_and_main_fetched_whole(origin_fleet: tuple[Fleet, Path],
                                                                     tmp_path: Path) -> None:
    """A checkout whose newest commit is loose (not in a pack): its tip cannot stand
    for main's objects, and the worker must neither trust it nor fail."""
    fleet, bare = origin_fleet
    grow(bare, 300)
    runner = checkout(bare, tmp_path / "runner", depth=False)
    git = Git(runner)
    doc = b'{"id": "zz", "members": [], "name": "zz", "post_count": 0}\n'
    tip = git.write_commit(git.rev_parse("HEAD"), "a person's commit\n", {"state/channels/zz.json": doc}, [])
    git.run("update-ref", "refs/heads/main", tip)
    git.run("push", "--quiet", str(bare), "main:main")  # main on the origin is that commit
    # the commit object alone in a pack, its tree and blob loose: the cache links the pack, so the
    # tip looks present, but what it needs is not
    subprocess.run(["git", "pack-objects", "--quiet", ".git/objects/pack/pack"], cwd=runner, input=f"{tip}\n".encode(),
                   check=True, capture_output=True)
    r = work(runner, worker=1, workers=1, remote=str(bare))
    assert r.main == Git(bare).rev_parse("refs/heads/main")
    cache = runner / ".git" / "fleet" / "workers" / "w1.git"
    assert subprocess.run(["git", "rev-list", "--objects", "--quiet", "refs/fleet/main"], cwd=cache).returncode == 0


def test_a_worker_outside_any_pack_fetches_as_before(origin_fleet: tuple[Fleet, Path]) -> None:
    fleet, bare = origin_fleet
    with Workspace(Path(fleet.git.text("rev-parse", "--absolute-git-dir")), "w9") as ws:
        sha, delivered = ws.fetch(bare.as_uri())
    assert sha == Git(bare).rev_parse("refs/heads/main") and delivered == set()


def test_a_worker_killed_mid_fetch_leaves_no_lock_that_stops_the_next(origin_fleet: tuple[Fleet, Path]) -> None:
    """git's lock files left by a worker killed while fetching (found by the fault
    campaign: shallow.lock) are removed by the next run of that worker, which alone
    holds the cache; a second run of the same worker at once is refused."""
    fleet, bare = origin_fleet
    assert work(fleet.path, worker=1, workers=2, remote=str(bare)).tick == 1
    cache = fleet.path / ".git" / "fleet" / "workers" / "w1.git"
    (cache / "shallow.lock").write_text("")
    (cache / "refs" / "fleet").mkdir(parents=True, exist_ok=True)
    (cache / "refs" / "fleet" / "main.lock").write_text("")
    merge(fleet.path, tick=1, remote=str(bare))
    assert work(fleet.path, worker=1, workers=2, remote=str(bare)).tick == 2
    assert not list(cache.rglob("*.lock"))
    gitdir = Path(fleet.git.text("rev-parse", "--absolute-git-dir"))
    with Workspace(gitdir, "w1"):
        with pytest.raises(FleetError, match="worker w1 is already working in this clone"):
            Workspace(gitdir, "w1").__enter__()
