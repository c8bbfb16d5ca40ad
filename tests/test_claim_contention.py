"""Proof under contention: many processes, each on its own clone, claim and
complete every task of one queue through one origin served by ``git daemon``,
while some holders are killed with SIGKILL mid-task and the watchdog runs on
its schedule.

Every task is done exactly once, and this is checked twice: against the final
state of the queue, and against the ``fleet/tasks`` history, commit by commit
(each task goes to done in exactly one commit, by the one holder of the fence
it was claimed with; no fence is handed out twice; every task a killed holder
held is returned by the watchdog and then done by another).

The full size (16 processes, 1,000 tasks) takes 8 to 25 minutes on two cores:
it is marked slow and runs only when asked for (``pytest -m slow`` or
FLEET_CONTENTION_FULL=1). A smaller run (8 processes, 120 tasks, about a
minute) is in the default suite, so the invariant is always tested.
``FLEET_CONTENTION=PROCS,TASKS`` gives the smaller run another size.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleet import canonical
from fleet.commands.init import init
from fleet.git import Git
from fleet.repo import FleetRepo
from fleet.tasks import BRANCH, TaskQueue

CLAIMER = Path(__file__).with_name("claimer.py")
GAVE_UP_WORDS = "gave up after"  # (claimer.py's GAVE_UP: a change that lost every race for fleet's patience)
VICTIM_LEASE = 3.0  # seconds: a killed holder's task comes back this long after its claim
WATCHDOG_EVERY = 1.5  # seconds between watchdog runs, its schedule here


class GitDaemon:
    """``git daemon`` serving ``base`` on 127.0.0.1 with pushes enabled; stopped by ``stop``.

    Its log (``--verbose``: every connection, request and error) goes to a file beside
    ``base``, never to a pipe: the daemon and every child serving a connection write
    their errors there (each lost push race is a "the remote end hung up unexpectedly"),
    and a pipe nobody reads fills after some 64 KB. Then they block writing, for ever:
    the daemon accepts no more connections and its children never exit, and the
    clients wait on connections that are never served (so did the 16 x 1,000 run, a
    few minutes in)."""

    def __init__(self, base: Path) -> None:
        self.log = base.parent / "daemon.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        log = self.log.open("wb")
        self.proc = subprocess.Popen(
            # at most 100 connections at once, GitHub's limit of concurrent requests (git daemon's default,
            # 32, is met by 16 claimers' fetches, pushes and checks and the watchdog; past it the daemon
            # kills a live connection: "Connection reset by peer")
            ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", "--max-connections=100",
             f"--base-path={base}",
             "--listen=127.0.0.1", f"--port={self.port}", "--verbose", str(base)],
            stdout=subprocess.DEVNULL, stderr=log)
        log.close()  # the daemon has its own copy
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"git daemon exited: {self.log.read_text(errors='replace')}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("git daemon did not start listening")

    def tail(self, lines: int = 20) -> str:
        """The end of the daemon's log, and how many connections it serves now (for a failure's message)."""
        text = self.log.read_text(errors="replace").splitlines()
        served = subprocess.run(["pgrep", "-c", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.strip()
        return f"git daemon: {served or 0} connections being served; its log ends:\n" + "\n".join(text[-lines:])

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemon(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    d = GitDaemon(served)
    try:
        yield d, served
    finally:
        d.stop()


def _origin(tmp: Path, served: Path, agents: list[str], tasks: int, *, paths: bool = False) -> Path:
    """A fleet whose config knows ``agents`` and returns a task at once (no retry
    delay; failures never exhaust it), with ``tasks`` tasks on its queue; its bare origin.
    ``paths``: each task declares a path of its own (so it is claimed on the branch)."""
    seed = tmp / "seed"
    init(seed)
    cfg_path = seed / "state" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["agents"].update({a: {"priority": 0} for a in agents})
    cfg["tasks"] = {"retry_delay_seconds": 0, "max_failures": 100}
    cfg_path.write_bytes(canonical.dumps(cfg))
    for a in agents:
        (seed / "state" / "agents" / f"{a}.json").write_bytes(canonical.dumps(
            {"id": a, "name": a, "persona": f"{a} claims tasks.", "bio": "", "interests": [], "karma": 0,
             "post_count": 0, "memory": []}))
    Git(seed).run("add", "-A")
    Git(seed).run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "contention agents")
    bare = served / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
    items = tmp / "tasks.jsonl"
    items.write_text("".join(json.dumps({"id": f"job-{i:04d}", "title": f"job {i}", **({"paths": [f"src/{i}.py"]} if paths else {})})
                             + "\n" for i in range(tasks)))
    subprocess.run([sys.executable, "-m", "fleet", "task", "add", "-C", str(seed), "--remote", str(bare),
                    "--file", str(items)], check=True, capture_output=True)
    return bare


@dataclass
class Worker:
    agent: str
    proc: subprocess.Popen[str]
    victim: str | None = None  # "holds" (killed once it says it holds a task) or "anytime" (killed at a random moment)
    lines: list[list[str]] = field(default_factory=list)
    killed_at: float | None = None
    err: Path | None = None  # its stderr: a file, not a pipe read only at the end (a full pipe blocks its writer)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err else ""

    def kill(self) -> None:
        if self.killed_at is None:
            self.proc.send_signal(signal.SIGKILL)
            self.killed_at = time.monotonic()


def _read(w: Worker) -> None:
    for line in w.proc.stdout:  # type: ignore[union-attr]
        words = line.split(maxsplit=3)
        w.lines.append(words)
        if words and words[0] == "holding":
            w.kill()  # mid-task, before it completes


def _raw(bare: Path, *args: str, stdin: str = "") -> list[tuple[str, list[str], str, dict[str, str]]]:
    """``git log ... --raw`` as (commit, parents, message, {path: blob})."""
    out = subprocess.run(["git", "log", "--no-renames", "--raw", "--no-abbrev", "--format=%x1e%H %P%x00%B%x00", *args],
                         cwd=bare, input=stdin.encode(), capture_output=True, check=True).stdout.decode()
    commits = []
    for rec in out.split("\x1e")[1:]:
        head, message, raw = rec.split("\x00")
        sha, *parents = head.split()
        changed = {}
        for line in raw.strip().splitlines():
            meta, path = line.split("\t")
            changed[path] = meta.split()[3]
        commits.append((sha, parents, message, changed))
    return commits


def _history(bare: Path) -> list[tuple[str, str, dict[str, dict]]]:
    """The queue's changes in the order they took effect: (commit, message, {task id: task as
    that commit left it}). The branch is one line of commits (every change a compare-and-swap
    on its tip); a claim made on a task's claim ref joins it as the second parent of the next
    change of that task (a merge), and takes effect just before it. Checked on the way: a
    merge's other parents are only claim commits, each made on a commit of the line before
    it, changing one task, merged once; and every claim ref is at a commit of the history
    (once all is done, every claim is merged)."""
    line = _raw(bare, "--reverse", "--root", "--first-parent", "--diff-merges=first-parent", f"refs/heads/{BRANCH}")
    for (prev, _, _, _), (_, parents, _, _) in zip(line, line[1:]):
        assert parents[0] == prev, "the queue's history is not one line of commits"
    merged = [p for _, parents, _, _ in line for p in parents[1:]]
    assert len(merged) == len(set(merged)), "a claim was merged twice"
    claims = {c[0]: c for c in _raw(bare, "--no-walk=unsorted", "--stdin", stdin="\n".join(merged) + "\n")} if merged else {}
    seen = set()
    commits = []
    for sha, parents, message, changed in line:
        for p in parents[1:]:
            c_sha, c_parents, c_message, c_changed = claims[p]
            assert c_message.startswith("task claim ") and len(c_parents) == 1 and c_parents[0] in seen, \
                f"{sha} merges {p}, which is no claim made on the line before it: {c_message!r}"
            commits.append((c_sha, c_message, c_changed))
        seen.add(sha)
        commits.append((sha, message, changed))
    refs = Git(bare).text("for-each-ref", "--format=%(objectname)", f"refs/heads/{BRANCH}-claims/").split()
    history = {c for c, _, _ in commits}
    assert all(r in history for r in refs), "a claim ref is at a claim the branch never merged"
    blobs = [b for _, _, changed in commits for b in changed.values()]
    batch = subprocess.run(["git", "cat-file", "--batch"], cwd=bare, input="\n".join(blobs).encode() + b"\n",
                           capture_output=True, check=True).stdout
    docs, at = {}, 0
    while at < len(batch):
        nl = batch.index(b"\n", at)
        sha, _, size = batch[at:nl].decode().split()
        docs[sha] = json.loads(batch[nl + 1:nl + 1 + int(size)])
        at = nl + 1 + int(size) + 1
    return [(sha, message, {path.rsplit("/", 1)[1].removesuffix(".json"): docs[b] for path, b in changed.items()
                            if path.startswith("tasks/")})
            for sha, message, changed in commits]


def _check_history(bare: Path, tasks: int) -> tuple[dict[str, tuple[str, int]], list[tuple[str, str, int]], int]:
    """Walk the queue's history and check every change against the one before it.

    Returns each task's completion (holder, fence), the watchdog's returns
    (task, holder, fence) in order, and the number of claims."""
    history = _history(bare)
    _, first, added = history[0]
    assert first.startswith(f"task add {tasks} tasks"), first
    assert sorted(added) == [f"job-{i:04d}" for i in range(tasks)]
    state = dict(added)
    assert all(t["status"] == "pending" and t["fence"] == 0 for t in state.values())
    done: dict[str, tuple[str, int]] = {}
    returns: list[tuple[str, str, int]] = []
    fences: set[tuple[str, int]] = set()
    claims = 0
    for sha, message, changed in history[1:]:
        assert len(changed) == 1, f"{sha}: one task per commit, not {sorted(changed)}"
        (tid, new), = changed.items()
        old = state[tid]
        words = message.split()
        if message.startswith("task claim "):  # task claim ID by AGENT (fence N)
            holder, fence = words[4], int(words[6].rstrip(")"))
            assert words[2] == tid and old["status"] == "pending", f"{sha}: {message!r} from {old['status']}"
            assert new["status"] == "in-progress" and new["claimed_by"] == holder
            assert new["fence"] == fence == old["fence"] + 1, f"{sha}: fence {fence} after {old['fence']}"
            assert (tid, fence) not in fences, f"{sha}: fence {fence} of {tid} handed out twice"
            fences.add((tid, fence))
            claims += 1
        elif message.startswith("task complete "):  # task complete ID by AGENT (fence N)
            holder, fence = words[4], int(words[6].rstrip(")"))
            assert words[2] == tid and old["status"] == "in-progress", f"{sha}: {message!r} from {old['status']}"
            assert (old["claimed_by"], old["fence"]) == (holder, fence), f"{sha}: {holder} does not hold fence {fence}"
            assert new["status"] == "done" and new["result"] == {"by": holder}
            assert tid not in done, f"{sha}: {tid} done twice (first by {done[tid]})"
            done[tid] = (holder, fence)
        elif message.startswith("watchdog: return "):  # watchdog: return ID: lease of AGENT ran out ...
            assert words[2] == f"{tid}:" and old["status"] == "in-progress", f"{sha}: {message!r} from {old['status']}"
            assert new["status"] == "pending" and new["fence"] == old["fence"]
            returns.append((tid, old["claimed_by"], old["fence"]))
        else:
            raise AssertionError(f"{sha}: unexpected change {message.splitlines()[0]!r}")
        state[tid] = new
    assert sorted(done) == sorted(state), "a task was never done"
    return done, returns, claims


# One watchdog round, as `fleet watchdog --json`, that prints every thread's stack to its stderr
# if it is still running after 280 s (the test stops it at 300 s).
WATCHDOG = ("import faulthandler, runpy, sys; faulthandler.dump_traceback_later(280); "
            "sys.argv = ['fleet', 'watchdog', '-C', sys.argv[1], '--json']; runpy.run_module('fleet', run_name='__main__')")


def _stuck(workers: list[Worker], daemon: GitDaemon) -> str:
    """For a run that does not end: where each live claimer is (its stack, printed by
    faulthandler on SIGUSR1), the git processes it waits on, and the daemon's state."""
    live = [w for w in workers if w.proc.poll() is None]
    for w in live:
        w.proc.send_signal(signal.SIGUSR1)
    time.sleep(1)
    gits = subprocess.run(["ps", "-eo", "pid,ppid,etimes,args"], capture_output=True, text=True).stdout
    gits = "\n".join(line for line in gits.splitlines() if " git" in line)
    return ("\n".join(f"-- {w.agent}: {w.stderr()[-3000:]}" for w in live)
            + f"\n-- git processes:\n{gits}\n-- {daemon.tail()}")


