"""The fleet's history as one static HTML page: `fleet report --out DIR`.

What it shows, and where each figure comes from:

- per tick (main's first-parent tick commits): each delta counted once, as
  `fleet merge` and `fleet status` count it (:func:`split`): applied (every
  change took effect), no-op, held for a person, or quarantined; the late
  among them, the conflicts opened or joined, the open conflicts, tokens and
  cost. The counts are read from the ledger, quarantine and conflict files
  each tick commit changed; the rest from its ``state/fleet.json``;
- per agent and per worker: the ledger and quarantine lines each tick commit
  added (the agent, the worker, its ops, an error, its usage);
- workers' health now (``fleet.health``), and the task queue on
  ``fleet/tasks`` (tasks by state, and tasks created, done and failed per
  hour or day).

History is read in a fixed number of git processes, however many ticks: one
``git log`` of main (stopped once it has the ticks asked for), one
``cat-file --batch`` of the ``state/fleet.json`` files, one ``diff-tree
--stdin`` for the ledger and quarantine files each tick changed, and one
``cat-file --batch`` of those files.

The page needs no server and no network (a Content-Security-Policy says so
to the browser): its data is JSON inside it and its charts are drawn by
Observable Plot and d3, inlined from ``fleet/report_assets/`` (see the
README there). Every chart has a text alternative: an ARIA label and
description on the chart, and its data as a table.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import json
import re
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fleet import __version__, canonical
from fleet.config import FLEET_PATH
from fleet.errors import FleetError
from fleet.git import EMPTY_TREE
from fleet.health import deliveries, health
from fleet.ids import printable
from fleet.outside import main_refusal
from fleet.overview import overview_of
from fleet.records import Conflict, Usage
from fleet.repo import FleetRepo
from fleet.state import CONFLICT_DIR, LEDGER_DIR, QUARANTINE_DIR
from fleet.tasks import MISSING, Queue, TaskQueue, parse_stamp

# sha, tree, committer time, the Fleet-Tick trailer's value (empty for a person's commit)
_LOG_FORMAT = "--format=%H %T %ct %(trailers:key=Fleet-Tick,valueonly,separator=%x2C)"
ZERO = "0" * 40
ASSETS = ("d3.min.js", "plot.umd.min.js", "report.js")
# The steps a report takes, for a progress bar (fleet.progress).
STEPS = ("history", "ticks", "ledger", "queue", "page")


def split(deltas: Iterable[tuple[str, int]], held: Container[str]) -> tuple[int, int, int]:
    """A tick's merged deltas, (id, ops) each, counted once as the merge counts
    them: applied (every change took effect), noop (an explicit empty delta),
    held (a change held for a person: the id is a candidate in a conflict the
    tick opened or joined). The engine's ``last.applied`` counts all three."""
    applied = noop = kept = 0
    for delta, ops in deltas:
        if not ops:
            noop += 1
        elif delta in held:
            kept += 1
        else:
            applied += 1
    return applied, noop, kept


@dataclass
class TickRow:
    """One merged tick: its deltas, each counted once (:func:`split`), and the rest
    from its commit's ``state/fleet.json``."""

    tick: int
    commit: str
    utc: str
    late: int  # of the applied, no-op and held: deltas of earlier ticks
    conflicts: int  # conflicts the tick opened or joined
    resolved: int
    open_conflicts: int
    usage: Usage
    applied: int = 0
    noop: int = 0
    held: int = 0  # deltas with a change held in a conflict
    quarantined: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"tick": self.tick, "commit": self.commit, "utc": self.utc, "applied": self.applied,
                "noop": self.noop, "held": self.held, "quarantined": self.quarantined, "late": self.late,
                "conflicts": self.conflicts, "resolved": self.resolved,
                "open_conflicts": self.open_conflicts, "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens, "cache_read_input_tokens": self.usage.cache_read_input_tokens,
                "cache_creation_input_tokens": self.usage.cache_creation_input_tokens,
                "tokens": self.usage.tokens, "cost_usd": self.usage.cost_usd}


