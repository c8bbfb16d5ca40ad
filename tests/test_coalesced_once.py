"""Coalesced mode hands each turn over once: a worker run again (or killed and run
again) before the merge does only the turns still missing from the outbox, and
`fleet run` interrupted before its merge leaves its workers' deltas in its outbox
(.git/fleet/outbox) for the next run, which merges them without running them again.

Once, a rerun handed every turn over twice (new delta ids each run: the merge, which
knows a delta by its id, applied both), and an interrupted run deleted its outbox:
the finished turns were lost, their tokens spent and recorded nowhere."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import Fleet, fleet_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet.commands.init import init


def ledger_agents(repo: Path, tick: int, rev: str = "refs/heads/main") -> Counter[str]:
    """How many deltas of each agent the ledger of ``tick`` holds on ``rev``."""
    out = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, f"state/ledger/{tick}/"], cwd=repo,
                         capture_output=True, text=True, check=True).stdout.split()
    found: Counter[str] = Counter()
    for path in out:
        data = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, check=True).stdout
        found.update(json.loads(line)["agent"] for line in data.splitlines() if line.strip())
    return found


def work(f: Fleet, outbox: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet", "work", "--worker", "1", "--workers", "1", "--provider",
                           "offline", "--outbox", str(outbox), "--json"], cwd=f.path, capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=300)


@given(reruns=st.lists(st.integers(0, 6), min_size=1, max_size=3), seed=st.integers(0, 2**16))
@example(reruns=[0], seed=0)  # run again with everything handed: nothing to do
@example(reruns=[3, 6], seed=1)  # some handed files lost in between, then all of them
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_worker_run_again_before_the_merge_hands_each_turn_over_once(tmp_path_factory: object, reruns: list[int],
                                                                         seed: int) -> None:
    """Between runs, some handed files are taken away (as a kill before they were all
    written would leave it): each run does exactly the missing turns, and the merge
    applies one delta per agent."""
    path = tmp_path_factory.mktemp("once") / "fleet"  # type: ignore[attr-defined]
    init(path)
    f = Fleet(path)
    outbox = path.parent / "outbox"
    agents = sorted(json.loads((path / "state/config.json").read_text())["agents"])
    first = work(f, outbox)
    assert first.returncode == 0, first.stderr
    rng = random.Random(seed)
    for lose in reruns:
        files = sorted(outbox.rglob("*.json"))
        for gone in rng.sample(files, min(lose, len(files))):
            gone.unlink()
        missing = len(agents) - len(list(outbox.rglob("*.json")))
        r = work(f, outbox)
        if missing == 0:
            assert r.returncode == 3 and "already handed tick 1" in r.stderr, r.stderr
        else:
            assert r.returncode == 0 and json.loads(r.stdout)["deltas"] == missing, (missing, r.stdout, r.stderr)
        assert len(list(outbox.rglob("*.json"))) == len(agents)
    assert not [p for p in outbox.rglob("*") if p.name.endswith(".part")]  # every file written whole
    m = fleet_cli(path, "merge", "--inbox", str(outbox))
    assert m.returncode == 0, m.stderr
    assert ledger_agents(path, 1) == Counter(agents)


def test_a_coalesced_run_interrupted_before_its_merge_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "fleet"
    init(path)
    env = dict(os.environ, FLEET_CRASH_AT="merge.before-commit:SIGINT")
    p = subprocess.run([sys.executable, "-m", "fleet", "run", "--ticks", "1", "--workers", "2", "--provider", "offline",
                        "--push", "coalesced"], cwd=path, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 130, p.stdout + p.stderr
    outbox = path / ".git" / "fleet" / "outbox"
    handed = sorted(outbox.rglob("*.json"))
    agents = sorted(json.loads((path / "state/config.json").read_text())["agents"])
    assert len(handed) == len(agents)  # every finished turn kept
    p = fleet_cli(path, "run", "--ticks", "1", "--workers", "2", "--provider", "offline", "--push", "coalesced",
                  "--json")
    assert p.returncode == 0, p.stderr
    origin = path / ".git" / "fleet" / "origin.git"
    assert ledger_agents(origin, 1, "main") == Counter(agents)  # each turn once: the first run's
    assert not list(outbox.rglob("*.json"))  # the merge took them out


def _delta_ids(origin: Path, tick: int) -> dict[str, str]:
    """Agent -> the id of its delta in the ledger of ``tick`` on the origin's main."""
    out = subprocess.run(["git", "ls-tree", "-r", "--name-only", "main", f"state/ledger/{tick}/"], cwd=origin,
                         capture_output=True, text=True, check=True).stdout.split()
    found = {}
    for path in out:
        data = subprocess.run(["git", "show", f"main:{path}"], cwd=origin, capture_output=True, check=True).stdout
        found.update({(b := json.loads(line))["agent"]: b["id"] for line in data.splitlines() if line.strip()})
    return found