def run_contention(tmp: Path, daemon: GitDaemon, served: Path, procs: int, tasks: int, *, victims: int,
                   anytime: int, cli: int, timeout: float) -> dict[str, float]:
    """``procs`` claimers (``cli`` of them through the command line, the rest
    through the library), ``victims`` of them killed holding a task (they
    claim first) and ``anytime`` of them killed at a random moment while all
    race; the watchdog every WATCHDOG_EVERY seconds. Checks everything;
    returns timings."""
    agents = [f"w{i:02d}" for i in range(procs)]
    bare = _origin(tmp, served, agents, tasks)
    url = daemon.url("origin.git")
    dirs = []
    for name in [*agents, "watchdog"]:
        d = tmp / "clones" / name
        subprocess.run(["git", "clone", "-q", "--no-checkout", url, str(d)], check=True)
        dirs.append(d)
    rng = random.Random(7)
    kinds = ["holds"] * victims + ["anytime"] * anytime + [None] * (procs - victims - anytime)
    workers: list[Worker] = []
    t0 = time.monotonic()
    for i, (agent, d) in enumerate(zip(agents, dirs)):
        kind = kinds[i]
        args = [sys.executable, str(CLAIMER), str(d), agent]
        if i >= procs - cli:  # the last ones go through `python -m fleet task ...`
            args.append("--cli")
        if kind:  # a short lease, so that what it holds when it dies comes back soon
            args += ["--lease", str(VICTIM_LEASE)]
        if kind == "holds":  # it holds the first task it claims until it is killed
            args += ["--hold-at", "0"]
        err = tmp / "clones" / f"{agent}.stderr"
        with err.open("w") as f:
            w = Worker(agent, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=f, text=True), kind, err=err)
        threading.Thread(target=_read, args=(w,), daemon=True).start()
        if kind == "anytime":
            threading.Timer(rng.uniform(1.0, 4.0), w.kill).start()
        workers.append(w)
        if i == victims - 1:
            # The holders go first, so that each surely gets a task to die holding: a claimer can
            # lose every race for a while, to others pushing back to back on views they just made
            # (push first). Their tasks come back from the watchdog while the rest race.
            while any(w.killed_at is None and w.proc.poll() is None for w in workers):
                assert time.monotonic() - t0 < 120, [w.lines for w in workers]
                time.sleep(0.05)
    watchdog_runs = 0
    try:
        while any(w.proc.poll() is None for w in workers if not w.victim):
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"not done in {timeout:.0f} s: "
                                     + "; ".join(f"{w.agent}: {w.lines[-1:]}" for w in workers)
                                     + "\n" + _stuck(workers, daemon))
            for w in workers:  # a live holder never drops a task it holds: fail now, not at the timeout
                lost = [x for x in w.lines if x[0] == "dropped"]
                assert w.victim or not lost, f"{w.agent} dropped a task it held: {lost}"
            time.sleep(WATCHDOG_EVERY)
            try:  # (a round that hangs prints where it is before it is stopped)
                r = subprocess.run([sys.executable, "-c", WATCHDOG, str(dirs[-1])], capture_output=True, text=True,
                                   timeout=300)
            except subprocess.TimeoutExpired as e:
                raise AssertionError(f"a watchdog round did not end in 300 s: {e.stderr!r}\n"
                                     + _stuck(workers, daemon)) from None
            assert r.returncode in (0, 3), r.stderr + "\n" + daemon.tail()
            watchdog_runs += 1
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.kill()
    elapsed = time.monotonic() - t0
    for w in workers:
        w.proc.wait(timeout=30)
        err = w.stderr()
        if w.victim:
            assert w.proc.returncode == -signal.SIGKILL, (w.agent, w.proc.returncode, err[-500:])
        else:
            assert w.proc.returncode == 0, (w.agent, w.proc.returncode, err[-500:])
            assert "Traceback" not in err, err[-1000:]
    time.sleep(0.2)  # the reader threads see the last lines

    # 1. the final state: every task done, once, by the holder of its last fence
    clone = dirs[-1]
    tq = TaskQueue(FleetRepo(clone))
    q, _ = tq.load()
    assert len(q.tasks) == tasks
    assert Counter(t.status for t in q.tasks.values()) == {"done": tasks}
    # 2. the history, commit by commit
    done, returns, claims = _check_history(bare, tasks)
    for t in q.tasks.values():
        assert done[t.id] == (t.claimed_by, t.fence), t.id
    # 3. what the claimers said agrees with both
    said: dict[str, tuple[str, int]] = {}
    victims_of = {w.agent: w for w in workers if w.victim}
    for w in workers:
        for words in w.lines:
            if words[0] == "done":
                assert words[1] not in said, f"{words[1]} completed by {said[words[1]]} and {w.agent}"
                said[words[1]] = (w.agent, int(words[2]))
                assert done[words[1]] == said[words[1]]
            elif words[0] == "dropped":  # only a short lease runs out, and the refusal says why
                assert w.agent in victims_of and (words[1], w.agent, int(words[2])) in returns, words
                assert any(why in words[3] for why in ("stale", "went back to the queue", "already done")), words
    finished = {tid for tid, (holder, _) in done.items() if holder not in victims_of}
    assert finished <= set(said), "a live claimer's completion is missing from its own report"
    # 4. the killed holders: the watchdog returned every task they held, then another did it
    returned_from = Counter(holder for _, holder, _ in returns)
    assert set(returned_from) <= set(victims_of), f"a live holder's lease was returned: {returned_from}"
    held = [(w.agent, words[1], int(words[2])) for w in workers for words in w.lines if words[0] == "holding"]
    assert len(held) == victims, held
    for agent, tid, fence in held:
        assert (tid, agent, fence) in returns, f"{tid} held by {agent} (killed) was never returned"
        assert done[tid][0] != agent and done[tid][1] > fence
    # (every other claim is followed by its holder's complete or the watchdog's return: _check_history)
    per_holder = Counter(holder for holder, _ in done.values())
    # a step tried again because the remote did not answer (none, now that the daemon's log is read)
    retried = sum(1 for w in workers for words in w.lines
                  if words[0] == "retry" and GAVE_UP_WORDS not in " ".join(words[2:]))
    return {"seconds": round(elapsed, 1), "claims": claims, "returns": len(returns),
            "watchdog_runs": watchdog_runs, "no_answer_retries": retried,
            "done_by": {w.agent + (" (cli)" if "--cli" in w.proc.args else ""): per_holder[w.agent]
                        for w in workers if not w.victim}}


