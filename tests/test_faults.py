"""Fault injection: kill -9 a worker or the merge at each step, recover, and check
that the state equals an uninterrupted run's, every delta is applied exactly
once, state is valid, and nothing is left behind. Also: concurrent merges, and
a worker whose clock is an hour off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from fleet.commands.init import init
from fleet.faults import ENV
from fleet.git import Git

WORKERS = 2


def fleet_cmd(repo: Path, *args: str, crash: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash:
        env[ENV] = crash
    p = subprocess.run([sys.executable, "-m", "fleet", args[0], "-C", str(repo), *args[1:]],
                       capture_output=True, text=True, env=env)
    if check and not crash:
        assert p.returncode in (0, 3), p.stderr
    assert "Traceback" not in p.stderr
    return p


def make_fleet(tmp: Path, name: str) -> tuple[Path, str]:
    repo = tmp / name
    init(repo)
    bare = tmp / f"{name}-origin.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)
    return repo, bare.as_uri()


def work_all(repo: Path, url: str) -> None:
    for i in range(1, WORKERS + 1):
        fleet_cmd(repo, "work", "--worker", str(i), "--workers", str(WORKERS), "--remote", url)


def merge(repo: Path, url: str) -> subprocess.CompletedProcess:
    return fleet_cmd(repo, "merge", "--remote", url)


def origin_files(url: str) -> dict[str, bytes]:
    """The state on the origin's main, with what differs between equal runs removed:
    ledger and quarantine lines carry random delta ids and wall-clock utc."""
    git = Git(Path(url.removeprefix("file://")))
    entries = git.ls_tree("refs/heads/main", "state/")
    blobs = git.cat_blobs(list(entries.values()))
    out = {}
    for path, sha in entries.items():
        if path.startswith(("state/ledger/", "state/quarantine/")):
            continue
        data = blobs[sha]
        if path == "state/fleet.json":
            doc = orjson.loads(data)
            doc.pop("last_utc")
            data = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        out[path] = data
    return out


def ledger(url: str, tick: int) -> list[dict]:
    """The deltas the origin's main applied for ``tick``."""
    git = Git(Path(url.removeprefix("file://")))
    entries = git.ls_tree("refs/heads/main", f"state/ledger/{tick}/")
    blobs = git.cat_blobs([sha for path, sha in entries.items() if not path.endswith("/_resolutions.jsonl")])
    return [orjson.loads(line) for data in blobs.values() for line in data.splitlines()]


def ledger_ids(url: str, tick: int) -> list[str]:
    return [d["id"] for d in ledger(url, tick)]


def agents_in_ledger(url: str, tick: int) -> list[str]:
    return sorted(d["agent"] for d in ledger(url, tick))


def assert_no_residue(repo: Path, url: str) -> None:
    fleet_dir = repo / ".git" / "fleet"
    tmp = fleet_dir / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), list(tmp.iterdir())
    for cache in (fleet_dir / "workers").glob("*.git"):
        git = Git(cache)
        assert git.text("worktree", "list").count("\n") == 0, git.text("worktree", "list")
        assert git.refs("refs/heads/") == []
        assert git.refs("refs/fleet/scratch/") == []
    assert Git(repo).refs("refs/fleet/scratch/") == []
    assert list(repo.joinpath(".git").rglob("*.lock")) == []
    origin = Git(Path(url.removeprefix("file://")))
    assert origin.refs("refs/heads/fleet/t[0-9]*/*") == [], "worker branches left on the origin"
    assert list(Path(url.removeprefix("file://")).rglob("*.lock")) == []


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """An uninterrupted tick of the same world."""
    tmp = tmp_path_factory.mktemp("reference")
    repo, url = make_fleet(tmp, "ref")
    work_all(repo, url)
    merge(repo, url)
    return origin_files(url)