@dataclass
class Activity:
    """What one agent (or one worker) did: in one tick, or over the report."""

    deltas: int = 0  # applied
    ops: int = 0
    noop: int = 0  # applied with no ops
    errors: int = 0  # applied with meta.error: a failed turn's explicit empty delta
    quarantined: int = 0
    last_tick: int = -1
    usages: list[Any] = field(default_factory=list)  # each delta's meta.usage, summed once by Usage.total
    _sum: Usage | None = field(default=None, repr=False, compare=False)

    def add(self, tick: int, ops: int, error: bool, usage: Any, quarantined: bool = False) -> None:
        if quarantined:
            self.quarantined += 1
        else:
            self.deltas += 1
            self.ops += ops
            self.noop += ops == 0 and not error
            self.errors += error
        if usage is not None:
            self.usages.append(usage)
            self._sum = None
        if tick > self.last_tick:
            self.last_tick = tick

    @property
    def usage(self) -> Usage:
        if self._sum is None:
            self._sum = Usage.total(self.usages)
        return self._sum

    def to_json(self) -> dict[str, Any]:
        usage = self.usage
        return {"deltas": self.deltas, "ops": self.ops, "noop": self.noop, "errors": self.errors,
                "quarantined": self.quarantined, "tokens": usage.tokens, "cost_usd": usage.cost_usd,
                "last_tick": self.last_tick}


@dataclass
class ReportData:
    """Everything the page shows, as plain data (``to_json`` is embedded in the page)."""

    name: str
    tick: int
    main: str
    generated: str
    totals: dict[str, Any]
    ticks: list[TickRow]
    agents: dict[str, Activity]
    agent_ticks: list[dict[str, Any]]  # {tick, agent, deltas, ops, errors, quarantined}
    workers: list[dict[str, Any]]  # fleet.health's view, with each worker's activity
    worker_ticks: list[dict[str, Any]]  # {tick, worker, deltas, errors, quarantined}
    tasks: dict[str, int]
    throughput: list[dict[str, Any]]  # {bucket, created, done, failed}
    bucket: str  # "hour" or "day"
    conflicts: list[dict[str, Any]]
    escalated: list[dict[str, Any]]
    all_ticks: bool  # the report reaches back to the first tick
    # "What needs you": `fleet status`'s own list (fleet.overview), so the two never disagree, and
    # the conflicts to decide and dead workers it counts, with what to do about each
    needs_you: list[str] = field(default_factory=list)
    to_decide: list[dict[str, Any]] = field(default_factory=list)  # {id, where, candidates, opened_tick, decide}
    dead: list[dict[str, Any]] = field(default_factory=list)  # {worker, why}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tick": self.tick, "main": self.main, "generated": self.generated,
                "totals": self.totals, "ticks": [t.to_json() for t in self.ticks],
                "agents": {a: act.to_json() for a, act in sorted(self.agents.items())},
                "agent_ticks": self.agent_ticks, "workers": self.workers, "worker_ticks": self.worker_ticks,
                "tasks": self.tasks, "throughput": self.throughput, "bucket": self.bucket,
                "conflicts": self.conflicts, "escalated": self.escalated, "all_ticks": self.all_ticks,
                "needs_you": self.needs_you, "to_decide": self.to_decide, "dead": self.dead}


Step = Callable[[str], None]


def _no_step(name: str) -> None:
    return None


# -- reading -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Commit:
    sha: str
    tree: str
    time: int
    tick: int | None


def _walk(repo: FleetRepo, head: str, ticks: int | None) -> tuple[list[_Commit], str, bool]:
    """Main's newest ``ticks`` tick commits (all if None), oldest first; the tree
    of the commit before the oldest (for its diff); and whether the walk
    reached main's first commit. A person's commit between two ticks is
    folded into the next tick's diff (fleet.outside refuses its ledger lines)."""
    found: list[_Commit] = []
    before, need, complete = EMPTY_TREE, False, True
    with repo.git.stream("log", "--first-parent", _LOG_FORMAT, head) as out:
        for raw in out:
            sha, tree, when, *rest = raw.decode("utf-8", "replace").rstrip("\n").split(" ", 3)
            if need:  # the first parent of the oldest tick commit so far
                before, need = tree, False
            if ticks is not None and len(found) >= ticks:
                complete = False
                break
            trailer = rest[0] if rest else ""
            try:
                tick: int | None = int(trailer.split(",")[-1]) if trailer else None
            except ValueError:
                tick = None
            if tick is not None:
                found.append(_Commit(sha, tree, int(when), tick))
                need = True
    found.reverse()
    return found, before, complete


def _fleet_doc(data: bytes | None, where: str) -> dict[str, Any]:
    if data is None:
        raise FleetError(f"{where}: missing in a tick commit")
    doc = canonical.load(data, where)
    if not isinstance(doc, dict):
        raise FleetError(f"{where}: must be a JSON object")
    return doc


