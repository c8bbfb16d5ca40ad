"""The task queue: one JSON file per task on the ``fleet/tasks`` branch.

Every change (add, renew, complete, fail, release, sling, a watchdog return)
is a commit on that branch made through ``fleet.store``: a compare-and-swap
on the tip the change was computed from. A claim is a commit on the tip read,
pushed to the task's own claim ref (``fleet/tasks-claims/<id>``) by
compare-and-swap on the value seen there: of two claims of one task exactly
one lands, and the other re-reads and takes another task, while claims of
different tasks do not race at all. The task's next change on the branch
merges the claim commit in (``routed``). The branch's history is the audit trail, one commit per
change, each message saying who did what and why. The queue reads its
settings (lease, retries) and the agents from ``state/config.json`` on ``main``.

A claim hands out a fence (a fencing token), a number that only goes up.
Renew, complete, fail and release name it, so a holder whose lease ran out and
whose task went to someone else is refused instead of overwriting their work.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import secrets as _random_ids
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from fleet import docpath, keys, schemas
from fleet.config import CONFIG_PATH, Config
from fleet.errors import FleetError, NothingToDo
from fleet.ids import NAME_RULE, device_name, is_safe_id, printable
from fleet.repo import FleetRepo
from fleet.store import BranchStore, Change, Kind, Records

if TYPE_CHECKING:
    from fleet import overlap

BRANCH = "fleet/tasks"
TASK_DIR = "tasks"
WORKER_DIR = "workers"
STATUSES = ("pending", "in-progress", "done", "failed")
OPEN = ("pending", "in-progress")
INPUT_KEYS = {"id", "title", "body", "priority", "deps", "for", "paths"}
DEFAULT_PRIORITY = 2
MAX_FENCE = 2**53 - 1  # as the schema says: any JSON reader holds it exactly
MAX_COUNT = MAX_FENCE  # the schema's limit of attempts and failures too


def counted(n: int) -> int:
    """A counter (attempts, failures) one up, held at MAX_COUNT: past it the record
    would be quarantined at the next read, and no real queue counts that far."""
    return min(n + 1, MAX_COUNT)


# -- time ----------------------------------------------------------------
def stamp(when: _dt.datetime) -> str:
    """UTC with milliseconds, e.g. 2026-11-22T12:38:12.345Z."""
    return when.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_stamp(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def ago(seconds: float) -> str:
    """A duration as a person says it: 45s, 31m, 2h05m."""
    s = int(abs(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# -- where things live ---------------------------------------------------
def task_path(task_id: str) -> str:
    """tasks/<hh>/<id>.json: 256 folders keep each under GitHub's 3,000 entries."""
    return f"{TASK_DIR}/{hashlib.sha256(task_id.encode()).hexdigest()[:2]}/{task_id}.json"


def worker_path(worker: str) -> str:
    return f"{WORKER_DIR}/{worker}.json"


def new_task_id(count: int) -> str:
    """A short random id whose length grows with the queue, as beads does, so
    collisions stay unlikely: 4 characters to ~500 tasks, 6 to ~20,000."""
    length = 4 if count < 500 else 5 if count < 2000 else 6 if count < 20000 else 8
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "tk-" + "".join(_random_ids.choice(alphabet) for _ in range(length))


# -- a task ----------------------------------------------------------------
MISSING = docpath.MISSING

# The keys of fleet's own records are snake_case; a queue written by an earlier
# fleet says claimedBy, leaseUntil, lastTick and so on (and "token" for the
# fence), which are read as the new keys and written back in the new spelling
# at the next change.
_OLD_KEYS = {"claimedBy": "claimed_by", "claimedAt": "claimed_at", "leaseUntil": "lease_until",
             "notBefore": "not_before", "createdAt": "created_at", "updatedAt": "updated_at", "doneAt": "done_at",
             "lastTick": "last_tick",
             "token": "fence"}
# Only these keys may be absent from a task file: a task never claimed has no
# result and no error, and a completed one has "error": null.
_OPTIONAL = ("body", "done_at", "result", "error", "paths", "escalated_at")
_HELD = ("claimed_by", "claimed_at", "lease_until")  # never null while a task is in progress (the schema's if/then)


def _respelled(doc: Any) -> Any:
    """A record read from the queue branch with its keys in today's spelling. A
    key given in both spellings is left for the schema check to refuse."""
    if not isinstance(doc, dict) or not any(k in _OLD_KEYS for k in doc):
        return doc
    return {_OLD_KEYS[k] if k in _OLD_KEYS and _OLD_KEYS[k] not in doc else k: v for k, v in doc.items()}


# Not frozen: a frozen dataclass is built four times slower, and a claim on a
# queue of 10,000 tasks builds 10,000. Changes use dataclasses.replace all the same.
@dataclass(slots=True)
class Task:
    """One task, ``tasks/<hh>/<id>.json`` on the queue branch (schemas/task.schema.json)."""

    id: str
    title: str
    status: str  # one of STATUSES
    priority: int
    deps: list[str]
    for_: str | None  # the agent it was slung to ("for" on disk)
    fence: int  # the fencing token: up by one at every claim
    attempts: int
    failures: int
    claimed_by: str | None
    claimed_at: str | None
    lease_until: str | None
    not_before: str | None
    created_at: str
    updated_at: str
    body: Any = MISSING  # the optional keys: MISSING when the file has no such key
    done_at: Any = MISSING
    result: Any = MISSING
    error: Any = MISSING
    paths: Any = MISSING  # the paths it will touch (fleet.overlap), a list; MISSING: none declared
    escalated_at: Any = MISSING  # when it failed tasks.max_failures times and went to a person

    @property
    def escalated(self) -> bool:
        """Failed for good: a person must look (status "failed"; a queue from an
        earlier fleet has no escalated_at on such a task, and it is escalated all the same)."""
        return self.status == "failed"

    @classmethod
    def parse(cls, doc: Any, where: str) -> Task:
        """A task file as read (either spelling of its keys), checked against the
        protocol schema; the error names ``where``."""
        doc = _respelled(doc)
        problem = schemas.first_error(schemas.protocol("task"), doc)
        if problem:
            held = [k for k in _HELD if isinstance(doc, dict) and k in doc and doc[k] is None]
            if isinstance(doc, dict) and doc.get("status") == "in-progress" and held:  # the schema's if/then, in words
                problem = (f"at /{held[0]}: null, but a task in progress names who holds it, since when and until "
                           f"when ({', '.join(_HELD)})")
            raise FleetError(f"{where}: {problem} (schemas/task.schema.json)")
        for key in STAMPS:
            value = doc.get(key)
            if value is not None and not _is_stamp(value):
                raise FleetError(f"{where}: at /{key}: {value[:40]!r} is not a UTC time such as "
                                 "2026-11-22T12:38:12.345Z (schemas/task.schema.json)")
        if "paths" in doc:
            from fleet import overlap  # only where tasks declare paths (most queues: none)

            try:
                overlap.check(doc["paths"])
            except overlap.PathRule as e:
                raise FleetError(f"{where}: {e} (fleet/overlap.py)") from None
        return cls.of(doc)

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Task:
        """A task from a record the store has already checked (``Task.parse``)."""
        return cls(*[doc.get(key, MISSING) if optional else doc[key] for key, optional in _READ])

    def to_json(self) -> dict[str, Any]:
        """The file's content, for ``fleet.canonical``."""
        out = {_key(f): getattr(self, f) for f in _FIELDS}
        return {k: v for k, v in out.items() if v is not MISSING}