@pytest.mark.parametrize("point", ["work.after-fetch", "work.during-streams", "work.after-commit", "work.during-push"])
def test_worker_killed_then_recovered(tmp_path: Path, reference: dict[str, bytes], point: str) -> None:
    repo, url = make_fleet(tmp_path, "f")
    killed = fleet_cmd(repo, "work", "--worker", "1", "--workers", str(WORKERS), "--remote", url, crash=point)
    assert killed.returncode == -signal.SIGKILL
    work_all(repo, url)  # the rerun recovers worker 1 (or finds its push landed) and runs worker 2
    assert merge(repo, url).returncode == 0
    assert origin_files(url) == reference
    ids = ledger_ids(url, 1)
    assert len(ids) == len(set(ids)) == 6
    assert agents_in_ledger(url, 1) == ["ada", "basil", "cleo", "dara", "eli", "fen"]
    assert_no_residue(repo, url)
    assert fleet_cmd(repo, "replay", "--remote", url, "--check").returncode == 0


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupt_while_a_worker_cleans_up_waits_for_the_cleanup(tmp_path: Path, sig: str) -> None:
    """A worker that finished its tick just as the run was stopped gets the
    signal while it removes its worktree: it finishes cleaning, then stops."""
    repo, url = make_fleet(tmp_path, "f")
    p = fleet_cmd(repo, "work", "--worker", "1", "--workers", str(WORKERS), "--remote", url,
                  crash=f"work.cleanup:{sig}")
    assert p.returncode == 0, p.stderr  # its tick was delivered: the late signal does not undo that
    assert Git(Path(url.removeprefix("file://"))).refs("refs/heads/fleet/t[0-9]*/*")  # and the branch is there
    tmp = repo / ".git" / "fleet" / "tmp"
    assert not any(tmp.iterdir()), list(tmp.iterdir())
    for cache in (repo / ".git" / "fleet" / "workers").glob("*.git"):
        assert Git(cache).text("worktree", "list").count("\n") == 0


@pytest.mark.parametrize("point", ["merge.before-commit", "merge.after-commit", "merge.during-push", "merge.after-push"])
def test_merge_killed_then_recovered(tmp_path: Path, reference: dict[str, bytes], point: str) -> None:
    repo, url = make_fleet(tmp_path, "f")
    work_all(repo, url)
    killed = fleet_cmd(repo, "merge", "--remote", url, crash=point)
    assert killed.returncode == -signal.SIGKILL
    again = merge(repo, url)
    # If the killed merge's push landed, the rerun finds only duplicates (exit 3)
    # and deletes the merged branches; otherwise it merges the tick itself.
    assert again.returncode in (0, 3)
    assert origin_files(url) == reference
    ids = ledger_ids(url, 1)
    assert len(ids) == len(set(ids)) == 6
    assert_no_residue(repo, url)
    assert fleet_cmd(repo, "replay", "--remote", url, "--check").returncode == 0
    assert "tick" in fleet_cmd(repo, "status", "--remote", url, "--json").stdout


