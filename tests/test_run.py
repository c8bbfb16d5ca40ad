"""`fleet run`, `fleet plan` and `fleet work` end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.commands.init import init
from fleet.git import Git
from fleet.plan import assign


def fleet(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "fleet", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    assert "Traceback" not in p.stdout + p.stderr
    return p


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def assert_clean(repo: Path) -> None:
    fleet_dir = repo / ".git" / "fleet"
    left = sorted(str(p.relative_to(fleet_dir)) for p in (fleet_dir / "tmp").rglob("*"))
    assert not left, left
    for cache in (fleet_dir / "workers").glob("*.git"):
        git = Git(cache)
        assert "\n" not in git.text("worktree", "list")
        assert git.refs("refs/heads/") == []
    assert list((repo / ".git").rglob("*.lock")) == []
    assert Git(repo).text("status", "--porcelain") == ""
    assert Git(repo).text("worktree", "list").count("\n") == 0


def test_run_leaves_refs_fleet_origin_main_at_the_published_main(tmp_path: Path) -> None:
    """The README's Quickstart says to inspect refs/fleet/origin/main: it is there
    right after the first run, and at the tick each later run published."""
    repo = tmp_path / "x"
    init(repo)
    user, origin = Git(repo), Git(repo / ".git" / "fleet" / "origin.git")
    for ticks, tick in ((1, 1), (2, 3)):
        p = fleet(repo, "run", "--ticks", str(ticks), "--workers", "2")
        assert p.returncode == 0, p.stderr
        published = origin.rev_parse("refs/heads/main")
        assert user.rev_parse("refs/fleet/origin/main") == published
        assert json.loads(user.show("refs/fleet/origin/main", "state/fleet.json") or b"")["tick"] == tick
        log = subprocess.run(["git", "log", "--format=%s", "refs/fleet/origin/main"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout
        assert log.startswith(f"fleet: tick {tick}:")


def test_run_three_ticks_replays_and_leaves_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    genesis = Git(repo).rev_parse("HEAD")
    p = fleet(repo, "run", "--ticks", "3", "--workers", "3")
    assert p.returncode == 0, p.stderr
    assert "created a local bare origin" in p.stdout and ".git/fleet/origin.git" in p.stdout
    status = json.loads(fleet(repo, "status", "--json").stdout)
    assert status["tick"] == 3
    assert status["totals"]["applied"] == 18  # 6 agents x 3 ticks, one delta each
    assert status["totals"]["usage"]["input_tokens"] > 0
    assert fleet(repo, "replay", "--check").returncode == 0
    assert Git(repo).rev_parse("HEAD") == genesis  # the user's checkout did not move
    assert_clean(repo)
    origin = Git(repo / ".git" / "fleet" / "origin.git")
    assert origin.refs("refs/heads/fleet/") == []
    # The next run resumes at tick 4.
    assert fleet(repo, "run", "--ticks", "1", "--workers", "2", "--json").returncode == 0
    assert json.loads(fleet(repo, "status", "--json").stdout)["tick"] == 4


def test_run_coalesced_pushes_only_main(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    p = fleet(repo, "run", "--ticks", "2", "--workers", "3", "--push", "coalesced", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert [t["mode"] for t in report["ticks"]] == ["coalesced", "coalesced"]
    assert report["applied"] == 12
    origin = Git(repo / ".git" / "fleet" / "origin.git")
    assert origin.refs("refs/heads/fleet/") == []
    reflog = origin.proc("reflog", "show", "main").stdout
    assert fleet(repo, "replay", "--check").returncode == 0
    assert reflog is not None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_leaves_nothing_behind_and_the_next_run_resumes(tmp_path: Path, sig: int) -> None:
    repo = tmp_path / "x"
    init(repo)
    proc = subprocess.Popen([sys.executable, "-m", "fleet", "run", "--ticks", "200", "--workers", "3"],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    origin = repo / ".git" / "fleet" / "origin.git"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until tick 2 is merged and tick 3 is under way
        data = Git(origin).show("refs/heads/main", "state/fleet.json") if (origin / "HEAD").exists() else None
        if data and orjson.loads(data)["tick"] >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    kids = children_of(proc.pid)
    proc.send_signal(sig)  # SIGTERM (kill, a service manager) stops the workers just as Ctrl-C does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    for pid in kids:  # no worker outlives the run
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert_clean(repo)
    stopped = orjson.loads(Git(origin).show("refs/heads/main", "state/fleet.json"))["tick"]
    p = fleet(repo, "run", "--ticks", "1", "--workers", "3", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["tick"] == stopped + 1
    assert fleet(repo, "replay", "--check").returncode == 0
    assert_clean(repo)


def test_plan_is_json_for_from_json(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    p = fleet(repo, "plan", "--workers", "3", "--json")
    plan = json.loads(p.stdout)
    assert plan["tick"] == 1 and plan["push"] == "direct"
    agents = sorted(a for v in plan["assignment"].values() for a in v)
    assert agents == ["ada", "basil", "cleo", "dara", "eli", "fen"]
    assert all({"worker", "name", "agents"} <= set(i) for i in plan["matrix"]["include"])
    matrix = json.loads(fleet(repo, "plan", "--workers", "3", "--matrix").stdout)
    assert matrix == plan["matrix"]
    assert json.loads(fleet(repo, "plan", "--workers", "40", "--json").stdout)["push"] == "coalesced"
    bad = fleet(repo, "plan", "--workers", "300")
    assert bad.returncode == 2 and "256" in bad.stderr


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text("abcdefghij0123456789-", min_size=1, max_size=12), min_size=1, max_size=80, unique=True),
       st.integers(1, 40))
def test_adding_a_worker_moves_only_its_share(agents: list[str], workers: int) -> None:
    before = assign(agents, workers)
    after = assign(agents, workers + 1)
    new = f"w{workers + 1}"
    for name, mine in before.items():
        moved = set(mine) - set(after[name])
        assert moved <= set(after[new])  # whoever moved, moved to the new worker
    assert sorted(a for v in after.values() for a in v) == sorted(agents)


def test_work_outbox_hands_files_to_merge_inbox(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    bare = tmp_path / "o.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)
    outbox = tmp_path / "outbox"
    for i in (1, 2):
        p = fleet(repo, "work", "--worker", str(i), "--workers", "2", "--remote", str(bare), "--outbox", str(outbox))
        assert p.returncode == 0, p.stderr
    assert Git(bare).refs("refs/heads/fleet/") == []  # nothing pushed by workers
    assert len(list(outbox.rglob("*.json"))) == 6
    m = fleet(repo, "merge", "--remote", str(bare), "--inbox", str(outbox), "--json")
    assert m.returncode == 0, m.stderr
    assert json.loads(m.stdout)["applied"] == 6
    assert list(outbox.rglob("*.json")) == []


def test_worker_failure_publishes_explicit_empty_deltas(tmp_path: Path) -> None:
    """A worker out of time publishes the error as an empty delta, never a partial one."""
    repo = tmp_path / "x"
    init(repo)
    bare = tmp_path / "o.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)
    p = fleet(repo, "work", "--worker", "1", "--workers", "1", "--remote", str(bare), "--timeout", "0", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["errors"] == 6
    m = json.loads(fleet(repo, "merge", "--remote", str(bare), "--json").stdout)
    assert m["applied"] == 6 and m["docs_changed"] == 0
    env = dict(os.environ)
    assert env is not None


def test_a_change_committed_on_your_own_main_is_not_ignored(tmp_path: Path) -> None:
    """After `fleet run` made its origin, the fleet's main moves on there. A
    config change committed on your main behind it is refused with the way
    out; put on top of the fleet's main, it becomes the fleet's main."""
    repo = tmp_path / "x"
    init(repo)
    assert fleet(repo, "run", "--ticks", "2").returncode == 0
    cfg = json.loads((repo / "state/config.json").read_text())
    cfg["run"]["workers"] = 3
    (repo / "state/config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    g = ["git", "-c", "user.name=t", "-c", "user.email=t@x", "-c", "commit.gpgsign=false"]
    subprocess.run([*g, "commit", "-qam", "three workers"], cwd=repo, check=True)
    p = fleet(repo, "run", "--ticks", "1")
    assert p.returncode == 1
    assert "your main has 1 commit(s) the fleet's main lacks" in p.stderr
    assert "git rebase refs/fleet/origin/main main" in p.stderr
    subprocess.run([*g, "rebase", "-q", "refs/fleet/origin/main", "main"], cwd=repo, check=True)
    p = fleet(repo, "run", "--ticks", "1", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["local_main"].startswith("your main's 1 new commit(s) are now the fleet's main")
    assert out["ticks"][0]["workers"] == 3 and out["tick"] == 3
    assert fleet(repo, "replay", "--check").returncode == 0


def test_a_plain_repository_gets_a_clear_error_and_no_half_made_origin(tmp_path: Path) -> None:
    repo = tmp_path / "plain"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=repo, check=True)
    p = fleet(repo, "run")
    assert p.returncode == 1 and "main has no state/config.json; is this a fleet repository?" in p.stderr
    assert p.stdout == ""
    assert not (repo / ".git" / "fleet" / "origin.git").exists()
    assert subprocess.run(["git", "config", "fleet.remote"], cwd=repo, capture_output=True).stdout == b""


def test_one_run_at_a_time_in_a_repository(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    first = subprocess.Popen([sys.executable, "-m", "fleet", "run", "--ticks", "30"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = repo / ".git" / "fleet" / "run.pid"
    deadline = time.monotonic() + 30
    while str(first.pid) not in (lock.read_text() if lock.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    second = fleet(repo, "run", "--ticks", "1")
    first.send_signal(signal.SIGINT)
    first.wait(timeout=60)
    assert second.returncode == 1 and f"another `fleet run` (pid {first.pid}) is running" in second.stderr
    # a run killed -9 holds nothing: the kernel dropped its lock with it
    killed = subprocess.Popen([sys.executable, "-m", "fleet", "run", "--ticks", "30"], cwd=repo,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while str(killed.pid) not in (lock.read_text() if lock.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.kill()
    killed.wait()
    assert fleet(repo, "run", "--ticks", "1").returncode == 0