# Read when the module loads: the suite's autouse fixture (conftest.py) clears every FLEET_*
# variable before a test runs, so a test reading them then never saw the caller's request.
ASKED = {name: os.environ.get(name) for name in ("FLEET_CONTENTION", "FLEET_CONTENTION_FULL")}


def _size(default: tuple[int, int]) -> tuple[int, int]:
    env = ASKED["FLEET_CONTENTION"]
    return tuple(int(x) for x in env.split(",")) if env else default  # type: ignore[return-value]


def test_eight_claimers_do_120_tasks_each_exactly_once_with_holders_killed(daemon, tmp_path: Path) -> None:
    """8 processes on 8 clones, 120 tasks over git daemon: 2 of them killed with
    -9 holding a task, 1 killed at a random moment, 1 claiming through the CLI."""
    d, served = daemon
    procs, tasks = _size((8, 120))
    stats = run_contention(tmp_path, d, served, procs, tasks, victims=2, anytime=1, cli=1, timeout=600)
    print(f"\ncontention {procs} x {tasks}: {stats}")


@pytest.mark.slow
def test_sixteen_claimers_do_1000_tasks_each_exactly_once_with_holders_killed(request: pytest.FixtureRequest,
                                                                             tmp_path: Path) -> None:
    """The size the issue asks for: 16 processes, 1,000 tasks; 3 killed holding a
    task, 1 killed at a random moment, 2 claiming through the CLI.

    It takes 8 to 25 minutes on two cores (two to four claims or completes a
    second; 23 minutes at load 20 to 29, with 1,003 claims, 3 returns and 289
    watchdog runs), up to most of the CI job's 30 minutes, where the other slow
    tests take one: so it runs only when asked for, by ``-m slow`` or
    FLEET_CONTENTION_FULL=1."""
    if "slow" not in (request.config.getoption("markexpr") or "") and not ASKED["FLEET_CONTENTION_FULL"]:
        pytest.skip("16 claimers x 1,000 tasks take 8-25 min on 2 cores: run with -m slow or FLEET_CONTENTION_FULL=1 "
                    "(the 8 x 120 version runs always)")
    d, served = request.getfixturevalue("daemon")
    stats = run_contention(tmp_path, d, served, 16, 1000, victims=3, anytime=1, cli=2, timeout=3000)
    print(f"\ncontention 16 x 1000: {stats}")