def _key(name: str) -> str:
    """A field's key on disk: its name, but for ``for_`` ("for" is a Python keyword)."""
    return "for" if name == "for_" else name


_FIELDS = tuple(Task.__dataclass_fields__)
_READ = tuple((_key(f), f in _OPTIONAL) for f in _FIELDS)  # in field order: Task.of builds by position
STAMPS = ("claimed_at", "lease_until", "not_before", "created_at", "updated_at", "done_at", "escalated_at")


# -- a read of the branch ------------------------------------------------
@dataclass(frozen=True)
class Doom:
    """Why a pending task can never be ready: ``by``, the task at fault, and ``kind``:
    "failed", "missing" (no such task), "quarantined" (its file cannot be read),
    "cycle" (pending tasks wait for each other in a circle, ``cycle``, with ``by``
    on it) or "fence" (its fence is at MAX_FENCE, so no claim can raise it)."""

    by: str
    kind: str
    cycle: tuple[str, ...] = ()  # the circle, each waiting for the next (the last for the first)
    at: int = 0  # where ``by`` is on it

    def text(self, task_id: str) -> str:
        """The reason, as said of task ``task_id`` (``by`` itself, or one waiting for it)."""
        if self.kind == "failed":
            return f"{self.by} failed"
        if self.kind == "missing":
            return f"{self.by} is not in the queue"
        if self.kind == "quarantined":
            return f"{self.by} is quarantined ({BRANCH}:{task_path(self.by)} cannot be read)"
        if self.kind == "fence":
            what = "its fence" if self.by == task_id else f"the fence of {self.by}"
            return f"{what} is at its limit ({MAX_FENCE}), so no claim can raise it"
        ring = ring_text(self.cycle, self.at)
        return f"in a dependency cycle {ring}" if self.by == task_id else f"{self.by} is in a dependency cycle {ring}"

    def fix(self) -> str:
        """What a person does about it."""
        if self.kind == "failed":
            return f"`fleet task reopen {self.by}` gives it another go"
        if self.kind == "missing":
            return f"add it (`fleet task add --id {self.by} TITLE`) or drop it from the deps on {BRANCH}"
        if self.kind == "quarantined":
            return f"fix or remove that file on {BRANCH}, or drop {self.by} from the deps"
        if self.kind == "fence":
            return f"add the work again as a new task (`fleet task add`) and drop {self.by} from any deps"
        return f"edit the deps of one of them on {BRANCH} to break the circle"


@dataclass(frozen=True)
class Held:
    """Why a task is held back: a task in flight (``by``) declares paths that overlap its own."""

    by: Task
    where: overlap.Shared

    def __str__(self) -> str:
        return f"shares paths with {self.by.id} (in progress, held by {self.by.claimed_by}): {self.where}"


def _hand_out_order(t: Task) -> tuple[bool, int, str, str]:
    return (t.for_ is None, t.priority, t.created_at, t.id)


