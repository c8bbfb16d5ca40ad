"""The delta format: parsing and checking one delta file.

A delta is what one agent turn wants to change (schemas/delta.schema.json).
Workers write each delta to its own file, ``deltas/<worker>/<stream>/<id>.json``
on their worker branch; this module turns such a file into a :class:`Delta` or
explains in one line why it cannot be one.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fleet import canonical, schemas
from fleet.config import Limits
from fleet.ids import is_safe_id, new_delta_id, printable

DELTA_DIR = "deltas"


# The key that carries each op's argument.
_ARG = {"create": "doc", "set": "value", "incr": "by", "add": "value", "remove": "value", "append": "item"}


class Rejected(Exception):
    """A delta that cannot be applied; the message is the quarantine reason."""


@dataclass(frozen=True)
class Op:
    op: str
    collection: str
    id: str
    path: tuple[str, ...] = ()
    arg: Any = None  # create: doc, set/add/remove: value, incr: by, append: item

    @classmethod
    def from_json(cls, o: dict[str, Any]) -> Op:
        kind = o["op"]
        arg = _ARG.get(kind)
        return cls(kind, o["collection"], o["id"], tuple(o.get("path", ())), o.get(arg) if arg else None)

    def to_json(self) -> dict[str, Any]:
        o: dict[str, Any] = {"op": self.op, "collection": self.collection, "id": self.id}
        if self.path:
            o["path"] = list(self.path)
        arg = _ARG.get(self.op)
        if arg:
            o[arg] = self.arg
        return o


@dataclass(frozen=True)
class Delta:
    id: str
    tick: int
    utc: str
    worker: str
    stream: str
    agent: str
    ops: tuple[Op, ...]
    meta: dict[str, Any]
    body: dict[str, Any] = field(repr=False, compare=False)
    line: bytes = field(repr=False, compare=False)  # compact canonical form
    digest: str = ""

    @property
    def key(self) -> tuple[int, str, str, str, str]:
        """The total order of application: (tick, utc, worker, id), then content."""
        return (self.tick, self.utc, self.worker, self.id, self.digest)


@dataclass(frozen=True)
class Arrival:
    """A delta file as the merge found it: where, and its bytes.

    ``refused`` is set for an entry that is not a regular file of ours (a
    symbolic link, a submodule, a FIFO, a folder named like a delta, a file
    over the size limit): it is quarantined by its name, its content unread.
    ``path`` is the name as found, which may hold any character; records and
    messages show it through :func:`fleet.ids.printable`.
    """

    source: str  # a ref name or an inbox directory
    path: str  # deltas/<worker>/<stream>/<id>.json
    data: bytes
    refused: str | None = None
    size: int | None = None  # the file's size when only part of it was read
    foreign: bool = False  # an inbox's regular file outside the delta layout: no delta, left where it is

    @property
    def worker_dir(self) -> str | None:
        """The worker folder the file is in, if it is a safe name."""
        parts = self.path.split("/")
        if len(parts) >= 3 and parts[0] == DELTA_DIR and is_safe_id(parts[1]):
            return parts[1]
        return None


def parse(arrival: Arrival, limits: Limits, trusted: bool = False) -> Delta:
    """Check a delta file and return the delta, or raise :class:`Rejected`.

    ``trusted`` skips the size limit, for ledger lines already accepted once.
    """
    if arrival.refused is not None:
        raise Rejected(arrival.refused)
    size = arrival.size if arrival.size is not None else len(arrival.data)
    if not trusted and size > limits.max_delta_bytes:
        raise Rejected(f"delta is {size} bytes, over limits.max_delta_bytes ({limits.max_delta_bytes})")
    try:
        body = canonical.parse(arrival.data, canonical.MAX_DEPTH)
    except canonical.JSONProblem as e:
        raise Rejected(str(e)) from None
    return from_body(body, arrival, limits)


def misnamed(d: Delta, path: str) -> str | None:
    """Why what a delta says of itself disagrees with where and when it says it was
    written, or None: its file is ``deltas/<worker>/<stream>/<id>.json``
    (:func:`file_path`), and its ``utc`` is a time on the calendar, not digits in the
    right places (status, log and the report print it). The merge asks it of new
    arrivals (fleet.engine.order), not of ledger lines, which were accepted once."""
    if path != file_path(d.body):
        return f"a delta file is named for its stream and id, {file_path(d.body)}, not {printable(path, 120)}"
    if not on_calendar(d.utc):
        return f"utc {d.utc!r} is no time on the calendar (schemas/delta.schema.json)"
    return None


def turn_of(arrival: Arrival, limits: Limits, tick: int, worker: str) -> str | None:
    """The agent whose turn of ``tick`` by ``worker`` the file ``arrival`` holds, read
    as the merge reads a delta (:func:`parse`, named for its id), or None: a file that
    is not one (cut short by a kill, junk, another worker's) is no turn done. What a
    worker run again, a branch found in place and a rerun of `fleet run` ask of
    what waits for the merge."""
    try:
        d = parse(arrival, limits)
    except Rejected:
        return None
    return d.agent if d.tick == tick and d.worker == worker and misnamed(d, arrival.path) is None else None


def on_calendar(utc: str) -> bool:
    """Whether ``utc`` (digits where schemas/delta.schema.json's pattern puts them:
    YYYY-MM-DDTHH:MM:SS.ffffffZ) names a time on the calendar, as
    ``datetime.strptime(utc, "%Y-%m-%dT%H:%M:%S.%fZ")`` would say: by the
    constructor, a fifteenth of strptime's cost (a merge asks it of every delta)."""
    if len(utc) != 27 or utc[4] != "-" or utc[7] != "-" or utc[10] != "T" or utc[13] != ":" or utc[16] != ":" \
            or utc[19] != "." or utc[26] != "Z":
        return False
    digits = utc[:4] + utc[5:7] + utc[8:10] + utc[11:13] + utc[14:16] + utc[17:19] + utc[20:26]
    if not (digits.isascii() and digits.isdigit()):
        return False
    try:
        _dt.datetime(int(utc[:4]), int(utc[5:7]), int(utc[8:10]), int(utc[11:13]), int(utc[14:16]), int(utc[17:19]),
                     int(utc[20:26]))
    except ValueError:
        return False
    return True


def from_body(body: Any, arrival: Arrival, limits: Limits) -> Delta:
    problem = schemas.first_error(schemas.protocol("delta"), body)
    if problem:
        raise Rejected(f"{problem} (schemas/delta.schema.json)")
    prefix = f"t{body['tick']}-{body['worker']}-"
    if not body["id"].startswith(prefix):
        # An id names its tick and worker, so the ledger of (tick, worker) is
        # the only place it can have been used before: reuse is always caught.
        raise Rejected(f"delta id {body['id']!r} must start with {prefix!r} (its tick and worker; schemas/delta.schema.json)")
    if len(body["ops"]) > limits.max_ops:
        raise Rejected(f"delta has {len(body['ops'])} ops, over limits.max_ops ({limits.max_ops})")
    parts = arrival.path.split("/")
    if len(parts) < 3 or parts[0] != DELTA_DIR:
        raise Rejected(f"a delta file must be in its worker's folder, {DELTA_DIR}/{body['worker']}/<stream>/<id>.json")
    if parts[1] != body["worker"]:
        raise Rejected(f"worker {body['worker']!r} wrote into {DELTA_DIR}/{printable(parts[1], 80)}/, another worker's directory")
    line = canonical.dumps_line(body)
    return Delta(
        id=body["id"],
        tick=body["tick"],
        utc=body["utc"],
        worker=body["worker"],
        stream=body["stream"],
        agent=body["agent"],
        ops=tuple(Op.from_json(o) for o in body["ops"]),
        meta=body["meta"],
        body=body,
        line=line,
        digest=canonical.digest_line(line),
    )


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make(
    *,
    tick: int,
    worker: str,
    stream: str,
    agent: str,
    ops: list[Op] | tuple[Op, ...] = (),
    meta: dict[str, Any] | None = None,
    utc: str | None = None,
    delta_id: str | None = None,
) -> dict[str, Any]:
    """A new delta body, ready to write with :func:`file_path`."""
    return {
        "id": delta_id or new_delta_id(tick, worker, stream),
        "tick": tick,
        "utc": utc or utc_now(),
        "worker": worker,
        "stream": stream,
        "agent": agent,
        "ops": [op.to_json() for op in ops],
        "meta": meta if meta is not None else {},
    }


def made_by(metas: Iterable[Any]) -> list[str]:
    """Which providers and models made deltas with these ``meta``, once each, sorted:
    "provider model", or, where a delta names only one of them (one made by hand, say),
    that one and that the other is not named. Worker-written text: bounded and printable."""
    shown = set()
    for meta in metas:
        if not isinstance(meta, dict):
            continue
        provider, model = (printable(str(meta.get(k) or ""), n) for k, n in (("provider", 40), ("model", 80)))
        if provider and model:
            shown.add(f"{provider} {model}")
        elif model:
            shown.add(f"model {model} (no provider named)")
        elif provider:
            shown.add(f"provider {provider} (no model named)")
    return sorted(shown)


def file_path(body: dict[str, Any]) -> str:
    """Where a worker writes a delta on its branch; unique per (worker, stream, id)."""
    return f"{DELTA_DIR}/{body['worker']}/{body['stream']}/{body['id']}.json"
