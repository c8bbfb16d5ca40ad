"""`fleet run` end to end, as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import Fleet, fleet_cli, run

from fleet.commands.init import init
from fleet.git import Git


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
        p = fleet_cli(repo, "run", "--ticks", str(ticks), "--workers", "2")
        assert p.returncode == 0, p.stderr
        published = origin.rev_parse("refs/heads/main")
        assert user.rev_parse("refs/fleet/origin/main") == published
        assert json.loads(user.show("refs/fleet/origin/main", "state/fleet.json") or b"")["tick"] == tick
        log = subprocess.run(["git", "log", "--format=%s", "refs/fleet/origin/main"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout
        assert log.startswith(f"fleet: tick {tick}:")


def test_uncommitted_edits_under_state_or_schemas_are_named_as_not_used(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    config = json.loads((repo / "state/config.json").read_text())
    config["workers"] = 1
    (repo / "state/config.json").write_text(json.dumps(config))
    (repo / "state/agents/junk.json").write_text("{}")
    p = fleet_cli(repo, "run", "--ticks", "1", "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert "note: 2 file(s) under state/ or schemas/ are changed but not committed, and are not used" in p.stdout
    clean = tmp_path / "y"
    init(clean)
    q = fleet_cli(clean, "run", "--ticks", "1", "--workers", "2")
    assert q.returncode == 0 and "not committed" not in q.stdout + q.stderr


def test_a_deleted_origin_is_rebuilt_from_the_last_view_not_started_over(tmp_path: Path) -> None:
    """`.git/fleet/origin.git` deleted (it sits beside caches): the next run goes on
    from the tick it had reached, with the task queue it tracked, and says so;
    it never seeds a new fleet from your main at tick 1 over the old history."""
    import shutil

    repo = tmp_path / "x"
    init(repo)
    assert fleet_cli(repo, "run", "--ticks", "2", "--workers", "2").returncode == 0
    assert fleet_cli(repo, "task", "add", "One", "--id", "t-one").returncode == 0
    user = Git(repo)
    before = user.rev_parse("refs/fleet/origin/main")
    shutil.rmtree(repo / ".git" / "fleet" / "origin.git")
    p = fleet_cli(repo, "run", "--ticks", "1", "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert "was missing; rebuilt it" in p.stderr and "tick 2" in p.stderr
    assert "created a local bare origin" not in p.stdout + p.stderr
    after = user.rev_parse("refs/fleet/origin/main")
    assert json.loads(user.show(after, "state/fleet.json") or b"")["tick"] == 3
    assert user.proc("merge-base", "--is-ancestor", before, after).returncode == 0  # the history goes on
    listed = fleet_cli(repo, "task", "list", "--json")
    assert listed.returncode == 0 and "t-one" in listed.stdout
    replay = fleet_cli(repo, "replay", "--check")
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_a_view_fetched_from_another_remote_is_never_rebuilt_as_the_origin(tmp_path: Path) -> None:
    """`fleet status --remote X` fetches X's main into the same tracking refs; with
    the origin then deleted, the run once rebuilt X as the fleet (its history gone,
    advice to rebase onto X's commits). It refuses, saying why, and changes nothing."""
    import shutil

    repo = tmp_path / "x"
    init(repo)
    assert fleet_cli(repo, "run", "--ticks", "1", "--workers", "1").returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    o = Git(other)
    o.run("init", "-q", "-b", "main")
    (other / "f").write_text("hi\n")
    o.run("add", "f")
    o.run("-c", "user.name=o", "-c", "user.email=o@x", "commit", "-qm", "other")
    fleet_cli(repo, "status", "--remote", str(other))  # fails (no fleet there) but has fetched
    shutil.rmtree(repo / ".git" / "fleet" / "origin.git")
    p = fleet_cli(repo, "run", "--ticks", "1", "--workers", "1")
    assert p.returncode == 1 and "is no view of this fleet's origin" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (repo / ".git" / "fleet" / "origin.git").exists()


@pytest.mark.parametrize("how", ["path", "name"])
def test_the_first_remote_a_run_is_given_is_where_later_commands_look(tmp_path: Path, how: str) -> None:
    """`fleet run --remote X`, then `fleet status` with no --remote: once, status showed
    the clone's own main at tick 0 beside a fleet at tick 1. The first --remote becomes
    git config fleet.remote (said in a note); a later --remote elsewhere does not move it."""
    repo, bare = tmp_path / "f", tmp_path / "shared.git"
    init(repo)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    remote = str(bare)
    if how == "name":
        subprocess.run(["git", "remote", "add", "fleethub", str(bare)], cwd=repo, check=True)
        remote = "fleethub"
    p = fleet_cli(repo, "run", "--ticks", "1", "--workers", "1", "--remote", remote)
    assert p.returncode == 0, p.stderr
    assert "later fleet commands here use" in p.stdout + p.stderr
    kept = subprocess.run(["git", "config", "fleet.remote"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert kept == (remote if how == "name" else bare.as_uri())
    status = json.loads(fleet_cli(repo, "status", "--json").stdout)
    assert status["tick"] == 1
    elsewhere = tmp_path / "elsewhere.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(bare), str(elsewhere)], check=True)
    p = fleet_cli(repo, "run", "--ticks", "1", "--workers", "1", "--remote", str(elsewhere))
    assert p.returncode == 0 and "later fleet commands" not in p.stdout + p.stderr, p.stderr
    assert subprocess.run(["git", "config", "fleet.remote"], cwd=repo, capture_output=True,
                          text=True).stdout.strip() == kept
    assert json.loads(fleet_cli(repo, "status", "--json").stdout)["tick"] == 1  # still the first fleet


def test_a_clone_of_a_fleet_says_which_fleet_it_runs_and_rebuilds_nothing(tmp_path: Path) -> None:
    """A clone whose status had read origin: its first `fleet run` said it had rebuilt a
    missing origin from that view (there was none) and silently ticked a fork of its own.
    It makes its own origin as every first run does, says so and how to tick origin
    instead, and everything after reads that fleet; `--remote origin` ticks origin's main."""
    seed, bare = tmp_path / "seed", tmp_path / "shared.git"
    init(seed)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
    clones = [tmp_path / "one", tmp_path / "two"]
    for c in clones:
        subprocess.run(["git", "clone", "-q", "-b", "main", str(bare), str(c)], check=True)
        assert json.loads(fleet_cli(c, "status", "--json").stdout)["tick"] == 0  # origin's view, fetched
    p = fleet_cli(clones[0], "run", "--ticks", "1", "--workers", "1")
    said = p.stdout + p.stderr
    assert p.returncode == 0 and "rebuilt" not in said and "missing" not in said, said
    assert "this clone has a remote origin" in said and "--remote origin" in said
    assert json.loads(fleet_cli(clones[0], "status", "--json").stdout)["tick"] == 1  # the fleet it ran
    p = fleet_cli(clones[1], "run", "--ticks", "1", "--workers", "1", "--remote", "origin")
    assert p.returncode == 0 and not (clones[1] / ".git" / "fleet" / "origin.git").exists(), p.stderr
    on_origin = subprocess.run(["git", "show", "main:state/fleet.json"], cwd=bare, capture_output=True,
                               text=True, check=True).stdout
    assert json.loads(on_origin)["tick"] == 1
    assert json.loads(fleet_cli(clones[1], "status", "--json").stdout)["tick"] == 1


@pytest.mark.parametrize("point, published", [("merge.before-commit", False), ("merge.after-push", True)])
def test_an_interrupt_says_whether_the_tick_it_cut_short_was_published(tmp_path: Path, point: str,
                                                                       published: bool) -> None:
    """Ctrl-C after the merge's push: main had moved, and the run said "no tick merged"."""
    import os

    path = tmp_path / "f"
    init(path)
    p = subprocess.run([sys.executable, "-m", "fleet", "run", "--ticks", "1", "--workers", "2", "--json"], cwd=path,
                       capture_output=True, text=True, env=dict(os.environ, FLEET_CRASH_AT=f"{point}:SIGINT"),
                       timeout=300)
    assert p.returncode == 130, p.stderr
    tick = json.loads(Git(path / ".git" / "fleet" / "origin.git").show("main", "state/fleet.json") or b"{}")["tick"]
    assert tick == (1 if published else 0)
    assert json.loads(p.stdout)["published_before_interrupt"] == (1 if published else None)


def _two_clones(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A fleet made by init (its seed), served by one bare origin, and two clones of it."""
    seed, bare = tmp_path / "seed", tmp_path / "shared.git"
    init(seed)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
    one, two = tmp_path / "one", tmp_path / "two"
    for c in (one, two):
        subprocess.run(["git", "clone", "-q", "-b", "main", str(bare), str(c)], check=True)
    return seed, one, two


def test_of_two_clones_running_one_origin_one_starts_a_tick_and_the_other_spends_nothing(tmp_path: Path) -> None:
    """Two `fleet run`s on one origin both ran every turn of a tick, and the one whose merge
    lost kept none of them. A run records its start on fleet/clock as a workflow's plan job
    does: while one holds the tick, the other starts nothing and says who holds it; the
    holder, interrupted and run again in its clone, takes its own start over."""
    import os

    seed, one, two = _two_clones(tmp_path)
    args = ["run", "--ticks", "1", "--workers", "2", "--remote", "origin", "--json"]
    p = subprocess.run([sys.executable, "-m", "fleet", *args], cwd=one, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, FLEET_CRASH_AT="merge.before-commit:SIGINT"))
    assert p.returncode == 130, p.stderr  # tick 1 started by one, its turns done, not merged
    p = fleet_cli(two, *args)
    assert p.returncode == 3 and json.loads(p.stdout)["ticks"] == [], p.stdout
    assert "tick 1 did not start: it is under way, fleet run on " in json.loads(p.stdout)["stopped"]
    p = fleet_cli(one, *args)
    assert p.returncode == 0 and [t["tick"] for t in json.loads(p.stdout)["ticks"]] == [1], p.stderr
    p = fleet_cli(two, *args)  # tick 1 merged: two may start tick 2
    assert p.returncode == 0 and [t["tick"] for t in json.loads(p.stdout)["ticks"]] == [2], p.stderr


def test_a_reader_that_leaves_does_not_stop_the_run(tmp_path: Path) -> None:
    """`fleet run --ticks 2 | head -1`: the run ended after its first line with
    exit 1 and nothing said; the ticks now go on, merged as ever, unseen."""
    repo = tmp_path / "x"
    init(repo)
    p = subprocess.Popen([sys.executable, "-m", "fleet", "run", "--ticks", "2", "--workers", "1"], cwd=repo,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline()
    p.stdout.close()  # the reader leaves
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0 and b"Traceback" not in err, err
    assert json.loads(Git(repo).show("refs/fleet/origin/main", "state/fleet.json") or b"")["tick"] == 2


def test_a_deadline_no_worker_can_meet_is_named_as_the_reason(tmp_path: Path) -> None:
    """--deadline 0.001 (no worker process even starts in that time): the run said
    "no worker said why"; it names the deadline, and merges nothing."""
    repo = tmp_path / "x"
    init(repo)
    p = fleet_cli(repo, "run", "--ticks", "1", "--workers", "2", "--deadline", "0.001")
    assert p.returncode == 1 and "the deadline of 0.001s passed before any worker finished" in p.stderr, p.stderr


def test_a_run_that_failed_with_nothing_delivered_releases_its_start(tmp_path: Path) -> None:
    """A run whose workers all missed the deadline held tick 1 on fleet/clock for its whole
    lease: `fleet status` called it under way and another clone could not start it for
    half an hour. Now the failed run releases its start: the other clone starts the tick
    at once, and no turn is lost or run twice."""
    seed, one, two = _two_clones(tmp_path)
    p = fleet_cli(one, "run", "--ticks", "1", "--workers", "2", "--remote", "origin", "--deadline", "0.001")
    assert p.returncode == 1 and "its start is released on fleet/clock" in p.stderr, p.stderr
    status = json.loads(fleet_cli(two, "status", "--remote", "origin", "--json").stdout)
    assert "under way" not in json.dumps(status), status
    p = fleet_cli(two, "run", "--ticks", "1", "--workers", "2", "--remote", "origin", "--json")
    assert p.returncode == 0 and [t["tick"] for t in json.loads(p.stdout)["ticks"]] == [1], p.stdout + p.stderr
    agents = json.loads((seed / "state/config.json").read_text())["agents"]
    assert json.loads(p.stdout)["ticks"][0]["applied"] + json.loads(p.stdout)["ticks"][0]["noop"] == len(agents)


def test_run_three_ticks_replays_and_leaves_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    genesis = Git(repo).rev_parse("HEAD")
    p = fleet_cli(repo, "run", "--ticks", "3", "--workers", "3")
    assert p.returncode == 0, p.stderr
    assert "created a local bare origin" in p.stdout and ".git/fleet/origin.git" in p.stdout
    status = json.loads(fleet_cli(repo, "status", "--json").stdout)
    assert status["tick"] == 3
    assert status["totals"]["applied"] == 18  # 6 agents x 3 ticks, one delta each
    assert status["totals"]["usage"]["input_tokens"] > 0
    assert fleet_cli(repo, "replay", "--check").returncode == 0
    assert Git(repo).rev_parse("HEAD") == genesis  # the user's checkout did not move
    assert_clean(repo)
    origin = Git(repo / ".git" / "fleet" / "origin.git")
    assert origin.refs("refs/heads/fleet/t[0-9]*/*") == []  # no worker branch left
    # The next run resumes at tick 4.
    assert fleet_cli(repo, "run", "--ticks", "1", "--workers", "2", "--json").returncode == 0
    assert json.loads(fleet_cli(repo, "status", "--json").stdout)["tick"] == 4


def test_run_coalesced_pushes_only_main(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    p = fleet_cli(repo, "run", "--ticks", "2", "--workers", "3", "--push", "coalesced", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert [t["mode"] for t in report["ticks"]] == ["coalesced", "coalesced"]
    assert report["applied"] == 12
    origin = Git(repo / ".git" / "fleet" / "origin.git")
    assert origin.refs("refs/heads/fleet/t[0-9]*/*") == []  # no worker branch left
    # beside main, only its field index, pushed with it (fleet.fieldindex), and the start record of each tick
    assert [r.name for r in origin.refs("refs/heads/")] == ["refs/heads/fleet/clock", "refs/heads/fleet/index/main",
                                                           "refs/heads/main"]
    reflog = origin.proc("reflog", "show", "main").stdout
    assert fleet_cli(repo, "replay", "--check").returncode == 0
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
    p = fleet_cli(repo, "run", "--ticks", "1", "--workers", "3", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["tick"] == stopped + 1
    assert fleet_cli(repo, "replay", "--check").returncode == 0
    assert_clean(repo)


def test_a_change_committed_on_your_own_main_is_not_ignored(tmp_path: Path) -> None:
    """After `fleet run` made its origin, the fleet's main moves on there. A
    config change committed on your main behind it is refused with the way
    out; put on top of the fleet's main, it becomes the fleet's main."""
    repo = tmp_path / "x"
    init(repo)
    assert fleet_cli(repo, "run", "--ticks", "2").returncode == 0
    cfg = json.loads((repo / "state/config.json").read_text())
    cfg["run"]["workers"] = 3
    (repo / "state/config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    g = ["git", "-c", "user.name=t", "-c", "user.email=t@x", "-c", "commit.gpgsign=false"]
    subprocess.run([*g, "commit", "-qam", "three workers"], cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "1")
    assert p.returncode == 1
    assert "your main has 1 commit(s) the fleet's main lacks" in p.stderr
    assert "git rebase refs/fleet/origin/main main" in p.stderr
    subprocess.run([*g, "rebase", "-q", "refs/fleet/origin/main", "main"], cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "1", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["local_main"].startswith("your main's 1 new commit(s) are now the fleet's main")
    assert out["ticks"][0]["workers"] == 3 and out["tick"] == 3
    assert fleet_cli(repo, "replay", "--check").returncode == 0


def test_with_a_remote_of_your_own_a_change_not_pushed_is_named(tmp_path: Path) -> None:
    """With `--remote`, your main is not the fleet's: a config change you committed
    and did not push is not used, and the run says so (once, silently ignored)."""
    seed = tmp_path / "seed"
    init(seed)
    origin = tmp_path / "o.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(origin)], check=True)
    repo = tmp_path / "c"
    subprocess.run(["git", "clone", "-q", str(origin), str(repo)], check=True)
    assert fleet_cli(repo, "run", "--ticks", "1", "--remote", str(origin)).returncode == 0
    subprocess.run(["git", "pull", "-q", "--ff-only"], cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "1", "--remote", str(origin), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["local_main"] is None  # nothing of yours the fleet lacks
    cfg = json.loads((repo / "state/config.json").read_text())
    cfg["run"]["workers"] = 3
    (repo / "state/config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    g = ["git", "-c", "user.name=t", "-c", "user.email=t@x", "-c", "commit.gpgsign=false"]
    subprocess.run([*g, "commit", "-qam", "three workers"], cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "1", "--remote", str(origin), "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert "your main has 1 commit(s) changing state/ or schemas/ that the fleet's main on its remote lacks" \
        in out["local_main"]
    assert str(origin) not in out["local_main"]  # a remote's address may hold a key: never in the note
    assert out["ticks"][0]["workers"] != 3


def test_a_plain_repository_gets_a_clear_error_and_no_half_made_origin(tmp_path: Path) -> None:
    repo = tmp_path / "plain"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=repo, check=True)
    p = fleet_cli(repo, "run")
    assert p.returncode == 1 and "main has no state/config.json; is this a fleet repository?" in p.stderr
    assert p.stdout == ""
    assert not (repo / ".git" / "fleet" / "origin.git").exists()
    assert not (repo / ".git" / "fleet").exists()  # not even its lock: a failed run leaves nothing
    assert subprocess.run(["git", "config", "fleet.remote"], cwd=repo, capture_output=True).stdout == b""


def test_runs_racing_for_the_lock_never_run_at_once(tmp_path: Path) -> None:
    """The lock file is removed when a run ends (so none is left behind): a run that
    opened the old file as it went holds nothing, and opens the new one. Runs started
    together each either tick alone or say another run is running: main's tick counts
    exactly the runs that said they ran."""
    repo = tmp_path / "x"
    init(repo)
    procs = [subprocess.Popen([sys.executable, "-m", "fleet", "run", "--ticks", "1", "--json"], cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    ran = [o for (o, _), p in zip(outs, procs) if p.returncode == 0]
    for (_, err), p in zip(outs, procs):
        assert p.returncode == 0 or "another `fleet run`" in err, err
    assert ran
    ticks = sorted(t["tick"] for o in ran for t in json.loads(o)["ticks"])
    assert ticks == list(range(1, len(ran) + 1)), ticks  # one tick each, one after another
    assert not (repo / ".git" / "fleet" / "run.pid").exists()


def test_one_run_at_a_time_in_a_repository(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    first = subprocess.Popen([sys.executable, "-m", "fleet", "run", "--ticks", "30"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = repo / ".git" / "fleet" / "run.pid"
    deadline = time.monotonic() + 30
    while str(first.pid) not in (lock.read_text() if lock.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    second = fleet_cli(repo, "run", "--ticks", "1")
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
    assert fleet_cli(repo, "run", "--ticks", "1").returncode == 0


# -- a person's commit on main: checked before it is adopted; a tick never advances on nothing --

G = ["git", "-c", "user.name=p", "-c", "user.email=p@x", "-c", "commit.gpgsign=false"]


@pytest.fixture(scope="module")
def ran_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fleet that ran one tick, with your main moved up to the fleet's main
    (as `git rebase refs/fleet/origin/main main` does), ready for a person's commit."""
    repo = tmp_path_factory.mktemp("ran") / "x"
    init(repo)
    assert fleet_cli(repo, "run", "--ticks", "1").returncode == 0
    subprocess.run(["git", "fetch", "-q", ".git/fleet/origin.git", "+main:refs/fleet/origin/main"], cwd=repo, check=True)
    subprocess.run(["git", "reset", "-q", "--hard", "refs/fleet/origin/main"], cwd=repo, check=True)
    return repo


def _copy(ran_once: Path, tmp_path: Path) -> Path:
    import shutil

    repo = tmp_path / "x"
    shutil.copytree(ran_once, repo, symlinks=True)  # fleet.remote=embedded: the copy finds its own origin
    return repo


def _origin_main(repo: Path) -> str:
    return Git(repo / ".git" / "fleet" / "origin.git").text("rev-parse", "main")


def _doc(repo: Path, rel: str) -> dict:
    return json.loads((repo / rel).read_text())


def _write(repo: Path, rel: str, data: bytes | dict) -> None:
    (repo / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo / rel).write_bytes(data if isinstance(data, bytes) else
                             (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _bad_json(repo: Path) -> str:
    _write(repo, "state/posts/ada-1.json", b'{"id": "ada-1", "title": x}\n')
    return "state/posts/ada-1.json: malformed JSON"


def _bom(repo: Path) -> str:
    _write(repo, "state/posts/ada-1.json", b"\xef\xbb\xbf" + (repo / "state/posts/ada-1.json").read_bytes())
    return "state/posts/ada-1.json: starts with a byte-order mark"


def _schema(repo: Path) -> str:
    doc = _doc(repo, "state/posts/ada-1.json")
    doc["score"] = "lots"
    _write(repo, "state/posts/ada-1.json", doc)
    return "state/posts/ada-1.json: at /score: "


def _collection(repo: Path) -> str:
    _write(repo, "state/widgets/w-1.json", {"id": "w-1"})
    return "state/widgets/w-1.json: folder state/widgets/ is not a collection in state/config.json"


def _id(repo: Path) -> str:
    doc = _doc(repo, "state/posts/ada-1.json")
    _write(repo, "state/posts/ada-9.json", doc)
    return "state/posts/ada-9.json: its 'id' must be 'ada-9', the file's name"


def _schema_change(repo: Path) -> str:  # new rules make an old document invalid
    schema = _doc(repo, "schemas/post.schema.json")
    schema.setdefault("required", []).append("subtitle")
    _write(repo, "schemas/post.schema.json", schema)
    return "state/posts/"


def _config(repo: Path) -> str:
    _write(repo, "state/config.json", b"{")
    return "state/config.json: malformed JSON"


def _clock(repo: Path) -> str:
    doc = _doc(repo, "state/fleet.json")
    doc["tick"] = 7
    _write(repo, "state/fleet.json", doc)
    return "state/fleet.json: the clock and totals are written only by the merge engine"


def _ledger(repo: Path) -> str:
    [path] = sorted((repo / "state/ledger/1").glob("w1.jsonl"))
    path.write_bytes(path.read_bytes().splitlines(keepends=True)[0])
    return "state/ledger/1/w1.jsonl: the ledger is written only by the merge engine"


def _quarantine(repo: Path) -> str:
    _write(repo, "state/quarantine/1/w1.jsonl", b'{"reason":"made up"}\n')
    return "state/quarantine/1/w1.jsonl: the quarantine is written only by the merge engine"


@pytest.mark.parametrize("spoil", [_bad_json, _bom, _schema, _collection, _id, _schema_change, _config, _clock,
                                   _ledger, _quarantine])
def test_a_persons_commit_is_checked_before_it_becomes_the_fleets_main(ran_once: Path, tmp_path: Path,
                                                                      spoil: Any) -> None:
    repo = _copy(ran_once, tmp_path)
    before = _origin_main(repo)
    expected = spoil(repo)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*G, "commit", "-qm", "by hand"], cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "2")
    assert p.returncode == 1, p.stdout + p.stderr
    [line] = p.stderr.splitlines()  # one line, naming the file and the rule
    assert line.startswith(f"fleet: {expected}"), line
    assert "not adopted" in line and "internal error" not in line
    assert _origin_main(repo) == before  # nothing adopted, no tick run


@pytest.mark.parametrize("kind", ["symbolic link", "submodule (gitlink)"])
@pytest.mark.parametrize("where", ["state/agents/ada.json", "state/agents/new.json", "state/config.json",
                                   "schemas/agent.schema.json", "state/agents/deeper/x", "state/brand-new"])
def test_a_link_or_a_submodule_in_a_persons_commit_is_refused_as_what_it_is(ran_once: Path, tmp_path: Path,
                                                                            kind: str, where: str) -> None:
    """Whatever the path (a document, the config, a schema, a new folder), a
    symbolic link or a gitlink is named as one, never read as a document and
    never adopted; on a first run it never seeds the fleet either."""
    import os
    import shutil

    repo = _copy(ran_once, tmp_path)
    before = _origin_main(repo)
    target = repo / where
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        subprocess.run(["git", "rm", "-q", where], cwd=repo, check=True)
    if kind == "symbolic link":
        os.symlink("/etc/passwd", target)
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    else:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        subprocess.run(["git", "update-index", "--add", "--cacheinfo", f"160000,{head},{where}"], cwd=repo, check=True)
    subprocess.run([*G, "commit", "-qm", "by hand"], cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "1")
    assert p.returncode == 1, p.stdout + p.stderr
    [line] = p.stderr.splitlines()
    assert line.startswith(f"fleet: {where}: is a {kind}; state/ and schemas/ hold regular files only"), line
    assert _origin_main(repo) == before
    # the same commit as the genesis of a new fleet: refused before any origin is made
    shutil.rmtree(repo / ".git" / "fleet")
    for ref in subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/fleet/"], cwd=repo,
                              capture_output=True, text=True).stdout.split():
        subprocess.run(["git", "update-ref", "-d", ref], cwd=repo, check=True)
    subprocess.run(["git", "config", "--unset", "fleet.remote"], cwd=repo, check=True)
    first = fleet_cli(repo, "run", "--ticks", "1")
    assert first.returncode == 1 and f"{where}: is a {kind}" in first.stderr, first.stderr
    assert not (repo / ".git" / "fleet" / "origin.git").exists()


@pytest.mark.parametrize("message", [
    "looks merged\n\nFleet-Tick: 2",
    "fleet: tick 12: 0 applied\n\nFleet-Tick: 12\nFleet-Tick: 12",  # twice: no trailer to the reader, still a forgery
    "fleet: tick 12\n\nfleet-tick: 12\n\nSigned-off-by: p <p@x>",
])
def test_a_commit_claiming_to_be_a_tick_is_not_adopted(ran_once: Path, tmp_path: Path, message: str) -> None:
    repo = _copy(ran_once, tmp_path)
    before = _origin_main(repo)
    subprocess.run([*G, "commit", "-q", "--allow-empty", "-m", message], cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "1")
    assert p.returncode == 1 and "only the merge engine makes tick commits; not adopted" in p.stderr, p.stderr
    assert _origin_main(repo) == before


def test_a_valid_persons_commit_is_adopted_and_named(ran_once: Path, tmp_path: Path) -> None:
    repo = _copy(ran_once, tmp_path)
    doc = _doc(repo, "state/posts/ada-1.json")
    doc["title"] = "Edited by a person"
    _write(repo, "state/posts/ada-1.json", doc)
    subprocess.run([*G, "commit", "-qam", "fix a title"], cwd=repo, check=True)
    mine = Git(repo).rev_parse("HEAD")
    p = fleet_cli(repo, "run", "--ticks", "1")
    assert p.returncode == 0, p.stderr
    assert _origin_main(repo) != mine and Git(repo / ".git/fleet/origin.git").text("rev-parse", "main^") == mine
    r = fleet_cli(repo, "replay", "--check")  # an input, but never a silent one
    assert r.returncode == 0
    assert f"outside the merge engine: commit {mine[:12]} by p <p@x>" in r.stdout
    assert "'fix a title'): modified state/posts/ada-1.json" in r.stdout


def test_your_main_is_checked_before_it_seeds_the_fleet(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    _bad_json(repo)
    subprocess.run([*G, "commit", "-qam", "by hand"], cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "1")
    assert p.returncode == 1
    [line] = p.stderr.splitlines()
    assert line.startswith("fleet: state/posts/ada-1.json: malformed JSON") and "does not become the fleet's" in line
    assert not (repo / ".git" / "fleet" / "origin.git").exists()


@pytest.mark.parametrize("spoil", [_bad_json, _id, _schema])
def test_a_refused_push_to_the_fleets_main_stops_the_run_in_one_line(ran_once: Path, tmp_path: Path,
                                                                     spoil: Any) -> None:
    """A person's push straight to the fleet's main (a remote that fleet does not
    guard) is judged as a local main is before it is adopted: `fleet run` names the
    file, the rule and the commit to revert, in one line, before any worker starts;
    exit 1, and main does not advance."""
    repo = _copy(ran_once, tmp_path)
    expected = spoil(repo)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*G, "commit", "-qm", "pushed by hand"], cwd=repo, check=True)
    subprocess.run(["git", "push", "-q", ".git/fleet/origin.git", "main:main"], cwd=repo, check=True)
    pushed = _origin_main(repo)
    p = fleet_cli(repo, "run", "--ticks", "2", "--workers", "2")
    assert p.returncode == 1, p.stdout + p.stderr
    [line] = p.stderr.splitlines()
    assert line.startswith(f"fleet: {expected}") and f"commit {pushed[:12]}" in line, line
    assert f"git revert {pushed[:12]}" in line and "nothing was merged" in line
    assert "tick 2:" not in p.stdout and "tick 3:" not in p.stdout
    assert _origin_main(repo) == pushed  # no tick commit
    status = json.loads(fleet_cli(repo, "status", "--json").stdout)
    assert status["tick"] == 1 and status["refused"]["commit"] == pushed
    assert {w["status"] for w in status["workers"]} == {"alive"}


def test_a_spent_day_budget_stops_the_run_before_the_next_tick_and_keeps_what_ran(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    cfg = json.loads((repo / "state" / "config.json").read_text())
    cfg["budgets"]["day"] = {"tokens": 100}  # one tick of the offline provider spends more
    (repo / "state" / "config.json").write_text(json.dumps(cfg, indent=2))
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "a day budget"],
                   cwd=repo, check=True)
    p = fleet_cli(repo, "run", "--ticks", "3", "--workers", "2", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert [t["tick"] for t in r["ticks"]] == [1]  # the first tick ran and is merged; the second never started
    assert r["stopped"].startswith("tick 2 did not start: budgets.day is spent (")
    assert "of 100 tokens since " in r["stopped"] and "midnight UTC" in r["stopped"]
    origin = Git(repo / ".git" / "fleet" / "origin.git")
    assert json.loads(origin.show("refs/heads/main", "state/fleet.json"))["tick"] == 1
    again = fleet_cli(repo, "run", "--ticks", "1")
    assert again.returncode == 3 and "stopped: tick 2 did not start: budgets.day is spent" in again.stdout + again.stderr
    plan = fleet_cli(repo, "plan", "--json")
    assert plan.returncode == 3 and json.loads(plan.stdout)["reason"] == "budget"


def test_more_workers_than_the_agents_spread_says_why_fewer_ran(tmp_path: Path) -> None:
    """Issue 14: six agents hashed over nine workers leave some workers without an agent."""
    repo = tmp_path / "x"
    init(repo)
    p = fleet_cli(repo, "run", "--ticks", "1", "--workers", "9")
    assert p.returncode == 0, p.stderr
    [line] = [ln for ln in p.stdout.splitlines() if ln.startswith("note: ") and "workers asked for ran" in ln]
    ran = int(line.split()[1])
    assert ran < 9 and f"note: {ran} of the 9 workers asked for ran: agents are spread over workers by hashing" in line
    for what in ("applied", "no-op", "held for a person", "quarantined", "tokens", "cost"):
        assert what in p.stdout


@pytest.mark.parametrize("link, target", [("state/posts/x.json", "/etc/passwd"),
                                          ("state/posts/ada-1.json", "../../schemas/config.schema.json"),
                                          ("schemas/evil.json", "/etc/hostname")])
def test_the_first_run_names_a_committed_symbolic_link_as_one(fleet: Fleet, link: str, target: str) -> None:
    """The embedded origin's seeding checks your main as `fleet validate` does: a link
    was read as its target's name and reported as 'malformed JSON'."""
    import os
    import subprocess

    p = fleet.path / link
    p.unlink(missing_ok=True)
    os.symlink(target, p)
    subprocess.run(["git", "add", link], cwd=fleet.path, check=True)
    subprocess.run(["git", "-c", "user.name=P", "-c", "user.email=p@x", "commit", "-qm", "a link"], cwd=fleet.path,
                   check=True)
    r = run(fleet, "run", "--ticks", "1", code=1)
    [line] = r.output.strip().splitlines()
    assert line.startswith(f"fleet: {link}: is a symbolic link; state/ and schemas/ hold regular files only"), line
    assert "malformed JSON" not in line
    assert not (fleet.path / ".git/fleet/origin.git/HEAD").exists()  # nothing seeded


def test_a_tick_another_run_merged_first_is_said_so_not_reported_as_merged(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs on one origin: the one whose merge came second printed '2/2 workers
    delivered ... 0 applied' and 'merged' as if it had merged its tick. The other
    run's merge here is a real `fleet merge` of a clone, between this run's workers
    and its merge."""
    from fleet.commands import run as run_mod

    repo = tmp_path / "x"
    init(repo)
    assert fleet_cli(repo, "run", "--ticks", "1").returncode == 0
    origin = repo / ".git" / "fleet" / "origin.git"
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "--quiet", str(origin), str(other)], check=True)
    real = run_mod.merge

    def merge_after_the_other_run(*args: Any, **kw: Any) -> Any:
        done = fleet_cli(other, "merge", "--tick", "2")  # the other run's merge of the same tick, first
        assert done.returncode == 0, done.stderr
        return real(*args, **kw)

    monkeypatch.setattr(run_mod, "merge", merge_after_the_other_run)
    seen: list[Any] = []
    report = run_mod.run(repo, ticks=1, on_tick=seen.append)
    assert [t.tick for t in report.ticks] == [2] and report.ticks[0].merged_by, report.ticks
    assert "another run merged tick 2 first" in report.ticks[0].merged_by
    assert json.loads(Git(origin).show("refs/heads/main", "state/fleet.json") or b"")["tick"] == 2