@dataclass
class Queue:
    """The tasks and worker records at one commit of the branch."""

    tip: str | None
    tasks: dict[str, Task] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    claim_refs: dict[str, str] = field(default_factory=dict)  # task id -> the commit its claim ref is at
    unfolded: dict[str, str] = field(default_factory=dict)  # task id -> its claim commit the branch has not merged yet
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (file or claim ref, why): no record, not read
    # derived from tasks on first use (a Queue is one read of the branch, never changed)
    _topo: list[str] | None = field(default=None, init=False, repr=False, compare=False)
    _waves: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)
    _doomed: dict[str, Doom | None] | None = field(default=None, init=False, repr=False, compare=False)
    _in_flight: overlap.Index | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, records: Records) -> Queue:
        """The queue the branch's records and the claim refs make; a task filed under
        another id's path is refused. A task's claim ref holds its latest claim: it
        is the task's state while its fence is above the branch's (the branch has not
        merged that claim yet); on the same fence the branch's record is the newer."""
        q = cls(records.tip, quarantined=list(records.quarantined))
        for path, doc in records.docs.items():
            if path.startswith(TASK_DIR + "/"):
                if path != task_path(doc["id"]):  # a name that is not its task's: quarantined, as a bad file is
                    q.quarantined.append((f"{BRANCH}:{path}", f"task '{printable(doc['id'], 60)}' belongs at "
                                                              f"{task_path(doc['id'])}"))
                    continue
                q.tasks[doc["id"]] = Task.of(doc)
            elif path != worker_path(doc["worker"]):
                q.quarantined.append((f"{BRANCH}:{path}", f"worker '{printable(doc['worker'], 60)}' belongs at "
                                                          f"{worker_path(doc['worker'])}"))
            else:
                q.workers[doc["worker"]] = doc
        for task_id, (commit, doc) in records.claims.items():
            q.claim_refs[task_id] = commit
            old = q.tasks.get(task_id)
            if doc is not None and old is not None and doc["fence"] > old.fence:
                q.tasks[task_id] = Task.of(doc)
                q.unfolded[task_id] = commit
        return q

    def with_tasks(self, tasks: dict[str, Task]) -> Queue:
        """This read with ``tasks`` as the tasks (a decision's view after its own earlier
        steps): the same tip, workers and claim refs, so whatever routes the change still
        sees which claims the branch has not merged yet."""
        return Queue(self.tip, tasks, self.workers, self.claim_refs, self.unfolded, self.quarantined)

    def task(self, task_id: str) -> Task:
        """The task ``task_id``; an error that says how to list them if there is none."""
        t = self.tasks.get(task_id)
        if t is None:
            raise FleetError(f"no task {task_id!r} in the queue ({len(self.tasks)} tasks; `fleet task list` shows them)")
        return t

    def blockers(self, t: Task) -> list[str]:
        """The dependencies of ``t`` that are not done yet."""
        return [d for d in t.deps if d not in self.tasks or self.tasks[d].status != "done"]

    def _order(self) -> list[str]:
        """Every task after its deps; of a cycle on the branch (only a hand edit makes
        one) the dep that closes it is left out, so one read never stops the queue."""
        if self._topo is None:
            self._topo = dependency_order(self.tasks, sorted(self.tasks), cycles={})
        return self._topo

    def doom(self, t: Task) -> Doom | None:
        """Why pending ``t`` can never be ready as the queue stands, or None: it waits,
        directly or not, for a task that failed, that is not in the queue (or whose file
        is quarantined), or whose fence is at its limit; or pending tasks wait for each
        other in a circle through it. The rest of the queue goes on all the same."""
        if self._doomed is None:
            pending = {i: x for i, x in self.tasks.items() if x.status == "pending"}
            cycles: dict[str, tuple[tuple[str, ...], int]] = {}
            # deps that are not pending are left out: done ones wait for nothing, in-progress
            # ones may still be done, and the others doom their dependents directly (below)
            order = dependency_order(pending, sorted(pending), cycles=cycles)
            bad = {w for w, _ in self.quarantined}
            doomed: dict[str, Doom | None] = {}
            for i in order:
                found: Doom | None = None
                if i in cycles:
                    found = Doom(i, "cycle", *cycles[i])
                elif self.tasks[i].fence >= MAX_FENCE:
                    found = Doom(i, "fence")
                for d in self.tasks[i].deps if found is None else ():
                    dep = self.tasks.get(d)
                    if dep is None:
                        found = Doom(d, "quarantined" if f"{BRANCH}:{task_path(d)}" in bad else "missing")
                    elif dep.status == "failed":
                        found = Doom(d, "failed")
                    elif dep.status == "pending" and doomed.get(d) is not None:
                        found = doomed[d]
                    if found:
                        break
                doomed[i] = found
            self._doomed = doomed
        return self._doomed.get(t.id)

    def doomed_by(self, t: Task) -> str | None:
        """The task whose state keeps pending ``t`` from ever being ready (``doom``): one
        that failed (`fleet task reopen` gives it another go), is missing or quarantined,
        sits on a dependency cycle, or has its fence at the limit."""
        found = self.doom(t)
        return None if found is None else found.by

    def waves(self) -> dict[str, int]:
        """Each task's wave, its depth in the dependency graph: 0 with no deps,
        else one more than the highest wave among its deps. Tasks of one wave
        never wait for each other; a wave runs once the waves before it are done."""
        if self._waves is None:
            waves: dict[str, int] = {}
            for i in self._order():
                waves[i] = max((waves.get(d, 0) + 1 for d in self.tasks[i].deps), default=0)
            self._waves = waves
        return self._waves

    def paths_held_by(self, t: Task) -> Held | None:
        """The task in progress whose paths overlap those ``t`` declares, if any
        (fleet.overlap): while it is in flight, ``t`` is not handed out."""
        if t.paths is MISSING:
            return None
        from fleet import overlap  # only where tasks declare paths (most queues: none)

        if self._in_flight is None:
            index = overlap.Index()
            for other in self.tasks.values():
                if other.status == "in-progress" and other.paths is not MISSING:
                    index.add(other.id, other.paths)
            self._in_flight = index
        for other_id in sorted(self._in_flight.candidates(t.paths)):
            if other_id != t.id:
                found = overlap.shared(t.paths, self.tasks[other_id].paths)
                if found is not None:
                    return Held(self.tasks[other_id], found)
        return None

    def _ready_but_paths(self, t: Task, agent: str | None, at: _dt.datetime) -> bool:
        return (
            t.status == "pending"
            and (t.for_ is None or agent is None or t.for_ == agent)
            and (t.not_before is None or parse_stamp(t.not_before) <= at)
            and not self.blockers(t)
            and t.fence < MAX_FENCE  # a claim raises it: at the limit, none can (a hand edit)
        )

    def is_ready(self, t: Task, agent: str | None, at: _dt.datetime) -> bool:
        """Whether ``agent`` (None: anyone) may claim ``t`` at ``at``."""
        # most tasks declare no paths: no call for them (ready() asks this of every task)
        return self._ready_but_paths(t, agent, at) and (t.paths is MISSING or self.paths_held_by(t) is None)

    def ready(self, agent: str | None, at: _dt.datetime) -> list[Task]:
        """Ready tasks in the order they are handed out: slung to this agent
        first, then by priority (0 first), then oldest first."""
        out = [t for t in self.tasks.values() if self.is_ready(t, agent, at)]
        out.sort(key=_hand_out_order)
        return out

    def held_back(self, agent: str | None, at: _dt.datetime) -> list[tuple[Task, Held]]:
        """Tasks that would be ready but for a task in flight whose paths overlap theirs, in claim order."""
        out = []
        for t in self.tasks.values():
            if t.paths is not MISSING and self._ready_but_paths(t, agent, at):
                held = self.paths_held_by(t)
                if held is not None:
                    out.append((t, held))
        out.sort(key=lambda pair: _hand_out_order(pair[0]))
        return out

    def counts(self) -> dict[str, int]:
        """How many tasks are in each status."""
        c = {s: 0 for s in STATUSES}
        for t in self.tasks.values():
            c[t.status] += 1
        return c


def check_task(doc: Any, where: str) -> dict[str, Any]:
    """The store's check of a task file: parsed as a ``Task``, kept as its record."""
    return Task.parse(doc, where).to_json()


_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")


def _is_stamp(value: str) -> bool:
    """Whether ``value`` is a time fleet can read and compute with: the pattern, a real
    date (2026-02-30 matches, and is none), and one that is still a date in UTC
    (9999-12-31T23:59:59-14:00 is not: a report that buckets it by day would crash)."""
    if not _STAMP.match(value):
        return False
    try:
        parse_stamp(value).astimezone(_dt.UTC)
    except (ValueError, OverflowError):
        return False
    return True


def check_worker(doc: Any, where: str) -> dict[str, Any]:
    """The store's check of a worker record (either spelling of its keys)."""
    doc = _respelled(doc)
    problem = schemas.first_error(schemas.protocol("worker"), doc)
    if problem:
        raise FleetError(f"{where}: {problem} (schemas/worker.schema.json)")
    checked: dict[str, Any] = doc  # the schema says it is an object
    return checked


KINDS = (Kind(TASK_DIR, "id", "task", check_task), Kind(WORKER_DIR, "worker", "worker", check_worker))


