"""The task queue: one JSON file per task on the ``fleet/tasks`` branch.

Every change (add, claim, renew, complete, fail, release, sling, a watchdog
return) is a commit on that branch made through ``fleet.store``: a
compare-and-swap on the tip the change was computed from. Of two claimers
that read the same tip, exactly one lands; the other re-reads and takes the
next ready task. The branch's history is the audit trail, one commit per
change, each message saying who did what and why. The queue reads its
settings (lease, retries) and the agents from ``state/config.json`` on ``main``.

A claim hands out a fencing token, a number that only goes up. Renew,
complete, fail and release name it, so a holder whose lease ran out and whose
task went to someone else is refused instead of overwriting their work.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import secrets as _random_ids
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fleet import docpath, keys, schemas
from fleet.config import Config
from fleet.errors import FleetError
from fleet.ids import is_safe_id, printable
from fleet.repo import FleetRepo
from fleet.store import BranchStore, Change, Kind, Records, now

BRANCH = "fleet/tasks"
TASK_DIR = "tasks"
WORKER_DIR = "workers"
STATUSES = ("pending", "in-progress", "done", "failed")
OPEN = ("pending", "in-progress")
INPUT_KEYS = {"id", "title", "body", "priority", "deps", "for"}
DEFAULT_PRIORITY = 2


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

# Field name -> key on disk. Only these optional keys may be absent from a file:
# a task never claimed has no result and no error, and one completed has "error": null.
_KEYS = {"for_": "for", "claimed_by": "claimedBy", "claimed_at": "claimedAt", "lease_until": "leaseUntil",
         "not_before": "notBefore", "created_at": "createdAt", "updated_at": "updatedAt", "done_at": "doneAt"}
_OPTIONAL = ("body", "done_at", "result", "error")


@dataclass(frozen=True)
class Task:
    """One task, ``tasks/<hh>/<id>.json`` on the queue branch (schemas/task.schema.json)."""

    id: str
    title: str
    status: str  # one of STATUSES
    priority: int
    deps: list[str]
    for_: str | None  # the agent it was slung to ("for" on disk)
    token: int  # the fencing token: up by one at every claim
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

    @classmethod
    def parse(cls, doc: Any, where: str) -> Task:
        """A task file as read, checked against the protocol schema; the error names ``where``."""
        problem = schemas.first_error(schemas.protocol("task"), doc)
        if problem:
            raise FleetError(f"{where}: {problem} (schemas/task.schema.json)")
        for key in STAMPS:
            value = doc.get(key)
            if value is not None and not _is_stamp(value):
                raise FleetError(f"{where}: at /{key}: {value[:40]!r} is not a UTC time such as "
                                 "2026-11-22T12:38:12.345Z (schemas/task.schema.json)")
        return cls.of(doc)

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Task:
        """A task from a record the store has already checked (``Task.parse``)."""
        return cls(**{f: doc.get(_KEYS.get(f, f), MISSING) if f in _OPTIONAL else doc[_KEYS.get(f, f)]
                      for f in _FIELDS})

    def to_json(self) -> dict[str, Any]:
        """The file's content, for ``fleet.canonical``."""
        out = {_KEYS.get(f, f): getattr(self, f) for f in _FIELDS}
        return {k: v for k, v in out.items() if v is not MISSING}


_FIELDS = tuple(Task.__dataclass_fields__)
STAMPS = tuple(_KEYS[f] for f in ("claimed_at", "lease_until", "not_before", "created_at", "updated_at", "done_at"))