# -- a holder's change is not starved by claimers ------------------------------------------
HAMMER = r"""
import sys
from pathlib import Path
from fleet.commands import task as task_cmd
from fleet.errors import FleetError, NothingToDo
clone, agent = Path(sys.argv[1]), sys.argv[2]
while True:  # claim, claim, claim: never complete, never pause
    try:
        task_cmd.claim(clone, agent)
    except NothingToDo:
        sys.exit(0)
    except FleetError as e:
        if "gave up after" not in str(e):
            raise
"""

# The holder's complete, with the test's hands on the order of events: its first two
# rounds push only once a claim has landed on top of the view they decided on (so it
# surely loses two races, the second on a fetched view, and sets its waiting mark); its
# third round waits until the test has seen the mark and released it.
HOLDER = r"""
import json, subprocess, sys, time
from pathlib import Path
from fleet import faults
from fleet.commands import task as task_cmd
clone, bare, task_id, fence, go = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
point, rounds = faults.point, []
def tip(where, ref):
    return subprocess.run(["git", "rev-parse", ref], cwd=where, capture_output=True, text=True).stdout.strip()
def hold(name):
    if name == "task.after-commit":
        rounds.append(name)
        if len(rounds) <= 2:
            seen = tip(clone, "refs/fleet/origin/fleet/tasks")  # the view this round decided on
            while tip(bare, "refs/heads/fleet/tasks") == seen:
                time.sleep(0.01)
        elif len(rounds) == 3:
            while not go.exists():
                time.sleep(0.01)
    point(name)
faults.point = hold
task_cmd.complete(clone, task_id, fence, result={"by": "holder"}, agent="holder")
print(json.dumps({"rounds": len(rounds)}), flush=True)
"""