def _waiting(path: Path, origin: Path) -> dict[str, str]:
    """Agent -> id of the tick-1 turns an interrupted run left: on worker branches and in the outbox."""
    found = {}
    branches = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/heads/fleet/t1/"], cwd=origin,
                              capture_output=True, text=True, check=True).stdout.split()
    for ref in branches:
        names = subprocess.run(["git", "ls-tree", "-r", "--name-only", ref, "deltas/"], cwd=origin,
                               capture_output=True, text=True, check=True).stdout.split()
        for name in names:
            b = json.loads(subprocess.run(["git", "show", f"{ref}:{name}"], cwd=origin, capture_output=True,
                                          check=True).stdout)
            found[b["agent"]] = b["id"]
    for f in (path / ".git" / "fleet" / "outbox").rglob("*.json"):
        b = json.loads(f.read_bytes())
        found[b["agent"]] = b["id"]
    return found


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=st.tuples(st.sampled_from(["direct", "coalesced"]), st.integers(1, 6)),
       then=st.tuples(st.sampled_from(["direct", "coalesced"]), st.integers(1, 6)),
       lose=st.integers(0, 3), seed=st.integers(0, 2**16))
@example(first=("direct", 2), then=("direct", 3), lose=0, seed=0)  # a walkthrough's case: 7 applied for 6 agents
@example(first=("coalesced", 6), then=("direct", 2), lose=2, seed=1)  # the outbox left behind by a direct rerun
def test_a_rerun_with_another_worker_count_or_mode_runs_no_waiting_turn_again(
        tmp_path_factory: object, first: tuple[str, int], then: tuple[str, int], lose: int, seed: int) -> None:
    """`fleet run` interrupted before its merge, some of what its workers delivered then
    lost (a worker that never finished), and run again with another worker count or
    mode: every agent's turn of the tick is applied exactly once, the waiting ones as
    they were delivered (not run again), the lost ones run by the rerun. Once, agents
    that moved to another worker, or a change of mode, ran their turn twice and the
    merge applied both."""
    path = tmp_path_factory.mktemp("rerun") / "fleet"  # type: ignore[attr-defined]
    init(path)
    agents = sorted(json.loads((path / "state/config.json").read_text())["agents"])
    env = dict(os.environ, FLEET_CRASH_AT="merge.before-commit:SIGINT")
    p = subprocess.run([sys.executable, "-m", "fleet", "run", "--ticks", "1", "--workers", str(first[1]),
                        "--provider", "offline", "--push", first[0]], cwd=path, capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 130, p.stdout + p.stderr
    origin = path / ".git" / "fleet" / "origin.git"
    rng = random.Random(seed)
    branches = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/heads/fleet/t1/"], cwd=origin,
                              capture_output=True, text=True, check=True).stdout.split()
    files = sorted((path / ".git" / "fleet" / "outbox").rglob("*.json"))
    for gone in rng.sample(branches + [str(f) for f in files], min(lose, len(branches) + len(files))):
        if gone.startswith("refs/"):
            subprocess.run(["git", "update-ref", "-d", gone], cwd=origin, check=True)
        else:
            Path(gone).unlink()
    waiting = _waiting(path, origin)
    p = fleet_cli(path, "run", "--ticks", "1", "--workers", str(then[1]), "--provider", "offline", "--push", then[0],
                  "--json")
    assert p.returncode == 0, p.stderr
    assert ledger_agents(origin, 1, "main") == Counter(agents)  # each agent's turn once
    applied = _delta_ids(origin, 1)
    assert {a: applied[a] for a in waiting} == waiting  # the waiting turns as delivered, not run again
    assert json.loads(p.stdout)["ticks"][0]["waiting"] == len(waiting)
    assert not list((path / ".git" / "fleet" / "outbox").rglob("*.json"))  # nothing left to merge late