def _claim_above(claim: dict[str, Any], on_branch: dict[str, Any] | None) -> bool:
    """Whether a claim (a task's record on its claim ref) is newer than the branch's
    record of the task: its fence is higher (the branch has not merged it)."""
    on_branch = _respelled(on_branch)
    return isinstance(on_branch, dict) and isinstance(on_branch.get("fence"), int) and claim["fence"] > on_branch["fence"]


MAX_REASON = 4000  # characters of a failure's reason kept (a person's longer one is refused: fleet task fail)
# A task that no claim can take again: its claim ref goes when the branch holds its last claim.
FINAL = ("done", "failed")
MAX_DROPS = 100  # claim refs one change deletes at most (the rest go with the next changes)


class TaskQueue:
    """The queue of one fleet repository and its remote."""

    def __init__(self, repo: FleetRepo) -> None:
        self.repo = repo
        self.git = repo.git
        self.store = BranchStore(repo, BRANCH, KINDS, what="task queue", cache="queue", fault="task",
                                 claim_path=task_path, claim_above=_claim_above)
        self.store.quarantine = True  # a bad file on the branch is named and left, never the end of the queue
        self.quarantined: list[tuple[str, str]] = []  # what the last read of this queue left unread, and why

    def _of(self, records: Records) -> Queue:
        q = Queue.of(records)
        self.quarantined = q.quarantined
        return q

    def fetch(self) -> None:
        """Fetch the queue and main: the moment state changes here."""
        self.store.fetch(main=True)

    def load(self) -> tuple[Queue, Config]:
        """Fetch, then read the queue and main's config together (which also
        says plainly when this is no fleet repository)."""
        self.fetch()
        records = self.store.read(config_of=self.repo.main())
        assert records.config is not None
        return self._of(records), records.config

    def read(self, tip: str | None = None, *, under: str | None = None) -> Queue:
        """The queue as last fetched: the branch and the claim refs, the one view every
        reader of the queue takes (a task's claim lives on its claim ref until the branch
        merges it: the branch alone is no view of the queue). ``tip``: the branch's
        commit, with ``under`` the ref folder that a read-only fetch put its claim refs in
        (``Workspace.fetch_tasks``); default the tracking refs of ``fetch``."""
        claims = self.store.claim_tips(under + f"{BRANCH}-claims/" if under is not None else None)
        return self._of(self.store.read(tip, claims=claims))

    def publish(self, new: str, old: str | None) -> bool:
        """Move the branch from ``old`` to ``new`` if nobody moved it meanwhile."""
        return self.store.publish(new, old)

    def change(self, decide: Callable[[Queue, Config, _dt.datetime], Change], *,
               dry_run: bool = False, patience: float | None = None, fetched: bool = False,
               priority: int = 0, off_branch: bool = False) -> tuple[Change, bool]:
        """Fetch, decide, commit, push; on a lost race, re-read and decide again
        (``BranchStore.change``): a claimer that lost takes the next ready task.
        ``fetched``: the caller has just fetched main and the queue. ``priority``:
        a holder's change (complete, renew, fail, release: True or store.HOLDER), which
        claims yield to; store.FIRST: the watchdog's returns, which holders yield to too.

        Every claim (a commit that raises a task's fence) also moves that task's
        claim ref by compare-and-swap, and every other change of a task whose claim
        the branch has not merged yet merges it (see ``routed``). ``off_branch``:
        a change made only of claims of tasks that declare no paths goes to their
        claim refs alone, not to the branch, so claimers of different tasks do not
        race (``fleet task claim``)."""
        return self.store.change(lambda records, cfg, at: routed(self._of(records), decide, cfg, at, off_branch),
                                 dry_run=dry_run, patience=patience, fetched=fetched, priority=priority,
                                 eager=off_branch)


def routed(q: Queue, decide: Callable[[Queue, Config, _dt.datetime], Change], cfg: Config, at: _dt.datetime,
           off_branch: bool) -> Change:
    """``decide``'s change, with where its commits go: a commit that raises a task's
    fence claims it (its claim ref moves there, compare-and-swap on the value read,
    so two claims of one task never both land, wherever each was decided); the first
    commit that changes a task whose claim is not merged yet merges that claim commit
    (the branch's history keeps every claim, before the change after it). A
    change of claims alone, of tasks that declare no paths, goes off the branch when
    ``off_branch``: tasks that declare paths are claimed on the branch, whose
    compare-and-swap keeps two overlapping ones from being claimed at once."""
    ch = decide(q, cfg, at)
    merged: set[str] = set()
    claims_only = bool(ch.commits)
    for i, (_, docs) in enumerate(ch.commits):
        for path, doc in docs.items():
            if not path.startswith(TASK_DIR + "/"):
                claims_only = False
                continue
            old = q.tasks.get(doc["id"])
            if old is not None and doc["fence"] > old.fence:
                ch.claims[i] = doc["id"]
                claims_only = claims_only and len(docs) == 1 and "paths" not in doc
            else:
                claims_only = False
                if doc["id"] in q.unfolded and doc["id"] not in merged:
                    ch.merges.setdefault(i, []).append(q.unfolded[doc["id"]])
                    merged.add(doc["id"])
    ch.off_branch = off_branch and claims_only
    if not ch.off_branch:
        # cleanup: the claim refs of tasks done or failed for good once the branch holds their
        # claim (this change merges it, or an earlier one did), compare-and-swap on the value read
        final = {doc["id"]: doc["status"] in FINAL for _, docs in ch.commits for path, doc in docs.items()
                 if path.startswith(TASK_DIR + "/")}
        for task_id, commit in q.claim_refs.items():
            t = q.tasks.get(task_id)
            if final.get(task_id, t is not None and t.status in FINAL and task_id not in q.unfolded) \
                    and (task_id not in q.unfolded or task_id in merged):
                ch.drops[task_id] = commit
                if len(ch.drops) >= MAX_DROPS:
                    break
    return ch