def _int(doc: dict[str, Any], key: str) -> int:
    v = doc.get(key, 0)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _stamp(seconds: int) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tick_rows(repo: FleetRepo, commits: list[_Commit]) -> list[TickRow]:
    names = [f"{c.sha}:{FLEET_PATH}" for c in commits]
    blobs = repo.git.cat_maybe(names)
    rows = []
    for c, name in zip(commits, names, strict=True):
        doc = _fleet_doc(blobs[name], f"{c.sha[:12]}:{FLEET_PATH}")
        last = doc.get("last") if isinstance(doc.get("last"), dict) else {}
        assert isinstance(last, dict)
        rows.append(TickRow(_int(doc, "tick") or (c.tick or 0), c.sha, _stamp(c.time), _int(last, "late"),
                            _int(last, "held"), _int(last, "resolved"), _int(doc, "open_conflicts"),
                            Usage.parse(last.get("usage"))))
    return rows


def _line(line: bytes, where: str) -> Any:
    """A ledger or quarantine line, read strictly: the merge engine writes them in
    compact canonical form, so a line that parses fast and writes back to the same
    bytes broke no rule; any other goes through the strict reader, which names
    the rule it breaks (a person's edit of the ledger, say)."""
    try:
        obj = canonical.parse_trusted(line)
        if canonical.dumps_line(obj) == line:
            return obj
    except (ValueError, TypeError):  # orjson's errors: malformed, or beyond what it reads
        pass
    return canonical.load(line, where)


def _delta_facts(body: Any) -> tuple[str | None, str | None, int, bool, Any]:
    """(agent, worker, ops, error, meta.usage) of a delta body as the ledger keeps it."""
    if not isinstance(body, dict):
        return None, None, 0, False, None
    meta = body.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    ops, agent, worker, usage = body.get("ops"), body.get("agent"), body.get("worker"), meta.get("usage")
    return (agent if isinstance(agent, str) else None, worker if isinstance(worker, str) else None,
            len(ops) if isinstance(ops, list) else 0, bool(meta.get("error")),
            usage if isinstance(usage, dict) else None)


def _activity(repo: FleetRepo, commits: list[_Commit], prior: str, ticks: list[TickRow]) -> tuple[
        dict[str, Activity], dict[str, Activity], list[dict[str, Any]], list[dict[str, Any]]]:
    """Per agent and per worker, over the report and per tick, from the ledger and
    quarantine lines each tick commit added; and each tick's deltas counted once
    (:func:`split`, with the candidates of the conflicts it changed), set on ``ticks``."""
    trees = [prior] + [c.tree for c in commits]
    pairs = list(zip(trees, trees[1:], strict=False))
    changes = repo.git.changed_many(pairs, [LEDGER_DIR + "/", QUARANTINE_DIR + "/", CONFLICT_DIR + "/"])
    blobs = repo.git.cat_blobs([s for rows in changes for old, new, _ in rows for s in (old, new) if s != ZERO])
    agents: dict[str, Activity] = {}
    workers: dict[str, Activity] = {}
    per_agent: dict[tuple[int, str], list[int]] = {}  # deltas, ops, errors, quarantined
    per_worker: dict[tuple[int, str], list[int]] = {}
    names: dict[str, str] = {}  # a name from outside, as it may be shown

    def shown(name: str) -> str:
        if name not in names:
            names[name] = printable(name, 80)
        return names[name]

    for row, commit, rows in zip(ticks, commits, changes, strict=True):
        merged: list[tuple[str, int]] = []
        held: set[str] = set()
        for old, new, path in rows:
            if new == ZERO or path.rsplit("/", 1)[-1].startswith("_"):
                continue  # a document deleted; the records of decisions, reverts, meanings: no worker id starts "_"
            if path.startswith(CONFLICT_DIR + "/"):
                try:
                    held.update(str(x["delta"]) for x in Conflict.parse(blobs[new], path).candidates)
                except FleetError:
                    pass  # a hand-edited conflict file: `fleet status` names it
                continue
            before = set(blobs[old].splitlines()) if old != ZERO else set()
            quarantine = path.startswith(QUARANTINE_DIR + "/")
            where = f"{commit.sha[:12]}:{path}"
            for line in blobs[new].splitlines():
                if not line or line in before:
                    continue
                body = _line(line, where)
                if quarantine:
                    row.quarantined += 1
                    rec = body if isinstance(body, dict) else {}
                    agent, _, ops, error, usage = _delta_facts(rec.get("delta"))
                    worker = rec.get("worker") if isinstance(rec.get("worker"), str) else None
                else:
                    agent, worker, ops, error, usage = _delta_facts(body)
                    merged.append((str(body.get("id")) if isinstance(body, dict) else "", ops))
                for name, total, per in ((agent, agents, per_agent), (worker, workers, per_worker)):
                    if name is None:
                        continue
                    name = shown(name)
                    act = total.get(name)
                    if act is None:
                        act = total[name] = Activity()
                    act.add(row.tick, ops, error, usage, quarantined=quarantine)
                    cell = per.get((row.tick, name))
                    if cell is None:
                        cell = per[(row.tick, name)] = [0, 0, 0, 0]
                    if quarantine:
                        cell[3] += 1
                    else:
                        cell[0] += 1
                        cell[1] += ops
                        cell[2] += error
        row.applied, row.noop, row.held = split(merged, held)
    agent_ticks = [{"tick": t, "agent": a, "deltas": c[0], "ops": c[1], "errors": c[2], "quarantined": c[3]}
                   for (t, a), c in sorted(per_agent.items())]
    worker_ticks = [{"tick": t, "worker": w, "deltas": c[0], "errors": c[2], "quarantined": c[3]}
                    for (t, w), c in sorted(per_worker.items())]
    return agents, workers, agent_ticks, worker_ticks