# -- a read of the branch ------------------------------------------------
@dataclass
class Queue:
    """The tasks and worker records at one commit of the branch."""

    tip: str | None
    tasks: dict[str, Task] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Records) -> Queue:
        """The queue the branch's records make; a task filed under another id's path is refused."""
        q = cls(records.tip)
        for path, doc in records.docs.items():
            if path.startswith(TASK_DIR + "/"):
                if path != task_path(doc["id"]):
                    raise FleetError(f"{BRANCH}:{path}: task {doc['id']!r} belongs at {task_path(doc['id'])}")
                q.tasks[doc["id"]] = Task.of(doc)
            else:
                q.workers[doc["worker"]] = doc
        return q

    def task(self, task_id: str) -> Task:
        """The task ``task_id``; an error that says how to list them if there is none."""
        t = self.tasks.get(task_id)
        if t is None:
            raise FleetError(f"no task {task_id!r} in the queue ({len(self.tasks)} tasks; `fleet task list` shows them)")
        return t

    def blockers(self, t: Task) -> list[str]:
        """The dependencies of ``t`` that are not done yet."""
        return [d for d in t.deps if d not in self.tasks or self.tasks[d].status != "done"]

    def doomed_by(self, t: Task, seen: frozenset[str] = frozenset()) -> str | None:
        """A failed task that ``t`` waits for, directly or not: while it stays
        failed, ``t`` can never be ready (`fleet task reopen` gives it another go)."""
        for d in t.deps:
            dep = self.tasks.get(d)
            if dep is None or d in seen:
                continue
            if dep.status == "failed":
                return d
            if dep.status != "done":
                found = self.doomed_by(dep, seen | {t.id})
                if found:
                    return found
        return None

    def is_ready(self, t: Task, agent: str | None, at: _dt.datetime) -> bool:
        """Whether ``agent`` (None: anyone) may claim ``t`` at ``at``."""
        return (
            t.status == "pending"
            and (t.for_ is None or agent is None or t.for_ == agent)
            and (t.not_before is None or parse_stamp(t.not_before) <= at)
            and not self.blockers(t)
        )

    def ready(self, agent: str | None, at: _dt.datetime) -> list[Task]:
        """Ready tasks in the order they are handed out: slung to this agent
        first, then by priority (0 first), then oldest first."""
        out = [t for t in self.tasks.values() if self.is_ready(t, agent, at)]
        out.sort(key=lambda t: (t.for_ is None, t.priority, t.created_at, t.id))
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
    if not _STAMP.match(value):
        return False
    try:
        parse_stamp(value)
    except ValueError:
        return False
    return True


def check_worker(doc: Any, where: str) -> dict[str, Any]:
    """The store's check of a worker record."""
    problem = schemas.first_error(schemas.protocol("worker"), doc)
    if problem:
        raise FleetError(f"{where}: {problem} (schemas/worker.schema.json)")
    return doc


KINDS = (Kind(TASK_DIR, "id", "task", check_task), Kind(WORKER_DIR, "worker", "worker", check_worker))


class TaskQueue:
    """The queue of one fleet repository and its remote."""

    def __init__(self, repo: FleetRepo) -> None:
        self.repo = repo
        self.git = repo.git
        self.store = BranchStore(repo, BRANCH, KINDS, what="task queue", cache="queue", fault="task")

    def fetch(self) -> None:
        """Fetch the queue and main: the moment state changes here."""
        self.store.fetch(main=True)

    def load(self) -> tuple[Queue, Config]:
        """Fetch, then read the queue and main's config together (which also
        says plainly when this is no fleet repository)."""
        self.fetch()
        records = self.store.read(config_of=self.repo.main())
        assert records.config is not None
        return Queue.of(records), records.config

    def read(self, tip: str | None = None) -> Queue:
        """The queue at ``tip`` (default: the branch as last fetched)."""
        return Queue.of(self.store.read(tip))

    def publish(self, new: str, old: str | None) -> bool:
        """Move the branch from ``old`` to ``new`` if nobody moved it meanwhile."""
        return self.store.publish(new, old)

    def change(self, decide: Callable[[Queue, Config, _dt.datetime], Change], *,
               dry_run: bool = False, patience: float = 120.0, fetched: bool = False) -> tuple[Change, bool]:
        """Fetch, decide, commit, push; on a lost race, re-read and decide again
        (``BranchStore.change``): a claimer that lost takes the next ready task.
        ``fetched``: the caller has just fetched main and the queue."""
        return self.store.change(lambda records, cfg, at: decide(Queue.of(records), cfg, at),
                                 dry_run=dry_run, patience=patience, fetched=fetched)