# -- building and checking tasks ------------------------------------------
def new_task(item: Any, where: str, cfg: Config, at: _dt.datetime) -> Task:
    """A pending task from one input object ({title, body?, priority?, deps?, for?, id?})."""
    if not isinstance(item, dict):
        raise FleetError(f"{where}: a task must be a JSON object with at least a title")
    unknown = sorted(set(item) - INPUT_KEYS)
    if unknown:
        raise FleetError(f"{where}: unknown field {unknown[0]!r} (a task has {', '.join(sorted(INPUT_KEYS))})")
    if "id" in item and not is_safe_id(item["id"]):
        raise FleetError(f"{where}: id {str(item['id'])[:60]!r} is not a name ({NAME_RULE})")
    if "id" in item and device_name(item["id"]):  # tasks/<hh>/<id>.json: no clone on Windows could hold it
        raise FleetError(f"{where}: id {item['id']!r} is a name Windows keeps for a device; pick another")
    if "id" in item and keys.redact(item["id"]) != item["id"]:
        raise FleetError(f"{where}: id contains a secret from the environment; pick another id")
    target = item.get("for")
    if target is not None and not isinstance(target, str):
        raise FleetError(f"{where}: at /for: must be an agent's name or null (schemas/task.schema.json)")
    if target is not None:
        problem = claimer_problem(cfg, target)
        if problem:
            raise FleetError(f"{where}: for: {problem}")
    priority = item.get("priority", DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise FleetError(f"{where}: at /priority: {printable(json.dumps(priority)[:20])} is not a whole number from 0 to 4 "
                         "(schemas/task.schema.json)")
    paths = item.get("paths", MISSING)
    if paths is not MISSING:
        from fleet import overlap  # only where tasks declare paths (most queues: none)

        try:
            paths = overlap.check(paths) or MISSING  # no paths declared: none stored
        except overlap.PathRule as e:
            raise FleetError(f"{where}: {e}") from None
    for name in ("title", "body"):  # a person's text reaches a commit masked: refused, not silently changed
        if isinstance(item.get(name), str):
            keys.refuse(item[name], f"{where}: {name}")
    stamp_ = stamp(at)
    title = cast(str, item.get("title"))  # a missing or odd title: the schema check below refuses it
    t = Task(id=item.get("id", ""), title=title, status="pending", priority=priority,
             deps=item.get("deps", []), for_=target, fence=0, attempts=0, failures=0, claimed_by=None,
             claimed_at=None, lease_until=None, not_before=None, created_at=stamp_, updated_at=stamp_,
             body=item.get("body", MISSING), paths=paths)
    probe = dict(t.to_json(), id=t.id or "tk-probe")
    problem = schemas.first_error(schemas.protocol("task"), probe)
    if problem:
        raise FleetError(f"{where}: {problem} (schemas/task.schema.json)")
    return t


def claimer_problem(cfg: Config, name: str) -> str | None:
    """Why ``name`` may not claim tasks (or have one slung to it), or None when it may.
    Claimers are configured apart from the tick agents (``tasks.claimers``)."""
    if not is_safe_id(name):
        return f"'{printable(name, 60)}' is no claimer's name ({NAME_RULE})"
    if cfg.tasks.may_claim(name, cfg.agents):
        return None
    if name in cfg.agents:
        return f"{name} is a tick agent and tasks.agents_claim is false, so only tasks.claimers may claim ({CONFIG_PATH})"
    patterns = ", ".join(cfg.tasks.claimers[:6]) + (", …" if len(cfg.tasks.claimers) > 6 else "")
    return (f"{name} may not claim tasks: it is no tick agent and matches nothing in tasks.claimers "
            f"({patterns or 'none set'}; {CONFIG_PATH})")


def stranded(cfg: Config, t: Task) -> str | None:
    """Why no claim takes pending ``t``, slung to a name that may not claim tasks under
    ``cfg`` (an agent the config no longer has, say), or None: it waits for a person to
    sling it again, and `fleet status` says so."""
    if t.status != "pending" or not t.for_:
        return None
    problem = claimer_problem(cfg, t.for_)
    return None if problem is None else f"slung to {t.for_}, but {problem}"


def stranded_line(found: list[tuple[Task, str]]) -> str:
    """`fleet status`'s line for the stranded tasks (:func:`stranded`), first named."""
    t, why = found[0]
    more = f" (and {len(found) - 1} more: `fleet task list` marks them)" if len(found) > 1 else ""
    return (f"{len(found)} task(s) no claim takes: {t.id} is {why}{more}; `fleet task sling {t.id} AGENT` "
            f"gives it to another, `fleet task sling {t.id}` to anyone")


def never_ready(q: Queue) -> list[tuple[Task, Doom]]:
    """The pending tasks that can never be ready for a cause only a person's edit of the
    branch makes (a dependency cycle, a dep not in the queue or quarantined, a fence at its
    limit), by id. Those waiting for a failed task are left out: `fleet status` names
    the failed ones already (escalated)."""
    out = []
    for t in sorted(q.tasks.values(), key=lambda t: t.id):
        doom = q.doom(t) if t.status == "pending" else None
        if doom is not None and doom.kind != "failed":
            out.append((t, doom))
    return out


def never_ready_line(found: list[tuple[Task, Doom]]) -> str:
    """`fleet status`'s line for :func:`never_ready`, the first named with what to do."""
    t, doom = found[0]
    more = f" (and {len(found) - 1} more: `fleet task list` marks them)" if len(found) > 1 else ""
    return f"{len(found)} task(s) can never be ready, such as {t.id}: {doom.text(t.id)}{more}; {doom.fix()}"


CYCLE_SHOWN = 8  # tasks of a dependency cycle named in one line; the rest are "…"


class DependencyCycle(FleetError):
    """Tasks that wait for each other in a circle: none of them can ever be ready.
    ``path``: the circle, each waiting for the next, the first again at the end;
    ``root``: the task whose deps led to it."""

    def __init__(self, path: list[str], root: str = "") -> None:
        super().__init__(f"deps: a cycle would never be ready: {ring_text(path[:-1], 0)}")
        self.path = path
        self.root = root or path[0]


def ring_text(cycle: Sequence[str], start: int) -> str:
    """A dependency cycle from ``cycle[start]`` round to it again, each waiting for the next,
    in one bounded line: at most CYCLE_SHOWN tasks, "…" for the rest, and the last two
    (the dep that closes it) always named, so a circle of thousands is still one short line."""
    n = len(cycle)
    names = [cycle[(start + k) % n] for k in range(n)] + [cycle[start % n]]
    if len(names) > CYCLE_SHOWN + 1:
        names = [*names[:CYCLE_SHOWN - 2], "…", *names[-2:]]
    return " -> ".join(names)


def dependency_order(tasks: dict[str, Task], roots: list[str], *,
                     cycles: dict[str, tuple[tuple[str, ...], int]] | None = None) -> list[str]:
    """``roots`` and every task they wait for, each after its deps (a dep not in
    ``tasks`` is left out); DependencyCycle when deps go round in a circle.
    Iterative: a chain of 10,000 tasks is no deeper than one.

    ``cycles``: a cycle is recorded there instead (for each task on it not there
    yet: the circle, each task waiting for the next, and where on it the task is)
    and the dep that closes it left out, so a reader of a branch a person broke
    still gets every task in an order."""
    order: list[str] = []
    finished: set[str] = set()
    for root in roots:
        if root in finished or root not in tasks:
            continue
        stack = [(root, iter(tasks[root].deps))]
        on_path = {root: 0}
        while stack:
            node, deps = stack[-1]
            for d in deps:
                if d in finished or d not in tasks:
                    continue
                if d in on_path:
                    if cycles is None:
                        raise DependencyCycle([*(n for n, _ in stack[on_path[d]:]), d], root)
                    if node not in cycles:  # (one circle a task is enough: the rest wait for it)
                        ring = tuple(n for n, _ in stack[on_path[d]:])
                        for k, n in enumerate(ring):
                            cycles.setdefault(n, (ring, k))
                    continue
                on_path[d] = len(stack)
                stack.append((d, iter(tasks[d].deps)))
                break
            else:
                stack.pop()
                del on_path[node]
                finished.add(node)
                order.append(node)
    return order


def holder_check(t: Task, fence: int, agent: str | None, verb: str) -> None:
    """Refuse a stale or foreign holder: the fence must be the current one."""
    if t.status == "done":
        raise FleetError(f"cannot {verb} task {t.id}: it is already done (by {t.claimed_by}, fence {t.fence})")
    if t.status != "in-progress":
        why = ("it was never claimed" if t.fence == 0 else
               f"failed for good after {t.failures} failures" if t.status == "failed" else
               "it went back to the queue (the lease ran out, or it was failed or released)")
        raise FleetError(f"cannot {verb} task {t.id}: it is {t.status}, not in progress (fence {t.fence}): {why}")
    if fence > t.fence:
        raise FleetError(f"cannot {verb} task {t.id}: no claim was given fence {fence} (the current one is "
                         f"{t.fence}, held by {t.claimed_by})")
    if fence != t.fence:
        then = "drop your result" if verb in ("complete", "fail") else "stop working on it"
        raise FleetError(f"cannot {verb} task {t.id}: fence {fence} is stale, the task was claimed again "
                         f"(fence {t.fence}, by {t.claimed_by}); {then}")
    if agent is not None and agent != t.claimed_by:
        raise FleetError(f"cannot {verb} task {t.id}: it is held by {t.claimed_by}, not {printable(agent, 60)}")


def cooldown(cfg: Config, at: _dt.datetime) -> str:
    """When a task that came back unfinished is handed out again (``tasks.retry_delay_seconds``)."""
    return stamp(at + _dt.timedelta(seconds=cfg.tasks.retry_delay_seconds))


def returned(t: Task, cfg: Config, at: _dt.datetime, reason: str) -> tuple[Task, str]:
    """A failed attempt: back to pending after the cooldown, or, after
    ``tasks.max_failures``, failed for good and escalated to a person (the
    dead-letter state: ``fleet status`` flags it, the watchdog may open an issue)."""
    failures = counted(t.failures)
    if failures >= cfg.tasks.max_failures:
        new = replace(t, status="failed", failures=failures, lease_until=None, error=reason, escalated_at=stamp(at))
        return new, (f"\n\n{printable(reason, 2000)}\nFailed {failures} times: escalated, given up until a person "
                     f"looks (tasks.max_failures); `fleet task reopen {t.id}` gives it another go.")
    later = cooldown(cfg, at)
    new = replace(t, status="pending", failures=failures, claimed_by=None, claimed_at=None, lease_until=None,
                  not_before=later, error=reason)
    return new, f"\n\n{printable(reason, 2000)}\nReady again at {later} (failure {failures} of {cfg.tasks.max_failures})."


def quarantine_lines(quarantined: list[tuple[str, str]], limit: int = 8) -> list[str]:
    """One line per file (or claim ref) the queue left unread (``Queue.quarantined``), at
    most ``limit`` and a count of the rest."""
    lines = [f"warning: {printable(where, 200)}: {why}; quarantined (left in place, not read)"
             for where, why in quarantined[:limit]]
    if len(quarantined) > limit:
        lines.append(f"warning: and {len(quarantined) - limit} more quarantined files on {BRANCH}")
    return lines


# -- changes of state ----------------------------------------------------------
# Each takes the queue as read and plain values, and decides; the caller commits
# the answer through ``TaskQueue.change``, which decides again on a lost race.
@dataclass(frozen=True)
class Step:
    """One task's change: the task after it, and the commit message that says
    who did what and why (None: the queue already says so, nothing to commit)."""

    task: Task
    message: str | None = None

    def change(self) -> Change:
        """The store's change: one commit of the task's file, or none."""
        if self.message is None:
            return Change([], self)
        return Change([(self.message, {task_path(self.task.id): self.task.to_json()})], self)


@dataclass(frozen=True)
class Overlap:
    """A new task whose paths overlap those of an open task (not an error: a warning)."""

    task: str
    other: str
    status: str  # the other task's
    where: overlap.Shared

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "with": self.other, "status": self.status, "mine": self.where.mine,
                "theirs": self.where.theirs, "covers": self.where.covers}

    def __str__(self) -> str:
        return f"{self.task} shares paths with {self.other} ({self.status}): {self.where}"


