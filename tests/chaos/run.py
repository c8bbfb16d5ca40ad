#!/usr/bin/env python
"""The fault campaign: ``python tests/chaos/run.py [--ticks N] [--seed S] [--json]``.

A fleet of six agents on three workers runs N ticks against an origin served
by ``git daemon`` on 127.0.0.1, behind a proxy that drops connections. In
every tick each worker, the merge and a task claimer meet a fault drawn at
random (seeded, so a campaign can be run again), then recover the way a real
deployment does (the job is run again; the watchdog returns what a dead
holder held):

- ``kill@<point>``: kill -9 at one of fleet's named crash points
  (``FLEET_CRASH_AT``: after the fetch, during the turns, after the commit,
  during the push, during cleanup; the merge before and after its commit,
  during and after its push; a task change after its commit, during its push);
- ``kill@random``: kill -9 at a random moment;
- ``dropped-connection``: the proxy cuts the process's connections to the origin;
- ``slow``: a worker past its deadline (``--timeout``), whose unfinished turns
  become explicit error deltas;
- ``clock+`` / ``clock-``: a worker whose clock is an hour ahead or behind;
- ``disk-full``: the process may write no file larger than a few kilobytes
  (RLIMIT_FSIZE), as on a full disk;
- ``merge-race``: two merges of one tick from two clones at once;
- ``claimer-killed``: a task holder killed -9 between claim and complete.

Then it checks what must never happen: ``lost`` (an agent with no delta
applied or quarantined in a tick, or a task never done), ``doubled`` (a
delta applied twice, an agent twice in one tick, a task done twice) and
``invalid`` (main fails ``fleet validate``, or ``fleet replay --check`` does not
rebuild it byte for byte). It prints a table for people on stderr and a final
JSON line with ``faults``, ``kinds``, ``lost``, ``doubled`` and ``invalid``; the
exit code is 1 if any of the last three is not 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from fleet.commands.init import init
from fleet.git import Git

WORKERS = 3
TASKS_PER_TICK = 2
WORK_POINTS = ("work.after-fetch", "work.during-streams", "work.after-commit", "work.during-push", "work.cleanup")
MERGE_POINTS = ("merge.before-commit", "merge.after-commit", "merge.during-push", "merge.after-push")
TASK_POINTS = ("task.after-commit", "task.during-push")
SKEW = ("import datetime as dt, sys\nfrom fleet import delta\nfrom fleet.main import main\n"
        "delta.utc_now = lambda: (dt.datetime.now(dt.UTC) + dt.timedelta(seconds={s})).strftime("
        "'%Y-%m-%dT%H:%M:%S.%fZ')\nsys.argv[0] = 'fleet'\nmain()\n")


def log(msg: str) -> None:
    print(f"[chaos] {msg}", file=sys.stderr, flush=True)


# -- an origin that drops connections ---------------------------------------------------
class Daemon:
    """``git daemon`` on 127.0.0.1 serving one folder of bare repositories."""

    def __init__(self, base: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack", f"--base-path={base}",
             "--listen=127.0.0.1", f"--port={self.port}", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise SystemExit("chaos: git daemon did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Proxy:
    """A TCP proxy in front of the daemon. While ``dropping`` is set, every
    connection is cut after a random number of bytes (or at once)."""

    def __init__(self, target: int, rng: random.Random) -> None:
        self.target = target
        self.rng = rng
        self.dropping = False
        self.dropped = 0
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        budget = self.rng.choice([0, 64, 512, 4096]) if self.dropping else None
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            client.close()
            return

        def pump(src: socket.socket, dst: socket.socket) -> None:
            nonlocal budget
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if budget is not None:
                        if budget <= len(data):
                            self.dropped += 1
                            break
                        budget -= len(data)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        t.start()
        pump(client, upstream)
        t.join(timeout=60)
        client.close()
        upstream.close()

    def stop(self) -> None:
        self.server.close()


# -- running fleet under a fault ---------------------------------------------------------
class Campaign:
    def __init__(self, root: Path, seed: int, ticks: int, sabotage: bool = False) -> None:
        self.root = root
        self.sabotage = sabotage
        self.rng = random.Random(seed)
        self.ticks = ticks
        self.faults: Counter[str] = Counter()
        self.rows: list[tuple[int, str, str, str]] = []  # (tick, who, fault, outcome)
        self.completed: Counter[str] = Counter()  # task id -> completions that a holder saw succeed

    def env(self, crash: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("FLEET_CRASH_AT", "ANTHROPIC_API_KEY")}
        env["XDG_CACHE_HOME"] = str(self.root / "cache")
        if crash:
            env["FLEET_CRASH_AT"] = crash
        return env

    def fleet(self, cwd: Path, *args: str, fault: str = "none", timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run one fleet command under ``fault``; returns what it did (a kill is an outcome, not an error)."""
        crash = fault.removeprefix("kill@") if fault.startswith("kill@") and fault != "kill@random" else None
        cmd = [sys.executable, "-m", "fleet", *args]
        if fault in ("clock+", "clock-"):
            cmd = [sys.executable, "-c", SKEW.format(s=3600 if fault == "clock+" else -3600), *args]
        preexec = None
        if fault == "disk-full":
            def preexec() -> None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        self.proxy.dropping = fault == "dropped-connection"
        try:
            p = subprocess.Popen(cmd, cwd=cwd, env=self.env(crash), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, preexec_fn=preexec, start_new_session=True)
            if fault == "kill@random":
                try:
                    out, err = p.communicate(timeout=self.rng.uniform(0.05, 0.6))
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    out, err = p.communicate()
            else:
                out, err = p.communicate(timeout=timeout)
        finally:
            self.proxy.dropping = False
        if "Traceback" in err:
            raise SystemExit(f"chaos: fleet {' '.join(args)} under {fault} printed a traceback:\n{err}")
        return subprocess.CompletedProcess(cmd, p.returncode, out, err)

    def until_done(self, cwd: Path, *args: str, ok: tuple[int, ...] = (0, 3)) -> subprocess.CompletedProcess[str]:
        """Run again, fault-free, as a rerun job does, until the command succeeds."""
        for _ in range(5):
            p = self.fleet(cwd, *args)
            if p.returncode in ok:
                return p
        raise SystemExit(f"chaos: fleet {' '.join(args)} did not recover: {p.returncode} {p.stderr[-1500:]}")

    # -- one tick -------------------------------------------------------------------------
    def tick(self, t: int) -> None:
        for i in range(1, WORKERS + 1):
            fault = self.rng.choice(["none", "none", *[f"kill@{p}" for p in WORK_POINTS], "kill@random",
                                     "dropped-connection", "slow", "clock+", "clock-", "disk-full"])
            args = ["work", "--worker", str(i), "--workers", str(WORKERS), "--remote", self.url]
            if fault == "slow":
                args += ["--timeout", "0.001"]
            p = self.fleet(self.repo, *args, fault=fault)
            self.note(t, f"worker w{i}", fault, p)
            if p.returncode not in (0, 3):
                self.until_done(self.repo, "work", "--worker", str(i), "--workers", str(WORKERS), "--remote", self.url)
        self.claim_and_complete(t)
        fault = self.rng.choice(["none", *[f"kill@{p}" for p in MERGE_POINTS], "kill@random", "dropped-connection",
                                 "disk-full", "merge-race"])
        if fault == "merge-race":
            procs = [subprocess.Popen([sys.executable, "-m", "fleet", "merge", "--remote", self.url, "--tick", str(t)],
                                      cwd=where, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for where in (self.merger, self.merger2)]
            codes = sorted(p.wait(timeout=300) for p in procs)
            self.faults[fault] += 1
            self.rows.append((t, "merge", fault, f"exits {codes}"))
        else:
            p = self.fleet(self.merger, "merge", "--remote", self.url, "--tick", str(t), fault=fault)
            self.note(t, "merge", fault, p)
        self.until_done(self.merger, "merge", "--remote", self.url, "--tick", str(t))
        if self.main_tick() != t:  # the tick's merge published; a rerun for it exits 3
            raise SystemExit(f"chaos: main is at tick {self.main_tick()} after merging tick {t}")
        self.fleet(self.repo, "watchdog", "--remote", self.url, "--grace", "0")  # returns a dead holder's tasks

    def claim_and_complete(self, t: int) -> None:
        fault = self.rng.choice(["none", "claimer-killed", *[f"kill@{p}" for p in TASK_POINTS]])
        p = self.fleet(self.repo, "task", "claim", "--as", "bot", "--remote", self.url, "--lease", "1", "--json")
        if p.returncode != 0:
            return
        task = json.loads(p.stdout)
        tid, fence = task["id"], str(task["fence"])
        if fault == "claimer-killed":  # died holding it: the watchdog returns it once its lease is over
            self.faults[fault] += 1
            self.rows.append((t, "claimer", fault, f"{tid} left held"))
            time.sleep(1.1)
            return
        done = self.fleet(self.repo, "task", "complete", tid, "--fence", fence, "--as", "bot", "--remote", self.url,
                          fault=fault)
        self.note(t, "claimer", fault, done)
        if done.returncode == 0:
            self.completed[tid] += 1

    def note(self, t: int, who: str, fault: str, p: subprocess.CompletedProcess[str]) -> None:
        if fault != "none":
            self.faults[fault.split("@")[0] + ("@" + fault.split("@")[1] if "@" in fault else "")] += 1
        outcome = "killed" if p.returncode < 0 else f"exit {p.returncode}"
        self.rows.append((t, who, fault, outcome))

    def main_tick(self) -> int:
        return int(orjson.loads(Git(self.bare).show("refs/heads/main", "state/fleet.json") or b"{}")["tick"])

    # -- the campaign ---------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.repo = self.root / "fleet"
        init(self.repo)
        served = self.root / "served"
        served.mkdir()
        self.bare = served / "origin.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(self.repo), str(self.bare)], check=True)
        daemon = Daemon(served)
        self.proxy = Proxy(daemon.port, random.Random(self.rng.random()))
        self.url = f"git://127.0.0.1:{self.proxy.port}/origin.git"
        try:
            self.merger, self.merger2 = self.root / "merger", self.root / "merger2"
            for where in (self.merger, self.merger2):
                subprocess.run(["git", "clone", "-q", self.bare.as_uri(), str(where)], check=True)
            titles = self.root / "tasks.jsonl"
            titles.write_text("".join(json.dumps({"title": f"task {n}"}) + "\n"
                                      for n in range(self.ticks * TASKS_PER_TICK)))
            self.until_done(self.repo, "task", "add", "--file", str(titles), "--remote", self.url, ok=(0,))
            self.set_claimers()
            for t in range(1, self.ticks + 1):
                self.tick(t)
                log(f"tick {t} merged; faults so far {sum(self.faults.values())}")
            if self.sabotage:
                self.break_main()
            return self.verdict()
        finally:
            self.proxy.stop()
            daemon.stop()

    def break_main(self) -> None:
        """What the checks exist for (--sabotage): a commit on main that applies the last
        tick's first delta a second time, as a broken merge would. The campaign must
        then report it doubled and main invalid."""
        git = Git(self.bare)
        head = git.rev_parse("refs/heads/main") or ""
        entries = git.ls_tree(head, f"state/ledger/{self.ticks}/")
        path, sha = sorted(entries.items())[0]
        data = git.cat_blobs([sha])[sha]
        first = data.splitlines()[0]
        commit = git.write_commit(head, f"fleet: tick {self.ticks + 1}\n\nFleet-Tick: {self.ticks + 1}\n",
                                  {path.replace(f"/{self.ticks}/", f"/{self.ticks + 1}/"): first + b"\n"}, [])
        git.run("update-ref", "refs/heads/main", commit)

    def set_claimers(self) -> None:
        """Let 'bot' claim (tasks.claimers), as a person's change of the config on main."""
        git = Git(self.bare)
        head = git.rev_parse("refs/heads/main")
        raw = orjson.loads(git.show(head, "state/config.json") or b"{}")
        raw.setdefault("tasks", {})["claimers"] = ["bot"]
        raw["tasks"]["grace_seconds"] = 0
        from fleet import canonical

        commit = git.write_commit(head, "let bot claim tasks\n", {"state/config.json": canonical.dumps(raw)}, [])
        git.run("update-ref", "refs/heads/main", commit)

    def verdict(self) -> dict[str, Any]:
        git = Git(self.bare)
        lost: list[str] = []
        doubled: list[str] = []
        invalid: list[str] = []
        agents = sorted(orjson.loads(git.show("refs/heads/main", "state/config.json") or b"{}")["agents"])
        seen_ids: Counter[str] = Counter()
        for commit, _, body in git.first_parent_log(git.rev_parse("refs/heads/main") or ""):
            t = next((int(line.split(":")[1]) for line in body.splitlines() if line.startswith("Fleet-Tick:")), None)
            if t is None:
                continue
            applied = self.lines(git, commit, f"state/ledger/{t}/")
            quarantined = self.lines(git, commit, f"state/quarantine/{t}/")
            for d in applied:
                seen_ids[d["id"]] += 1
            per_agent = Counter(d["agent"] for d in applied)
            gone = {q.get("delta", {}).get("agent") for q in quarantined if isinstance(q.get("delta"), dict)}
            for a in agents:
                if per_agent[a] == 0 and a not in gone:
                    lost.append(f"tick {t}: no delta of {a} applied or quarantined")
                if per_agent[a] > 1:
                    doubled.append(f"tick {t}: {a} applied {per_agent[a]} times")
        doubled += [f"delta {i} applied {n} times" for i, n in seen_ids.items() if n > 1]
        doubled += [f"task {i} completed {n} times by holders who were told it worked"
                    for i, n in self.completed.items() if n > 1]
        # a task is done at most once in the queue's own history, and a completion its holder saw land stands
        subjects = git.text("log", "--format=%s", "refs/heads/fleet/tasks").splitlines()
        done = Counter(s.split()[2] for s in subjects if s.startswith("task complete "))
        doubled += [f"task {i} completed {n} times on fleet/tasks" for i, n in done.items() if n > 1]
        p = self.until_done(self.repo, "task", "list", "--remote", self.url, "--json", ok=(0,))
        listed = json.loads(p.stdout)
        tasks = listed.get("tasks", listed) if isinstance(listed, dict) else listed
        status = {x["id"]: x.get("status") for x in tasks}
        lost += [f"task {tid}: its holder saw its completion land, but it is {status.get(tid)}"
                 for tid in self.completed if status.get(tid) != "done"]
        lost += [f"task {tid} is done without a completion on fleet/tasks" for tid, st in status.items()
                 if st == "done" and done[tid] == 0]
        check = self.root / "check"
        subprocess.run(["git", "clone", "-q", self.bare.as_uri(), str(check)], check=True)
        v = self.fleet(check, "validate")
        if v.returncode != 0:
            invalid.append(f"fleet validate: {v.stdout[-500:]}")
        r = self.fleet(check, "replay", "--check", "--json")
        if r.returncode != 0:
            try:
                why = json.loads(r.stdout).get("first_difference") or "not byte-identical"
            except ValueError:
                why = r.stderr.strip()[-300:]
            invalid.append(f"fleet replay --check: {why}")
        return {"faults": sum(self.faults.values()), "kinds": dict(sorted(self.faults.items())),
                "ticks": self.ticks, "dropped_connections": self.proxy.dropped,
                "lost": len(lost), "doubled": len(doubled), "invalid": len(invalid),
                "problems": (lost + doubled + invalid)[:20]}

    @staticmethod
    def lines(git: Git, commit: str, folder: str) -> list[dict[str, Any]]:
        entries = git.ls_tree(commit, folder)
        blobs = git.cat_blobs(list(entries.values()))
        return [orjson.loads(line) for path, data in sorted((p, blobs[s]) for p, s in entries.items())
                if path.endswith(".jsonl") and not path.endswith("_resolutions.jsonl") for line in data.splitlines()]


def table(c: Campaign, out: dict[str, Any]) -> None:
    print(f"{'tick':>4}  {'who':<10} {'fault':<24} outcome", file=sys.stderr)
    for t, who, fault, outcome in c.rows:
        if fault != "none":
            print(f"{t:>4}  {who:<10} {fault:<24} {outcome}", file=sys.stderr)
    print(f"\n{out['faults']} faults over {out['ticks']} ticks ({len(out['kinds'])} kinds), "
          f"{out['dropped_connections']} connections dropped: lost {out['lost']}, doubled {out['doubled']}, "
          f"invalid {out['invalid']}", file=sys.stderr)
    for problem in out["problems"]:
        print(f"  {problem}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ticks", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None, help="the campaign's seed (default: random, printed)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--sabotage", action="store_true",
                    help="at the end, apply a delta twice on main by hand: the checks must catch it (exit 1)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    log(f"seed {seed}, {args.ticks} ticks")
    root = Path(tempfile.mkdtemp(prefix="fleet-chaos-"))
    c = Campaign(root, seed, args.ticks, args.sabotage)
    try:
        out = c.run()
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(root)])
        else:
            log(f"kept {root}")
    out["seed"] = seed
    table(c, out)
    print(json.dumps(out) if args.json else
          f"faults {out['faults']}, lost {out['lost']}, doubled {out['doubled']}, invalid {out['invalid']}")
    return 1 if out["lost"] or out["doubled"] or out["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())
