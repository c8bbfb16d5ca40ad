"""report: reading a long history for `fleet report`, against one `git log -p`.

A fleet's history of 2,000 ticks (``--small``: 300) is made in the merge
engine's tree shape (each tick adds its ledger folder, one line per delta
of 60 agents on 3 workers, now and then a quarantine line, prunes the one
that left the window, and advances ``state/fleet.json``) in one fast-import
stream. ``ours`` is ``fleet.report.collect`` over every tick (the per-tick
figures, per-agent and per-worker activity, health, the task queue);
``floor`` is the same reading by the simplest means: one ``git log
--first-parent -p`` of the ledger, the quarantine and ``state/fleet.json``
(full context, so every version of ``state/fleet.json`` is in it), its added
lines parsed with orjson and summed per agent and worker. Writing the page
(``render``) is reported alongside.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
from benchlib import Stopwatch, git, log, median, result, workdir

from fleet import canonical
from fleet import report as report_mod
from fleet.commands.init import init

DEFAULT_REPEAT = 3
SMALL_REPEAT = 2
AGENTS = 60
WORKERS = 3
WINDOW = 8


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--ticks", type=int, default=None, help="length of the history (default 2000; --small 300)")


def _history(repo: Path, ticks: int) -> None:
    base = git(repo, "rev-parse", "HEAD").decode().strip()
    doc = orjson.loads((repo / "state" / "fleet.json").read_bytes())
    agents = [f"a{i:03d}" for i in range(AGENTS)]
    chunks: list[bytes] = []
    totals = {"applied": 0, "quarantined": 0}
    for t in range(1, ticks + 1):
        msg = f"fleet: tick {t}\n\nFleet-Tick: {t}\n".encode()
        chunks.append(f"commit refs/heads/main\nmark :{t}\ncommitter fleet <fleet@localhost> {1_800_000_000 + t} "
                      f"+0000\ndata {len(msg)}\n".encode() + msg + b"\n")
        chunks.append(f"from {base}\n".encode() if t == 1 else b"")
        by_worker: dict[str, list[bytes]] = {}
        quarantined = []
        for i, a in enumerate(agents):
            w = f"w{i % WORKERS + 1}"
            body = {"id": f"t{t}-{w}-s{i}-{i:016x}", "tick": t, "utc": "2027-01-15T08:00:00.000000Z", "worker": w,
                    "stream": f"s{i}", "agent": a,
                    "ops": [{"op": "incr", "doc": "posts/p1", "path": "score", "value": 1}] if (t + i) % 3 else [],
                    "meta": {"noop": "resting"} if not (t + i) % 3 else
                    {"usage": {"input_tokens": 1200 + i, "output_tokens": 80, "cost_usd": 0.0048}}}
            if (t * 7 + i) % 97 == 0:
                quarantined.append(canonical.dumps_line({"tick": t, "worker": w, "path": f"deltas/{w}/x.json",
                                                         "reason": "not allowed", "source": w, "size": 10,
                                                         "delta": body}))
            else:
                by_worker.setdefault(w, []).append(canonical.dumps_line(body))
        for w, lines in by_worker.items():
            data = b"\n".join(lines) + b"\n"
            chunks.append(f"M 100644 inline state/ledger/{t}/{w}.jsonl\ndata {len(data)}\n".encode() + data + b"\n")
        if quarantined:
            data = b"\n".join(quarantined) + b"\n"
            chunks.append(f"M 100644 inline state/quarantine/{t}/w1.jsonl\ndata {len(data)}\n".encode() + data + b"\n")
        if t > WINDOW:
            chunks.append(f"D state/ledger/{t - WINDOW - 1}\nD state/quarantine/{t - WINDOW - 1}\n".encode())
        applied = sum(len(v) for v in by_worker.values())
        totals["applied"] += applied
        totals["quarantined"] += len(quarantined)
        doc["tick"] = t
        doc["last"] = dict(doc["last"], applied=applied, quarantined=len(quarantined))
        doc["totals"] = dict(doc["totals"], **totals)
        data = canonical.dumps(doc)
        chunks.append(f"M 100644 inline state/fleet.json\ndata {len(data)}\n".encode() + data + b"\n")
    chunks.append(b"done\n")
    git(repo, "fast-import", "--quiet", "--done", "--force", input=b"".join(chunks))
    git(repo, "reset", "-q", "--hard", "main")


def _floor(repo: Path) -> tuple[int, dict[str, int]]:
    """Ticks seen and deltas per agent, from one `git log -p` and orjson."""
    out = git(repo, "log", "--first-parent", "--reverse", "-p", "--no-renames", "-U100000", "--format=commit %H %ct",
              "--", "state/ledger/", "state/quarantine/", "state/fleet.json")
    per_agent: dict[str, int] = {}
    per_tick: list[dict[str, Any]] = []
    path = ""
    fleet_lines: list[bytes] = []

    def close() -> None:
        if fleet_lines:
            per_tick.append(orjson.loads(b"\n".join(fleet_lines)))
            fleet_lines.clear()

    for line in out.split(b"\n"):
        if line.startswith(b"commit "):
            close()
        elif line.startswith(b"+++ "):
            close()
            path = line[6:].decode()
        elif line.startswith((b"--- ", b"diff ", b"index ", b"@@", b"new file", b"deleted file")):
            continue
        elif path == "state/fleet.json" and line[:1] in (b" ", b"+"):
            fleet_lines.append(line[1:])
        elif line.startswith(b"+") and path.startswith("state/ledger/"):
            body = orjson.loads(line[1:])
            per_agent[body["agent"]] = per_agent.get(body["agent"], 0) + 1
    close()
    return len([d for d in per_tick if d.get("tick")]), per_agent


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    ticks = args.ticks or (300 if args.small else 2000)
    repeat = args.repeat
    with workdir(args.tmp, "fleet-bench-report-", args.keep) as tmp:
        repo = tmp / "fleet"
        init(repo)
        log(f"history of {ticks} ticks, {AGENTS} agents on {WORKERS} workers")
        _history(repo, ticks)
        ours, floor, page = Stopwatch(), Stopwatch(), Stopwatch()
        for i in range(repeat):
            with ours:
                data = report_mod.collect(repo, ticks=None)
            with floor:
                seen, per_agent = _floor(repo)
            with page:
                report_mod.write(tmp / "site", data)
            log(f"run {i + 1}/{repeat}: ours {ours.times[-1]:.2f}s, floor {floor.times[-1]:.2f}s, "
                f"page {page.times[-1]:.2f}s")
        # both read the same history
        assert len(data.ticks) == seen == ticks, (len(data.ticks), seen)
        assert {a: act.deltas for a, act in data.agents.items() if act.deltas} == per_agent
        size = (tmp / "site" / "index.html").stat().st_size
        return [result("report", median(ours.times), median(floor.times), ticks=ticks, agents=AGENTS,
                       workers=WORKERS, deltas=sum(per_agent.values()), ours_cpu=round(median(ours.cpu), 3),
                       floor_cpu=round(median(floor.cpu), 3), page_seconds=round(median(page.times), 3),
                       page_bytes=size, repeat=repeat)]