@dataclass(frozen=True)
class Added:
    """What an add decided: the new tasks, in the order given, and the ids that
    were already there with the same content (a rerun)."""

    added: dict[str, Task]
    existing: list[str]
    overlaps: list[Overlap] = field(default_factory=list)

    def change(self) -> Change:
        """One commit for every new task, or none."""
        if not self.added:
            return Change([], self)
        titles = [printable(t.title) for t in self.added.values()]
        first = next(iter(self.added))
        subject = f"add {first}: {titles[0]}" if len(self.added) == 1 else f"add {len(self.added)} tasks"
        body = "\n".join(f"- {i}: {title}" for i, title in zip(self.added, titles, strict=True)) if len(self.added) > 1 else ""
        message = f"task {subject}\n\n{body}".strip() + "\n"
        return Change([(message, {task_path(i): t.to_json() for i, t in self.added.items()})], self)


def add(q: Queue, cfg: Config, at: _dt.datetime, items: list[tuple[Any, str]]) -> Added:
    """Pending tasks from input objects, each with where it came from. A task
    whose id exists with the same content is already there (a rerun); with
    other content, or with deps that are unknown, failed or circular, it is an error."""
    fresh: dict[str, Task] = {}
    origin: dict[str, str] = {}
    same: list[str] = []
    bad = {w for w, _ in q.quarantined}  # a quarantined file stays where it is: its path is taken
    for item, where in items:
        t = new_task(item, where, cfg, at)
        if t.id and f"{BRANCH}:{task_path(t.id)}" in bad:
            raise FleetError(f"{where}: {BRANCH}:{task_path(t.id)} is quarantined (no task can be read from it); "
                             "pick another id, or remove that file from the branch")
        if t.id:
            if t.id in fresh:
                raise FleetError(f"{where}: task id {t.id!r} appears twice in this batch (first at {origin[t.id]})")
            old = q.tasks.get(t.id)
            if old is not None:
                # what was given at creation; `for` may have been slung since
                if (old.title, old.body, old.priority, old.deps, old.paths) != (t.title, t.body, t.priority, t.deps, t.paths):
                    raise FleetError(f"{where}: task id {t.id!r} already exists with other content "
                                     f"({BRANCH}:{task_path(t.id)}); pick another id")
                same.append(t.id)
                continue
        else:
            while not t.id or t.id in q.tasks or t.id in fresh or f"{BRANCH}:{task_path(t.id)}" in bad:
                t = replace(t, id=new_task_id(len(q.tasks) + len(fresh) + len(items)))
        fresh[t.id] = t
        origin[t.id] = where
    everything = {**q.tasks, **fresh}
    for t in fresh.values():
        unknown = [d for d in t.deps if d not in everything]
        if unknown:
            raise FleetError(f"{origin[t.id]}: deps: no task {unknown[0]!r} in the queue or this batch")
        failed = [d for d in t.deps if everything[d].status == "failed"]
        if failed:
            raise FleetError(f"{origin[t.id]}: deps: task {failed[0]!r} has failed, so this one could never "
                             f"be ready; `fleet task reopen {failed[0]}` first")
    try:
        dependency_order(everything, list(fresh))
    except DependencyCycle as e:
        raise _cycle_refused(e, list(fresh), origin) from None
    return Added(fresh, same, _overlaps(q, fresh, everything))