def test_a_holders_complete_lands_while_claimers_hammer(daemon, tmp_path: Path) -> None:
    """Claimers yield to a holder that lost a race: once its waiting mark is on the
    origin, each claimer lands at most the one claim it had decided before it could
    see it, however long the holder then takes, and the holder's complete lands;
    its mark goes and the claimers go on. A mark a killed holder left an hour ago
    stops nobody, and the holder clears it away with its own. (The tasks declare
    paths, so they are claimed on the branch: a claim of a task that declares none
    is made on its claim ref and never races a holder at all.)"""
    d, served = daemon
    claimers = [f"w{i:02d}" for i in range(4)]
    bare = _origin(tmp_path, served, [*claimers, "holder"], 300, paths=True)
    url = d.url("origin.git")
    dirs = {}
    for name in [*claimers, "holder"]:
        dirs[name] = tmp_path / "clones" / name
        subprocess.run(["git", "clone", "-q", "--no-checkout", url, str(dirs[name])], check=True)
    from fleet.commands import task as task_cmd
    mine = task_cmd.claim(dirs["holder"], "holder")
    git = Git(bare)

    def tip() -> str:
        return git.text("rev-parse", f"refs/heads/{BRANCH}")

    def claims_since(base: str, until: str | None = None) -> list[str]:
        out = git.text("log", "--format=%s", f"{base}..{until or f'refs/heads/{BRANCH}'}").splitlines()
        return [s for s in out if s.startswith("task claim ")]

    dead = subprocess.run(["git", "commit-tree", "-m", "a holder killed while it waited", f"refs/heads/{BRANCH}^{{tree}}"],
                          cwd=bare, capture_output=True, text=True, check=True,
                          env=dict(os.environ, GIT_COMMITTER_DATE=f"{int(time.time()) - 3600} +0000")).stdout.strip()
    git.run("update-ref", f"refs/heads/{BRANCH}-waiting/dead", dead)

    def marks() -> list[str]:
        return [r for r in git.text("for-each-ref", "--format=%(refname)", f"refs/heads/{BRANCH}-waiting/").split()
                if not r.endswith("/dead")]

    started = tip()
    hammer = [subprocess.Popen([sys.executable, "-c", HAMMER, str(dirs[c]), c], stderr=subprocess.PIPE, text=True)
              for c in claimers]
    go = tmp_path / "go"
    holder = None
    try:
        while len(claims_since(started)) < 2 * len(claimers):  # the claimers are racing
            assert all(p.poll() is None for p in hammer), [p.stderr.read() for p in hammer if p.poll() is not None]
            time.sleep(0.05)
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(dirs["holder"]), str(bare), mine["id"],
                                   str(mine["fence"]), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        while not marks():  # the holder lost, and says so
            assert holder.poll() is None, holder.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.01)
        marked = tip()  # the mark was up before this tip was read: every claim after it saw it, or was in flight
        # hold the holder back until more claims than there are claimers land after the mark (what claimers
        # that do not yield would do), or for a while if they do yield
        deadline = time.monotonic() + 5
        while len(claims_since(marked)) <= len(claimers) and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()
        out, err = holder.communicate(timeout=600)
        assert holder.returncode == 0, err
        assert json.loads(out)["rounds"] >= 3
        subjects = git.text("log", "--format=%H %s", f"refs/heads/{BRANCH}").splitlines()
        landed = next(line.split()[0] for line in subjects if line.split()[1:3] == ["task", "complete"])
        assert f"task complete {mine['id']} by holder (fence {mine['fence']})" in git.text("log", "-1", "--format=%s",
                                                                                             landed)
        assert len(claims_since(marked, landed)) <= len(claimers), claims_since(marked, landed)
        assert not git.text("for-each-ref", f"refs/heads/{BRANCH}-waiting/"), "a mark stayed"
        after = tip() if claims_since(landed) else None
        while after is None:  # the claimers go on once the holder has landed
            assert all(p.poll() is None for p in hammer)
            time.sleep(0.05)
            after = tip() if claims_since(landed) else None
    finally:
        for p in [*hammer, *([holder] if holder else [])]:
            if p.poll() is None:
                p.kill()
            p.wait()
