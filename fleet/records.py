"""fleet's own records as types: a held conflict, a quarantined arrival, a usage figure.

Each is parsed where it is read and written only through ``fleet.canonical``
(``to_json`` gives the value to write). Money is summed here and nowhere
else, in integer micro-dollars, so that a total is exact in any order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

from fleet import canonical, docpath, keys, schemas
from fleet.delta import Arrival, Delta
from fleet.errors import FleetError
from fleet.ids import printable
from fleet.keys import redact

MISSING = docpath.MISSING


# -- usage ---------------------------------------------------------------------


_TOKENS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


@dataclass(frozen=True)
class Usage:
    """Tokens and dollars spent: by one turn (a delta's ``meta.usage``), a
    worker, a tick or the whole fleet (``state/fleet.json`` totals)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    micro_usd: int = 0  # exact: floats summed in another order give another total

    @classmethod
    def parse(cls, data: Any) -> Usage:
        """A usage figure as written (``cost_usd`` in dollars); absent keys are 0."""
        return cls.total((data,))

    @classmethod
    def total(cls, figures: Iterable[Any]) -> Usage:
        """The sum of usage figures as written (each a delta's ``meta.usage``, or
        None), dollars exactly. Sums the dicts directly: a tick has thousands."""
        sums = [0] * 5
        for u in figures:
            if isinstance(u, dict):
                sums[0] += u.get("input_tokens", 0)
                sums[1] += u.get("output_tokens", 0)
                sums[2] += u.get("cache_read_input_tokens", 0)
                sums[3] += u.get("cache_creation_input_tokens", 0)
                sums[4] += round(u.get("cost_usd", 0) * 1_000_000)
        return cls(*sums)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                     self.cache_read_input_tokens + other.cache_read_input_tokens,
                     self.cache_creation_input_tokens + other.cache_creation_input_tokens,
                     self.micro_usd + other.micro_usd)

    def __sub__(self, other: Usage) -> Usage:
        """What was spent between two totals (``other`` the earlier)."""
        return Usage(self.input_tokens - other.input_tokens, self.output_tokens - other.output_tokens,
                     self.cache_read_input_tokens - other.cache_read_input_tokens,
                     self.cache_creation_input_tokens - other.cache_creation_input_tokens,
                     self.micro_usd - other.micro_usd)

    @property
    def tokens(self) -> int:
        """Every token, read, written or cached."""
        return self.input_tokens + self.output_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    @property
    def cost_usd(self) -> float:
        """The dollars, as written."""
        return self.micro_usd / 1_000_000

    def to_json(self) -> dict[str, Any]:
        """The figure as written: token counts and ``cost_usd``."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _TOKENS}
        out["cost_usd"] = self.cost_usd
        return out


# -- conflicts -------------------------------------------------------------------


class Candidate(TypedDict, total=False):
    """One delta's competing change in a conflict: a ``value``, or its ``ops``
    when it changed the field in several ways."""

    delta: str
    agent: str
    worker: str
    tick: int
    utc: str
    value: Any
    ops: list[dict[str, Any]]


@dataclass
class Conflict:
    """A held conflict, ``state/conflicts/<id>.json``: competing changes to one
    field that no policy decided (schemas/conflict.schema.json)."""

    id: str
    collection: str
    doc: str
    path: tuple[str, ...]
    policy: str
    reason: str | None
    opened_tick: int
    candidates: list[Candidate]
    base: Any = MISSING  # the field's value before the conflict; MISSING if it was absent

    @classmethod
    def parse(cls, data: bytes, path: str) -> Conflict:
        """A conflict file on main, checked: a hand edit must not crash fleet."""
        c = canonical.load(data, path)
        problem = schemas.first_error(schemas.protocol("conflict"), c)
        if problem:
            raise FleetError(f"{path}: {problem} (schemas/conflict.schema.json); "
                             "fix the file or revert the commit that broke it")
        return cls(c["id"], c["collection"], c["doc"], tuple(c["path"]), c["policy"], c.get("reason"),
                   c["opened_tick"], c["candidates"], c.get("base", MISSING))

    @property
    def where(self) -> str:
        """``collection/doc field.path``, for titles and messages."""
        return f"{self.collection}/{self.doc} {'.'.join(self.path)}"

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        out: dict[str, Any] = {"id": self.id, "collection": self.collection, "doc": self.doc,
                               "path": list(self.path), "policy": self.policy, "opened_tick": self.opened_tick,
                               "candidates": self.candidates}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.base is not MISSING:
            out["base"] = self.base
        return out


# -- quarantine ------------------------------------------------------------------


UNKNOWN_WORKER = "_unknown"  # the quarantine file of entries whose folder names no worker


def _nameable(worker: str) -> str:
    """The worker whose quarantine file a record goes to: a name that holds a secret's value
    is not one (every commit is masked: the file would be named one thing and its records
    another, and a replay could never write the tree again)."""
    return UNKNOWN_WORKER if redact(worker) != worker else worker


@dataclass
class Quarantined:
    """An arrival the merge refused, with the reason; the delta if it parsed."""

    arrival: Arrival
    reason: str
    delta: Delta | None = None

    def record(self, tick: int, max_raw: int) -> dict[str, Any]:
        """The quarantine record: names from outside in printable form, and the
        file's content only if it was a regular file of ours."""
        a = self.arrival
        rec: dict[str, Any] = {
            "tick": tick,
            "worker": _nameable(self.delta.worker if self.delta else (a.worker_dir or UNKNOWN_WORKER)),
            "source": printable(a.source),
            "path": printable(a.path),
            "reason": printable(self.reason, 2000),
            "size": a.size if a.size is not None else len(a.data),
        }
        if self.delta is not None:
            rec["delta"] = self.delta.body
        elif a.refused is None or a.data:  # a file over the size limit: its head
            rec["raw"] = keys.redact(a.data[:max_raw].decode("utf-8", errors="replace"))
        return rec
