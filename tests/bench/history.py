"""history: a worker's fetch at tick 10 and at tick 2,000 of the same fleet.

History must not make workers slower: a worker fetches main shallowly into a
fresh cache (as a new CI runner does), so what it moves is one tick's tree,
whatever the number of ticks behind it. The fleet's history is made with the
merge engine's own tree shape (state documents rewritten each tick, a ledger
folder added and one pruned, state/fleet.json advanced) in one fast-import
stream, then served by ``git daemon`` as it stood at tick 10 and at tick
2,000. ``ours`` is the fetch at tick 2,000, ``floor`` the fetch at tick 10;
the goal is a ratio within 1.2. The whole ``fleet work`` (fetch, agents on the
offline provider, commit, push) is reported alongside.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
from benchlib import Stopwatch, git, log, median, result, workdir
from tick_overhead import Daemon

from fleet import canonical
from fleet.commands.init import init
from fleet.commands.work import work
from fleet.workspace import Workspace

DEFAULT_REPEAT = 5
DOCS = 2000  # documents rewritten in rotation, 40 per tick
PER_TICK = 40
WINDOW = 8


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--ticks", type=int, default=None, help="length of the long history (default 2000; --small 300)")


def _history(repo: Path, ticks: int) -> list[str]:
    """Append ``ticks`` tick commits to main; return the commit of every tick."""
    base = git(repo, "rev-parse", "HEAD").decode().strip()
    fleet_doc = orjson.loads((repo / "state" / "fleet.json").read_bytes())
    chunks: list[bytes] = []
    stamp = 1_800_000_000
    for t in range(1, ticks + 1):
        msg = f"fleet: tick {t}\n\nFleet-Tick: {t}\n".encode()
        chunks.append(f"commit refs/heads/main\nmark :{t}\ncommitter fleet <fleet@localhost> {stamp + t} +0000\n"
                      f"data {len(msg)}\n".encode() + msg + b"\n")
        chunks.append(f"from {base}\n".encode() if t == 1 else b"")
        lines = []
        # Tick 1 writes every document, so the state is the same size at tick 10
        # and at the end: only the history behind it differs.
        for k in range(DOCS if t == 1 else PER_TICK):
            n = (t * PER_TICK + k) % DOCS
            doc = {"id": f"p{n:05d}", "channel": "general", "author": "ada", "title": f"post {n}",
                   "body": f"revised at tick {t}", "tick": t, "score": t, "comment_count": k, "tags": []}
            data = canonical.dumps(doc)
            chunks.append(f"M 100644 inline state/posts/{doc['id']}.json\ndata {len(data)}\n".encode() + data + b"\n")
            if k < PER_TICK:
                lines.append(canonical.dumps_line({"id": f"t{t}-w1-s1-{k:016x}", "tick": t, "agent": "ada"}))
        ledger = b"\n".join(lines) + b"\n"
        chunks.append(f"M 100644 inline state/ledger/{t}/w1.jsonl\ndata {len(ledger)}\n".encode() + ledger + b"\n")
        if t > WINDOW:
            chunks.append(f"D state/ledger/{t - WINDOW - 1}\n".encode())
        fleet_doc["tick"] = t
        data = canonical.dumps(fleet_doc)
        chunks.append(f"M 100644 inline state/fleet.json\ndata {len(data)}\n".encode() + data + b"\n")
    chunks.append(b"done\n")
    git(repo, "fast-import", "--quiet", "--done", "--force", input=b"".join(chunks))
    git(repo, "reset", "-q", "--hard", "main")
    out = git(repo, "rev-list", "--first-parent", "--reverse", "main").decode().split()
    return out[1:]  # after genesis


def _fetch_times(url: str, repeat: int, tmp: Path) -> tuple[float, float]:
    fetches, works = [], []
    for _ in range(repeat):
        gitdir = Path(tempfile.mkdtemp(prefix="runner-", dir=tmp))
        git(gitdir, "init", "-q", "--bare")
        sw = Stopwatch()
        with Workspace(gitdir, "w1") as ws, sw:
            ws.fetch(url)
        fetches.append(sw.times[0])
        shutil.rmtree(gitdir)
    return median(fetches), median(works) if works else 0.0


def _work_time(repo_for_work: Path, url: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        shutil.rmtree(repo_for_work / ".git" / "fleet", ignore_errors=True)  # a fresh runner
        sw = Stopwatch()
        with sw:
            report = work(repo_for_work, worker=1, workers=1, remote=url)
        times.append(sw.times[0])
        git(repo_for_work, "push", "-q", url, f":refs/heads/{report.branch}")
    return median(times)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    ticks = args.ticks or (300 if args.small else 2000)
    repeat = args.repeat or DEFAULT_REPEAT
    with workdir(args.tmp, "fleet-bench-history-", args.keep) as tmp:
        repo = tmp / "fleet"
        init(repo)
        log(f"writing {ticks} ticks of history")
        commits = _history(repo, ticks)
        served = tmp / "served"
        served.mkdir()
        for name, commit in (("short.git", commits[9]), ("long.git", commits[-1])):
            git(repo, "branch", "-f", "serve", commit)
            git(tmp, "clone", "-q", "--bare", "--single-branch", "--branch", "serve", str(repo), str(served / name))
            git(served / name, "branch", "-m", "serve", "main")
        counts = {n: int(git(served / n, "rev-list", "--count", "main").decode()) for n in ("short.git", "long.git")}
        daemon = Daemon(served)
        try:
            short_fetch, _ = _fetch_times(daemon.url("short.git"), repeat, tmp)
            long_fetch, _ = _fetch_times(daemon.url("long.git"), repeat, tmp)
            short_work = _work_time(repo, daemon.url("short.git"), repeat)
            long_work = _work_time(repo, daemon.url("long.git"), repeat)
        finally:
            daemon.stop()
        log(f"fetch: tick 10 {short_fetch:.3f}s, tick {ticks} {long_fetch:.3f}s; "
            f"work: {short_work:.3f}s vs {long_work:.3f}s")
    return [
        result("history", long_fetch, short_fetch, "s", goal=1.2, ticks_long=ticks, ticks_short=10,
               commits_long=counts["long.git"], commits_short=counts["short.git"],
               what="a fresh worker's shallow fetch of main: at the long history (ours) vs at tick 10 (floor)"),
        result("history-work", long_work, short_work, "s", goal=1.2, ticks_long=ticks, ticks_short=10,
               what="a fresh worker's whole `fleet work` (one agent per tick here): long history vs tick 10"),
    ]