# -- building and checking tasks ------------------------------------------
def new_task(item: Any, where: str, cfg: Config, at: _dt.datetime) -> Task:
    """A pending task from one input object ({title, body?, priority?, deps?, for?, id?})."""
    if not isinstance(item, dict):
        raise FleetError(f"{where}: a task must be a JSON object with at least a title")
    unknown = sorted(set(item) - INPUT_KEYS)
    if unknown:
        raise FleetError(f"{where}: unknown field {unknown[0]!r} (a task has {', '.join(sorted(INPUT_KEYS))})")
    if "id" in item and not is_safe_id(item["id"]):
        raise FleetError(f"{where}: id {str(item['id'])[:60]!r} must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ "
                         "(no '..', at most 128 characters)")
    if "id" in item and keys.redact(item["id"]) != item["id"]:
        raise FleetError(f"{where}: id contains a secret from the environment; pick another id")
    target = item.get("for")
    if target is not None and not isinstance(target, str):
        raise FleetError(f"{where}: at /for: must be an agent's name or null (schemas/task.schema.json)")
    if target is not None and target not in cfg.agents:
        raise FleetError(f"{where}: for: unknown agent {target[:60]!r} (agents are in state/config.json)")
    priority = item.get("priority", DEFAULT_PRIORITY)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise FleetError(f"{where}: at /priority: {str(priority)[:20]} is not a whole number from 0 to 4 "
                         "(schemas/task.schema.json)")
    stamp_ = stamp(at)
    t = Task(id=item.get("id", ""), title=item.get("title"), status="pending", priority=priority,
             deps=item.get("deps", []), for_=target, token=0, attempts=0, failures=0, claimed_by=None,
             claimed_at=None, lease_until=None, not_before=None, created_at=stamp_, updated_at=stamp_,
             body=item.get("body", MISSING))
    probe = dict(t.to_json(), id=t.id or "tk-probe")
    problem = schemas.first_error(schemas.protocol("task"), probe)
    if problem:
        raise FleetError(f"{where}: {problem} (schemas/task.schema.json)")
    return t


def cycle(tasks: dict[str, Task], ids: list[str]) -> list[str] | None:
    """A dependency cycle through one of ``ids``, as a path, or None."""
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> list[str] | None:
        if state.get(n) == 1:
            return path[path.index(n):] + [n]
        if state.get(n) == 2 or n not in tasks:
            return None
        state[n] = 1
        for d in tasks[n].deps:
            found = visit(d, path + [n])
            if found:
                return found
        state[n] = 2
        return None

    for i in ids:
        found = visit(i, [])
        if found:
            return found
    return None


def holder_check(t: Task, token: int, agent: str | None, verb: str) -> None:
    """Refuse a stale or foreign holder: the fencing token must be the current one."""
    if t.status == "done":
        raise FleetError(f"cannot {verb} task {t.id}: it is already done (by {t.claimed_by}, token {t.token})")
    if t.status != "in-progress":
        why = ("it was never claimed" if t.token == 0 else
               f"failed for good after {t.failures} failures" if t.status == "failed" else
               "it went back to the queue (the lease ran out, or it was failed or released)")
        raise FleetError(f"cannot {verb} task {t.id}: it is {t.status}, not in progress (token {t.token}): {why}")
    if token > t.token:
        raise FleetError(f"cannot {verb} task {t.id}: no claim was given token {token} (the current one is "
                         f"{t.token}, held by {t.claimed_by})")
    if token != t.token:
        raise FleetError(f"cannot {verb} task {t.id}: token {token} is stale, the task was claimed again "
                         f"(token {t.token}, by {t.claimed_by}); drop your result")
    if agent is not None and agent != t.claimed_by:
        raise FleetError(f"cannot {verb} task {t.id}: it is held by {t.claimed_by}, not {agent}")


def public(t: Task, q: Queue | None = None, at: _dt.datetime | None = None) -> dict[str, Any]:
    """A task as commands print it: the document plus what follows from the queue."""
    out = dict(t.to_json(), path=task_path(t.id))
    if q is not None:
        out["blockedBy"] = q.blockers(t)
        out["ready"] = q.is_ready(t, None, at or now())
        out["doomedBy"] = q.doomed_by(t) if t.status == "pending" else None
    if t.status == "in-progress" and t.lease_until:
        out["expired"] = parse_stamp(t.lease_until) < (at or now())
    return out


def returned(t: Task, cfg: Config, at: _dt.datetime, reason: str) -> tuple[Task, str]:
    """A failed attempt: back to pending after the retry delay, or failed for
    good after ``tasks.max_failures`` (the dead-letter state a person reads)."""
    failures = t.failures + 1
    if failures >= cfg.tasks.max_failures:
        new = replace(t, status="failed", failures=failures, lease_until=None, error=reason)
        return new, f"\n\n{printable(reason, 2000)}\nFailed {failures} times: given up until a person looks (tasks.max_failures)."
    later = stamp(at + _dt.timedelta(seconds=cfg.tasks.retry_delay_seconds))
    new = replace(t, status="pending", failures=failures, claimed_by=None, claimed_at=None, lease_until=None,
                  not_before=later, error=reason)
    return new, f"\n\n{printable(reason, 2000)}\nReady again at {later} (failure {failures} of {cfg.tasks.max_failures})."