def _cycle_refused(e: DependencyCycle, batch: list[str], origin: dict[str, str]) -> FleetError:
    """A cycle an add would make, named at the line of the task that closes it (of the new
    tasks on it, the last given: once it is there, the circle is whole), the circle shown
    from its dep round to it; or, for a cycle already on the branch that a new task would
    wait for, at that task's line."""
    cycle = e.path[:-1]
    on = [i for i in batch if i in cycle]
    if not on:
        return FleetError(f"{origin[e.root]}: deps: task {e.root} would never be ready: it waits for a dependency "
                          f"cycle already on {BRANCH}, {ring_text(cycle, 0)}; break it first (`fleet task list` "
                          "marks it)")
    closer = on[-1]
    return FleetError(f"{origin[closer]}: deps: a cycle would never be ready: "
                      f"{ring_text(cycle, cycle.index(closer) + 1)} (task {closer} closes it)")


def _overlaps(q: Queue, fresh: dict[str, Task], everything: dict[str, Task]) -> list[Overlap]:
    """Each new task's overlaps with open tasks (and with the others of its batch),
    but for pairs that deps already order: those never run at once anyway."""
    from fleet import overlap  # only where tasks declare paths (most queues: none)
    index = overlap.Index()
    for t in q.tasks.values():
        if t.status in OPEN and t.paths is not MISSING:
            index.add(t.id, t.paths)
    out = []
    for t in fresh.values():
        if t.paths is MISSING:
            continue
        for other_id in sorted(index.candidates(t.paths)):
            other = everything[other_id]
            found = overlap.shared(t.paths, other.paths)
            if found is not None and other_id not in dependency_order(everything, [t.id]) \
                    and t.id not in dependency_order(everything, [other_id]):
                out.append(Overlap(t.id, other_id, other.status, found))
        index.add(t.id, t.paths)
    return out


def claim(q: Queue, cfg: Config, at: _dt.datetime, agent: str, *, lease: float | None = None,
          task_id: str | None = None, spread: bool = False) -> Step:
    """``agent`` claims the first ready task (or ``task_id``): a new fence
    and a lease of ``lease`` seconds (default ``tasks.lease_seconds``).
    NothingToDo when none is ready yet; FleetError when waiting cannot help.

    ``spread``: among the first ready tasks that the hand-out order cannot tell
    apart but by id (same hook, priority and age: tasks added in one batch), one
    at random, so that claimers racing on claim refs seldom pick the same task."""
    seconds = lease if lease is not None else cfg.tasks.lease_seconds
    if task_id is not None:
        t = q.task(task_id)
        if not q.is_ready(t, agent, at):
            doom = q.doom(t) if t.status == "pending" else None
            if t.status in ("done", "failed") or doom:
                # waiting cannot help: say so and fail, so a polling loop stops
                why = (f"task {task_id} is never ready: {doom.text(t.id)}; {doom.fix()}" if doom
                       else _why_not_ready(q, t, agent, at))
                raise FleetError(f"cannot claim: {why}")
            raise NothingToDo(_why_not_ready(q, t, agent, at))
    else:
        ready = q.ready(agent, at)
        if not ready:
            waits = sorted(t.not_before for t in q.tasks.values() if t.status == "pending"
                           and t.not_before and t.for_ in (None, agent) and not q.blockers(t))
            soon = f"; the next is ready at {waits[0]}" if waits else ""
            held = q.held_back(agent, at)
            if held:
                soon += (f"; {len(held)} held back while a task in flight shares their paths, such as "
                         f"{held[0][0].id}, which {held[0][1]}")
            raise NothingToDo(f"no task is ready for {agent} ({_summary(q)}){soon}")
        t = ready[0]
        if spread:
            first = _hand_out_order(t)[:3]
            tied = 1
            while tied < len(ready) and _hand_out_order(ready[tied])[:3] == first:
                tied += 1
            t = ready[_random_ids.randbelow(tied)]
    if t.fence >= MAX_FENCE:  # (ready() leaves such a task out: only a hand edit puts a fence there)
        raise FleetError(f"cannot claim task {t.id}: its fence is at its limit ({MAX_FENCE}), so no claim can "
                         "raise it; add the work again as a new task")
    t = replace(t, status="in-progress", fence=t.fence + 1, attempts=counted(t.attempts), claimed_by=agent,
                claimed_at=stamp(at), lease_until=stamp(at + _dt.timedelta(seconds=seconds)),
                updated_at=stamp(at), not_before=None)
    return Step(t, f"task claim {t.id} by {agent} (fence {t.fence})\n\n{printable(t.title)}\n"
                   f"Lease until {t.lease_until}; attempt {t.attempts}.\n\nFleet-Agent: {agent}\n")