def _throughput(queue: Queue) -> tuple[list[dict[str, Any]], str]:
    """Tasks created, done and escalated (failed for good) per UTC hour, or per
    day when the queue's life spans more than two days."""
    events: list[tuple[_dt.datetime, str]] = []
    for t in queue.tasks.values():
        events.append((parse_stamp(t.created_at), "created"))
        if t.status == "done" and t.done_at is not MISSING and isinstance(t.done_at, str):
            events.append((parse_stamp(t.done_at), "done"))
        if t.escalated and t.escalated_at is not MISSING and isinstance(t.escalated_at, str):
            events.append((parse_stamp(t.escalated_at), "failed"))
    if not events:
        return [], "hour"
    span = max(e[0] for e in events) - min(e[0] for e in events)
    bucket = "day" if span > _dt.timedelta(days=2) else "hour"
    fmt = "%Y-%m-%d" if bucket == "day" else "%Y-%m-%dT%H:00Z"
    counts: dict[str, dict[str, int]] = {}
    for when, kind in events:
        key = when.astimezone(_dt.UTC).strftime(fmt)
        counts.setdefault(key, {"created": 0, "done": 0, "failed": 0})[kind] += 1
    return [{"bucket": k, **v} for k, v in sorted(counts.items())], bucket


def collect(path: Path, remote: str | None = None, ticks: int | None = 500, step: Step = _no_step,
            at: _dt.datetime | None = None) -> ReportData:
    """Read the report's data from main's history, the ledger, and the task queue.
    ``ticks``: the newest so many ticks (None: all). ``step`` is told as each step begins."""
    with canonical.no_gc():  # a line's objects a delta: months of ledger are a million of them
        return _collect(path, remote, ticks, step, at)


def _collect(path: Path, remote: str | None, ticks: int | None, step: Step, at: _dt.datetime | None) -> ReportData:
    at = at or _dt.datetime.now(_dt.UTC)
    repo = FleetRepo(path, remote)
    repo.fetch()
    head = repo.main()
    # a change fleet refuses on main (fleet.outside.main_refusal) is built on by no tick: the
    # report is of the fleet where the engine last left it, as `fleet status` is, which names it
    refused = main_refusal(repo.git, head)
    head = head if refused is None else refused.base
    snap = repo.snapshot(head)
    fleet, cfg = snap.fleet, snap.config
    step("history")
    commits, prior, complete = _walk(repo, head, ticks)
    step("ticks")
    rows = _tick_rows(repo, commits)
    step("ledger")
    agents, workers, agent_ticks, worker_ticks = _activity(repo, commits, prior, rows)
    step("queue")
    queue = TaskQueue(repo).read()
    tick, seen = deliveries(snap)
    for w, act in workers.items():
        if act.deltas:
            seen[w] = max(seen.get(w, -1), act.last_tick)
    health_now = health(tick, seen, queue, cfg)
    worker_rows = [{**h, **workers.get(w, Activity()).to_json()} for w, h in health_now.items()]
    conflicts = []
    for p, data in snap.read_many(snap.under(CONFLICT_DIR)).items():
        try:
            c = canonical.load(data or b"{}", p)
        except FleetError:
            continue  # not the engine's record (a hand edit built on before fleet refused them): `fleet status` names it
        if isinstance(c, dict):
            conflicts.append({"id": printable(str(c.get("id", p)), 80),
                              "where": printable(f"{c.get('collection')}/{c.get('doc')} "
                                                 f"{'.'.join(map(str, c.get('path') or []))}", 200),
                              "candidates": len(c.get("candidates") or []), "opened_tick": c.get("opened_tick")})
    # what needs a person, the tasks by state and the escalated tasks as `fleet status` says them
    status = overview_of(repo, at)
    escalated = [{"id": e["id"], "title": printable(e["title"], 120), "failures": e["failures"],
                  "error": printable(str(e["error"]), 200) if e["error"] else ""} for e in status["escalated"]]
    to_decide = [{"id": printable(c["id"], 80), "where": printable(f"{c['doc']} {c['path']}", 200),
                  "candidates": c["candidates"], "opened_tick": c["opened_tick"], "decide": printable(c["decide"], 200)}
                 for c in status["open_conflicts"] if not c["decided"]]
    dead = [{"worker": printable(w["worker"], 80), "why": w["why"]} for w in status["workers"] if w["status"] == "dead"]
    throughput, bucket = _throughput(queue)
    for name in list(cfg.agents):
        agents.setdefault(name, Activity())
    return ReportData(
        name=printable(cfg.name or repo.path.name, 120),
        tick=fleet["tick"], main=head, generated=at.strftime("%Y-%m-%dT%H:%M:%SZ"), totals=fleet["totals"],
        ticks=rows, agents=agents, agent_ticks=agent_ticks, workers=worker_rows, worker_ticks=worker_ticks,
        tasks=status["tasks"], throughput=throughput, bucket=bucket, conflicts=conflicts,
        escalated=escalated, all_ticks=complete, needs_you=status["needs_you"], to_decide=to_decide, dead=dead)