def test_concurrent_merges_apply_each_delta_once(tmp_path: Path) -> None:
    repo, url = make_fleet(tmp_path, "f")
    clones = []
    for i in range(4):
        c = tmp_path / f"merger{i}"
        subprocess.run(["git", "clone", "--quiet", url, str(c)], check=True)
        clones.append(c)
    for tick in (1, 2, 3):
        work_all(repo, url)
        procs = [subprocess.Popen([sys.executable, "-m", "fleet", "merge", "-C", str(c), "--remote", url, "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in clones]
        codes, commits = [], set()
        for p in procs:
            out, err = p.communicate()
            assert "Traceback" not in err
            codes.append(p.returncode)
            if p.returncode == 0:
                commits.add(orjson.loads(out)["commit"])
        assert set(codes) <= {0, 3}, codes
        # One tick commit was written. Two merges that raced on the same input
        # may both build it, byte for byte (the merge is deterministic), and the
        # second push then finds main already there: still a single write.
        assert len(commits) == 1, (codes, commits)
        ids = ledger_ids(url, tick)
        assert len(ids) == len(set(ids)) == 6
        main = Git(Path(url.removeprefix("file://")))
        assert orjson.loads(main.show("refs/heads/main", "state/fleet.json"))["tick"] == tick
    assert fleet_cmd(repo, "replay", "--remote", url, "--check").returncode == 0


def test_worker_with_clock_an_hour_off_lands_in_the_right_tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from fleet import delta
    from fleet.commands.work import work

    repo, url = make_fleet(tmp_path, "f")
    real = delta.utc_now
    skewed = lambda: (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    monkeypatch.setattr(delta, "utc_now", skewed)
    report = work(repo, worker=1, workers=WORKERS, remote=url)
    monkeypatch.setattr(delta, "utc_now", real)
    work(repo, worker=2, workers=WORKERS, remote=url)
    assert report.tick == 1
    assert merge(repo, url).returncode == 0
    git = Git(Path(url.removeprefix("file://")))
    assert orjson.loads(git.show("refs/heads/main", "state/fleet.json"))["tick"] == 1
    assert len(ledger_ids(url, 1)) == 6
    # The next tick is worked and merged normally, whatever the skewed utc said.
    work_all(repo, url)
    assert merge(repo, url).returncode == 0
    assert len(ledger_ids(url, 2)) == 6


def test_worker_refuses_any_tick_but_the_next(tmp_path: Path) -> None:
    repo, url = make_fleet(tmp_path, "f")
    p = fleet_cmd(repo, "work", "--worker", "1", "--workers", "2", "--remote", url, "--tick", "3", check=False)
    assert p.returncode == 1
    assert "main is at tick 0" in p.stderr and p.stderr.count("\n") == 1
    # A second delivery of the same tick by the same worker is refused: exit 3.
    work_all(repo, url)
    again = fleet_cmd(repo, "work", "--worker", "1", "--workers", "2", "--remote", url)
    assert again.returncode == 3 and "already delivered" in again.stderr


def test_late_deltas_are_applied_at_the_next_merge(tmp_path: Path) -> None:
    """The documented rule: a delta whose tick was merged without it is applied
    at the next merge (within limits.window), and counted as late."""
    repo, url = make_fleet(tmp_path, "f")
    fleet_cmd(repo, "work", "--worker", "1", "--workers", "2", "--remote", url)
    assert merge(repo, url).returncode == 0  # tick 1 merged without worker 2
    # worker 2 was slow: it made its tick-1 deltas before tick 1 was merged.
    from fleet import delta as delta_mod
    from fleet.delta import Op
    from fleet.worker import commit_deltas

    # one of the agents whose turn of tick 1 did not come: one that did take it is refused a second
    took = {orjson.loads(line)["agent"] for line in (Git(Path(url.removeprefix("file://"))).show(
        "refs/heads/main", "state/ledger/1/w1.jsonl") or b"").splitlines()}
    agent = next(a for a in sorted(orjson.loads((repo / "state" / "config.json").read_bytes())["agents"])
                 if a not in took)
    late = delta_mod.make(tick=1, worker="w2", stream="s1", agent=agent,
                          ops=[Op("set", "agents", agent, ("bio",), "late but here")])
    clone = tmp_path / "slow"
    subprocess.run(["git", "clone", "--quiet", url, str(clone)], check=True)
    g = Git(clone)
    sha = commit_deltas(g, g.rev_parse("origin/main"), 1, "w2", [late])
    g.run("push", "--quiet", url, f"{sha}:refs/heads/fleet/t1/w2")
    work_all(repo, url)  # tick 2
    out = fleet_cmd(repo, "merge", "--remote", url, "--json")
    report = orjson.loads(out.stdout)
    assert report["tick"] == 2 and report["late"] == 1
    origin = Git(Path(url.removeprefix("file://")))
    assert orjson.loads(origin.show("refs/heads/main", f"state/agents/{agent}.json"))["bio"] == "late but here"
    assert late["id"] in ledger_ids(url, 1)