def _push_branch(origin: Path, branch: str, files: dict[str, bytes]) -> None:
    """A commit on ``branch`` of the bare ``origin`` holding ``files``, on top of main: a
    worker branch nobody of the fleet's pushed."""
    from fleet.git import Git

    g = Git(origin)
    sha = g.write_commit(g.rev_parse("main"), "not a worker's\n", files, [])
    assert g.update_ref(f"refs/heads/{branch}", sha, None)


_JUNK = st.sampled_from([
    {"README": b"x\n"},  # no delta at all
    {"deltas/w1/s1/t2-w1-s1-0123456789abcdef.json": b"not json"},  # a file where a delta would be
    {"deltas/w1/s1/t2-w1-s1-0123456789abcdef.json": b'{"tick": 2, "worker": "w9", "agent": "ada"}'},
    {"deltas/w2/s1/t2-w2-s1-0123456789abcdef.json": b'{"tick": 2, "worker": "w2", "agent": "ada"}'},
])


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(junk=_JUNK, workers=st.integers(1, 3))
@example(junk={"deltas/w2/s1/t2-w2-s1-0123456789abcdef.json": b'{"tick": 2, "worker": "w2", "agent": "ada"}'},
         workers=1)  # another worker's folder, and no delta: ada's turn once counted as done
def test_a_worker_branch_pushed_early_by_someone_else_never_passes_for_its_turns(
        tmp_path_factory: object, junk: dict[str, bytes], workers: int) -> None:
    """A branch fleet/t2/w1 that no worker of the fleet pushed (no delta of w1's agents
    in it): `fleet work --worker 1` (direct) refuses in one line, exit 1, instead of
    taking its tick for delivered; `fleet run` runs every agent's turn (through the
    outbox) and the merge quarantines what the branch held. Once, w1's agents lost the
    tick with exit 0 and "needs you: nothing"."""
    path = tmp_path_factory.mktemp("junk") / "fleet"  # type: ignore[attr-defined]
    init(path)
    assert fleet_cli(path, "run", "--ticks", "1", "--workers", "2", "--provider", "offline").returncode == 0
    origin = path / ".git" / "fleet" / "origin.git"
    _push_branch(origin, "fleet/t2/w1", junk)
    agents = sorted(json.loads((path / "state/config.json").read_text())["agents"])
    w = fleet_cli(path, "work", "--worker", "1", "--workers", "2", "--provider", "offline", "--remote", str(origin))
    assert w.returncode == 1, w.stdout + w.stderr
    assert "fleet/t2/w1 exists on the remote but holds no delta of tick 2 by w1" in w.stderr
    assert len(w.stderr.strip().splitlines()) == 1
    p = fleet_cli(path, "run", "--ticks", "1", "--workers", str(workers), "--provider", "offline", "--json")
    assert p.returncode == 0, p.stderr
    assert ledger_agents(origin, 2, "main") == Counter(agents)  # every agent's turn, once


def test_a_worker_whose_own_branch_holds_its_turns_has_nothing_to_do(tmp_path: Path) -> None:
    path = tmp_path / "fleet"
    init(path)
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(path), str(origin)], check=True)
    args = ("work", "--worker", "1", "--workers", "2", "--provider", "offline", "--remote", str(origin))
    assert fleet_cli(path, *args).returncode == 0
    again = fleet_cli(path, *args)
    assert again.returncode == 3 and "already delivered tick 1 (fleet/t1/w1)" in again.stderr, again.stderr