# -- the page ------------------------------------------------------------------------

HEATMAP_ROWS = 30  # agents drawn in the activity chart: the most active; the table has them all

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       background: #ffffff; margin: 0; }
header, main, footer { max-width: 1000px; margin: 0 auto; padding: 0 16px; }
a { color: #0b4f9c; }
a:focus-visible, summary:focus-visible, [tabindex]:focus-visible { outline: 3px solid #b3261e; outline-offset: 2px; }
.skip { position: absolute; left: -9999px; }
.skip:focus { left: 16px; top: 8px; background: #ffffff; padding: 4px 8px; z-index: 1; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 4px 16px; }
h1 { font-size: 1.6rem; margin: 16px 0 4px; }
h2 { font-size: 1.25rem; margin: 32px 0 8px; border-bottom: 1px solid #767676; }
dl.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 8px; }
dl.stats div { border: 1px solid #767676; border-radius: 4px; padding: 6px 10px; }
dl.stats dt { font-size: 0.85rem; color: #4a4a4a; }
dl.stats dd { margin: 0; font-size: 1.2rem; font-weight: 600; font-variant-numeric: tabular-nums; }
figure { margin: 16px 0 24px; }
figcaption { font-weight: 600; }
.plot { min-height: 40px; overflow-x: auto; }
.note { color: #4a4a4a; }
.table-wrap { overflow: auto; max-height: 360px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #b0b0b0; padding: 2px 8px; text-align: right; }
th[scope=row], td.text { text-align: left; }
thead th { background: #eef1f5; position: sticky; top: 0; }
.warn { color: #8a1c14; font-weight: 600; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _code(text: str) -> str:
    """A line as `fleet status` prints it, escaped, with its `commands` set as code."""
    return re.sub(r"`([^`<>]+)`", r"<code>\1</code>", _esc(text))


def _table(caption: str, columns: list[str], rows: list[list[Any]], row_header: bool = True) -> str:
    """A data table: the text alternative of a chart, or a list; the first column heads each row."""
    head = "".join(f'<th scope="col">{_esc(c)}</th>' for c in columns)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            text = _esc(v)
            if i == 0 and row_header:
                cells.append(f'<th scope="row">{text}</th>')
            else:
                cells.append(f'<td{" class=text" if isinstance(v, str) else ""}>{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap" tabindex="0" role="region" aria-label="{_esc(caption)}">'
            f"<table><caption>{_esc(caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _figure(chart: str, title: str, description: str, columns: list[str], rows: list[list[Any]],
            height: int = 260) -> str:
    """A chart (drawn by report.js), its caption, its description, and its data as a table."""
    return (f'<figure data-chart="{chart}" data-label="{_esc(title)}" data-height="{height}" '
            f'aria-labelledby="cap-{chart}" aria-describedby="desc-{chart}">'
            f'<figcaption id="cap-{chart}">{_esc(title)}</figcaption>'
            f'<p class="note" id="desc-{chart}">{_esc(description)}</p>'
            f'<div class="plot" data-pending="" data-description="{_esc(description)}">'
            f"<noscript>The chart needs JavaScript; its data is in the table below.</noscript></div>"
            f"<details><summary>Data table: {_esc(title)}</summary>{_table(title, columns, rows)}</details>"
            f"</figure>")


def _span(rows: list[TickRow]) -> str:
    return f"ticks {rows[0].tick} to {rows[-1].tick}" if rows else "no ticks yet"


def _peak(rows: list[TickRow], key: Callable[[TickRow], float], what: str) -> str:
    if not rows:
        return f"no {what}"
    best = max(rows, key=key)
    total = sum(key(r) for r in rows)
    if not total:
        return f"no {what}"
    return f"{total:,} {what} in all, most in tick {best.tick} ({key(best):,})" if isinstance(total, int) else \
        f"${total:.6f} in all, most in tick {best.tick} (${key(best):.6f})"


def _money(v: float) -> str:
    return f"${v:.6f}"


def _embed(data: dict[str, Any]) -> str:
    """JSON that is safe inside a <script> element whatever its strings hold."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return (resources.files("fleet") / "report_assets" / name).read_text(encoding="utf-8")


def _hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def render(d: ReportData) -> str:
    """The report as one HTML page that needs no network."""
    t = d.ticks
    totals = d.totals
    usage = Usage.parse(totals.get("usage") if isinstance(totals.get("usage"), dict) else None)
    span = _span(t)
    agents = sorted(d.agents.items(), key=lambda kv: (-kv[1].ops, -kv[1].deltas, kv[0]))
    shown = [a for a, act in agents if act.deltas or act.quarantined][:HEATMAP_ROWS]
    data = d.to_json()
    data["agents_shown"] = shown
    drawn = set(shown)  # the grid draws these; the table has every agent's totals
    data["agent_ticks"] = [r for r in data["agent_ticks"] if r["agent"] in drawn]
    dead = [w for w in d.workers if w["status"] == "dead"]

    # each delta once, as the merges counted it; over the ticks shown (all of them, unless --ticks cut them)
    over = "" if d.all_ticks or not t else f", ticks {t[0].tick}\u2013{t[-1].tick}"
    stats = [("tick", "stat-tick", f"{d.tick}"),
             (f"deltas applied{over}", "stat-applied", f"{sum(r.applied for r in t):,}"),
             (f"no-op{over}", "stat-noop", f"{sum(r.noop for r in t):,}"),
             (f"held for a person{over}", "stat-held", f"{sum(r.held for r in t):,}"),
             (f"quarantined{over}", "stat-quarantined", f"{sum(r.quarantined for r in t):,}"),
             ("open conflicts", "stat-conflicts", f"{len(d.conflicts)}"),
             ("input tokens", "stat-input-tokens", f"{usage.input_tokens:,}"),
             ("output tokens", "stat-output-tokens", f"{usage.output_tokens:,}"),
             ("cache read tokens", "stat-cache-read", f"{usage.cache_read_input_tokens:,}"),
             ("cache write tokens", "stat-cache-write", f"{usage.cache_creation_input_tokens:,}"),
             ("cost", "stat-cost", _money(usage.cost_usd))]
    stat_html = "".join(f'<div><dt id="{i}-label">{_esc(label)}</dt><dd id="{i}" aria-labelledby="{i}-label">'
                        f"{_esc(v)}</dd></div>" for label, i, v in stats)

    # `fleet status`'s list, item for item; then, for the items a person acts on one by one, each of them
    detail = []
    for c in d.to_decide:
        detail.append(f"<li>conflict <code>{_esc(c['id'])}</code> on {_esc(c['where'])}: {c['candidates']} candidates "
                      f"since tick {_esc(c['opened_tick'])} (decide with <code>{_esc(c['decide'])}</code> "
                      "or its pull request)</li>")
    for e in d.escalated:
        detail.append(f"<li>task <code>{_esc(e['id'])}</code> ({_esc(e['title'])}) failed {e['failures']} times"
                      f"{': ' + _esc(e['error']) if e['error'] else ''} (<code>fleet task reopen {_esc(e['id'])}</code>)</li>")
    for w in d.dead:
        detail.append(f"<li>worker <code>{_esc(w['worker'])}</code> is dead: {_esc(w['why'])}</li>")
    needs_html = (f'<ul id="needs-you">{"".join(f"<li>{_code(n)}</li>" for n in d.needs_you)}</ul>'
                  if d.needs_you else "<p>Nothing (as <code>fleet status</code> says).</p>")
    if detail:
        needs_html += f'<p>One by one:</p><ul id="needs-detail">{"".join(detail)}</ul>'

    tick_cols = ["tick", "applied", "no-op", "held", "quarantined", "late (of the merged)"]
    figs_ticks = "".join([
        _figure("deltas", "Deltas per tick",
                f"Stacked bars, each delta once, {span}: {_peak(t, lambda r: r.applied, 'deltas applied')}; "
                f"{_peak(t, lambda r: r.noop, 'no-op')}; {_peak(t, lambda r: r.held, 'held for a person')}; "
                f"{_peak(t, lambda r: r.quarantined, 'quarantined')}.",
                tick_cols, [[r.tick, r.applied, r.noop, r.held, r.quarantined, r.late] for r in t]),
        _figure("conflicts", "Conflicts per tick",
                f"Bars of the conflicts each tick opened or joined and a line of the conflicts open after each "
                f"tick, {span}: {_peak(t, lambda r: r.conflicts, 'conflicts opened or joined')}; "
                f"{t[-1].open_conflicts if t else 0} open after the last tick.",
                ["tick", "conflicts opened or joined", "open conflicts", "resolved"],
                [[r.tick, r.conflicts, r.open_conflicts, r.resolved] for r in t]),
        _figure("quarantines", "Quarantined deltas per tick",
                f"Bars, {span}: {_peak(t, lambda r: r.quarantined, 'quarantined')}.",
                ["tick", "quarantined"], [[r.tick, r.quarantined] for r in t]),
        _figure("tokens", "Tokens per tick",
                f"Stacked bars of input, output, cache read and cache write tokens, {span}: "
                f"{_peak(t, lambda r: r.usage.tokens, 'tokens')}.",
                ["tick", "input", "output", "cache read", "cache write", "all"],
                [[r.tick, r.usage.input_tokens, r.usage.output_tokens, r.usage.cache_read_input_tokens,
                  r.usage.cache_creation_input_tokens, r.usage.tokens] for r in t]),
        _figure("cost", "Cost per tick (US dollars)",
                f"Bars, {span}: {_peak(t, lambda r: r.usage.cost_usd, 'cost')}.",
                ["tick", "cost (USD)"], [[r.tick, _money(r.usage.cost_usd)] for r in t]),
    ])
    agent_rows = [[a, act.deltas, act.ops, act.noop, act.errors, act.quarantined, act.usage.tokens,
                   _money(act.usage.cost_usd), act.last_tick if act.last_tick >= 0 else "none"] for a, act in agents]
    busiest = agents[0] if agents and (agents[0][1].ops or agents[0][1].deltas) else None
    fig_agents = _figure(
        "agents", "Agent activity per tick (ops applied)",
        f"A grid of agents by tick, darker where an agent's applied deltas had more ops, {span}; "
        f"{len(shown)} of {len(d.agents)} agents shown (the most active)"
        + (f"; the most active is {busiest[0]} with {busiest[1].ops:,} ops in {busiest[1].deltas:,} deltas." if busiest
           else "; no agent has acted yet."),
        ["agent", "deltas", "ops", "no-ops", "errors", "quarantined", "tokens", "cost (USD)", "last tick"],
        agent_rows, height=max(120, 26 * len(shown) + 60))
    worker_names = sorted({r["worker"] for r in d.worker_ticks})
    fig_workers = _figure(
        "workers", "Worker deliveries per tick",
        f"A grid of workers by tick: delivered, delivered with errors, or only quarantined; no mark where a worker "
        f"delivered nothing, {span}. {len(d.workers)} workers, {len(dead)} dead.",
        ["worker", "status", "last tick", "ticks missed", "deltas", "errors", "quarantined", "tokens"],
        [[w["worker"], w["status"], w["last_tick"], w["missed"], w["deltas"], w["errors"], w["quarantined"],
          w["tokens"]] for w in d.workers], height=max(120, 26 * len(worker_names) + 60))
    states = ["pending", "in-progress", "done", "failed"]
    fig_tasks = _figure(
        "tasks", "Tasks by state",
        "Bars: " + ", ".join(f"{d.tasks.get(s, 0)} {s}" for s in states)
        + f"; {d.tasks.get('ready', 0)} of the pending are ready.",
        ["state", "tasks"], [[s, d.tasks.get(s, 0)] for s in states] + [["ready", d.tasks.get("ready", 0)]],
        height=180)
    fig_through = _figure(
        "throughput", f"Task throughput per UTC {d.bucket}",
        f"Grouped bars of tasks created, done and failed for good per UTC {d.bucket}: "
        f"{sum(r['created'] for r in d.throughput)} created, {sum(r['done'] for r in d.throughput)} done, "
        f"{sum(r['failed'] for r in d.throughput)} failed.",
        [d.bucket, "created", "done", "failed"],
        [[r["bucket"], r["created"], r["done"], r["failed"]] for r in d.throughput])
    task_rows = "".join(f'<tr data-state="{s}"><th scope="row">{s}</th><td id="tasks-{s}">{d.tasks.get(s, 0)}</td></tr>'
                        for s in (*states, "ready", "cooling", "expired"))

    scripts = [_asset("d3.min.js"), _asset("plot.umd.min.js"), _asset("report.js")]
    csp = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
           "script-src " + " ".join(_hash(s) for s in scripts))
    history = "from the first tick" if d.all_ticks else f"the newest {len(t)} ticks"
    sections = [("summary", "Summary"), ("needs", "What needs you"), ("ticks", "Ticks"), ("agents", "Agents"),
                ("workers", "Workers"), ("tasks", "Tasks")]
    nav = "".join(f'<li><a href="#{i}">{_esc(n)}</a></li>' for i, n in sections)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="generator" content="fleet {__version__}">
<title>{_esc(d.name)}: fleet report at tick {d.tick}</title>
<style>{_CSS}</style>
</head>
<body>
<a class="skip" href="#main">Skip to the report</a>
<header>
<h1>{_esc(d.name)}: fleet report</h1>
<p>Tick <strong>{d.tick}</strong>, main <code>{d.main[:12]}</code>, made {_esc(d.generated)} by fleet {__version__};
charts show {_esc(history)} ({_esc(span)}).</p>
<nav aria-label="Sections"><ul>{nav}</ul></nav>
</header>
<main id="main">
<section id="summary" aria-labelledby="h-summary"><h2 id="h-summary">Summary</h2>
<p>Totals over the fleet's life, from <code>state/fleet.json</code> on main (as <code>fleet status</code> shows them).</p>
<dl class="stats">{stat_html}</dl></section>
<section id="needs" aria-labelledby="h-needs"><h2 id="h-needs">What needs you</h2>{needs_html}</section>
<section id="ticks" aria-labelledby="h-ticks"><h2 id="h-ticks">Ticks</h2>{figs_ticks}</section>
<section id="agents" aria-labelledby="h-agents"><h2 id="h-agents">Agents</h2>{fig_agents}</section>
<section id="workers" aria-labelledby="h-workers"><h2 id="h-workers">Workers</h2>
<p>A worker is dead when it delivered nothing in <code>watchdog.dead_after_ticks</code> merged ticks.</p>{fig_workers}</section>
<section id="tasks" aria-labelledby="h-tasks"><h2 id="h-tasks">Tasks</h2>
<p>The queue on the <code>fleet/tasks</code> branch now.</p>
<div class="table-wrap" tabindex="0" role="region" aria-label="Tasks by state now"><table id="task-states">
<caption>Tasks by state now</caption><thead><tr><th scope="col">state</th><th scope="col">tasks</th></tr></thead>
<tbody>{task_rows}</tbody></table></div>
{fig_tasks}{fig_through}</section>
</main>
<footer><p class="note">Made by <code>fleet report</code>. Charts by Observable Plot and d3 (ISC licence), inlined:
this page loads nothing from the network.</p></footer>
<script type="application/json" id="fleet-data">{_embed(data)}</script>
{"".join(f"<script>{s}</script>" for s in scripts)}
</body>
</html>
"""


@dataclass
class Written:
    """What `fleet report` wrote."""

    index: Path
    bytes: int
    ticks: int
    first_tick: int | None
    last_tick: int | None
    agents: int
    workers: int
    tasks: int

    def to_json(self) -> dict[str, Any]:
        return {"index": str(self.index), "bytes": self.bytes, "ticks": self.ticks, "first_tick": self.first_tick,
                "last_tick": self.last_tick, "agents": self.agents, "workers": self.workers, "tasks": self.tasks}


def write(out: Path, d: ReportData) -> Written:
    """Write the page as ``out/index.html`` (and ``.nojekyll``, so GitHub Pages serves it as it is)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        page = render(d).encode()
        index = out / "index.html"
        tmp = out / ".index.html.tmp"
        tmp.write_bytes(page)
        tmp.replace(index)
        (out / ".nojekyll").write_bytes(b"")
    except OSError as e:
        raise FleetError(f"{out}: cannot write the report: {e.strerror or e}") from None
    return Written(index, len(page), len(d.ticks), d.ticks[0].tick if d.ticks else None,
                   d.ticks[-1].tick if d.ticks else None, len(d.agents), len(d.workers),
                   sum(d.tasks.get(s, 0) for s in ("pending", "in-progress", "done", "failed")))