@dataclass(frozen=True)
class Claimed:
    """What a claim of several tasks decided: one step per task, in the order handed out."""

    steps: list[Step]

    def change(self) -> Change:
        """One commit per claim (the history stays one task a commit), one push for all."""
        return Change([c for s in self.steps for c in s.change().commits], self)


def claim_many(q: Queue, cfg: Config, at: _dt.datetime, agent: str, count: int, *,
               lease: float | None = None, spread: bool = False) -> Claimed:
    """``agent`` claims up to ``count`` ready tasks at once, each as ``claim``
    would on the queue the claims before it left: a task whose paths overlap
    one claimed before it in the same batch is held back like any other.
    NothingToDo only when none is ready."""
    steps: list[Step] = []
    view = q
    for _ in range(count):
        try:
            step = claim(view, cfg, at, agent, lease=lease, spread=spread)
        except NothingToDo:
            if steps:
                break
            raise
        steps.append(step)
        view = q.with_tasks({**view.tasks, step.task.id: step.task})  # a Queue is one read
    return Claimed(steps)


def _summary(q: Queue) -> str:
    c = q.counts()
    return ", ".join(f"{n} {s}" for s, n in c.items() if n) or "the queue is empty"


def _why_not_ready(q: Queue, t: Task, agent: str, at: _dt.datetime) -> str:
    if t.status != "pending":
        by = {"in-progress": f", held by {t.claimed_by}", "done": f", done by {t.claimed_by}",
              "failed": f" after {t.failures} failures (`fleet task reopen {t.id}`)"}[t.status]
        return f"task {t.id} is {t.status}{by}"
    if t.for_ not in (None, agent):
        return f"task {t.id} is slung to {t.for_}"
    if t.not_before and parse_stamp(t.not_before) > at:
        return f"task {t.id} waits until {t.not_before} after its last failure"
    blockers = q.blockers(t)
    if blockers:
        return f"task {t.id} waits for {', '.join(blockers)}"
    return f"task {t.id} {q.paths_held_by(t)}"


def _by_holder(t: Task, new: Task, fence: int, verb: str, at: _dt.datetime, line: str = "") -> Step:
    """The holder's change to ``t``, recorded in the holder's name."""
    return Step(replace(new, updated_at=stamp(at)),
                f"task {verb} {t.id} by {t.claimed_by} (fence {fence}){line}\n\nFleet-Agent: {t.claimed_by}\n")


def renew(q: Queue, cfg: Config, at: _dt.datetime, task_id: str, fence: int, *, agent: str | None = None,
          lease: float | None = None) -> Step:
    """The holder of ``fence`` extends the lease to ``lease`` seconds from ``at`` (default ``tasks.lease_seconds``)."""
    t = q.task(task_id)
    holder_check(t, fence, agent, "renew")
    until = stamp(at + _dt.timedelta(seconds=lease if lease is not None else cfg.tasks.lease_seconds))
    return _by_holder(t, replace(t, lease_until=until), fence, "renew", at, f"\n\nLease until {until}.")


def complete(q: Queue, at: _dt.datetime, task_id: str, fence: int, *, result: Any = None,
             agent: str | None = None) -> Step:
    """The holder of ``fence`` marks the task done with ``result``. A retried
    complete whose first attempt landed changes nothing and is no error."""
    t = q.task(task_id)
    if t.status == "done" and t.fence == fence and (None if t.result is MISSING else t.result) == result:
        return Step(t)
    holder_check(t, fence, agent, "complete")
    new = replace(t, status="done", result=result, lease_until=None, done_at=stamp(at), error=None)
    return _by_holder(t, new, fence, "complete", at)


def fail(q: Queue, cfg: Config, at: _dt.datetime, task_id: str, fence: int, *, reason: str,
         agent: str | None = None) -> Step:
    """The holder of ``fence`` gives the task back as failed (``returned``)."""
    t = q.task(task_id)
    holder_check(t, fence, agent, "fail")
    new, line = returned(t, cfg, at, (reason.strip() or "no reason given")[:MAX_REASON])  # a model's: cut to fit
    return _by_holder(t, new, fence, "fail", at, line)


def release(q: Queue, cfg: Config, at: _dt.datetime, task_id: str, fence: int, *, agent: str | None = None) -> Step:
    """The holder of ``fence`` gives the task back unfinished, no failure counted.
    It is handed out again after the cooldown, as a failed or returned one is:
    a holder that cannot do it would otherwise claim it straight back."""
    t = q.task(task_id)
    holder_check(t, fence, agent, "release")
    later = cooldown(cfg, at)
    new = replace(t, status="pending", claimed_by=None, claimed_at=None, lease_until=None, not_before=later)
    return _by_holder(t, new, fence, "release", at, f"\n\nGiven back unfinished; ready again at {later} "
                                                     "(tasks.retry_delay_seconds).")


def reopen(q: Queue, at: _dt.datetime, task_id: str) -> Step:
    """Give a failed task another go: pending again, its failures forgiven.
    Its fence stays, so the next claim gets a higher one."""
    t = q.task(task_id)
    if t.status != "failed":
        raise FleetError(f"cannot reopen task {task_id}: it is {t.status}; only a failed task is reopened")
    new = replace(t, status="pending", failures=0, claimed_by=None, claimed_at=None, lease_until=None,
                  not_before=None, updated_at=stamp(at), escalated_at=MISSING)
    error = None if t.error is MISSING else t.error
    return Step(new, f"task reopen {task_id} after {t.failures} failures\n\n"
                     f"Last error: {printable(error or 'none recorded', 2000)}\n")


def sling(q: Queue, at: _dt.datetime, task_id: str, agent: str | None) -> Step:
    """Put a pending task on one agent's hook (or, with no agent, back on everyone's).
    A person's sling to an agent hands it out at once: it ends any cooldown."""
    t = q.task(task_id)
    cooling = agent is not None and t.not_before is not None and parse_stamp(t.not_before) > at
    if t.for_ == agent and not cooling:
        return Step(t)
    if t.status != "pending":
        raise FleetError(f"cannot sling task {task_id}: it is {t.status}; only a pending task can be slung")
    new = replace(t, updated_at=stamp(at), for_=agent, not_before=None if cooling else t.not_before)
    if agent is None:
        return Step(new, f"task unsling {task_id}: anyone may claim it\n")
    ends = f"\nIts cooldown (until {t.not_before}) ends: a person's sling hands it out now.\n" if cooling else ""
    return Step(new, f"task sling {task_id} to {agent}\n{ends}")
