"""Canonical JSON: the only way fleet writes JSON to disk or to git.

Documents are written with sorted keys, two-space indentation and a trailing
newline, so a diff shows what changed and a replay is byte-identical. Ledger
lines are the compact form (sorted keys, no whitespace). Reading rejects what a
careless edit or a bad merge leaves behind (a BOM, conflict markers) with a
message that names the file.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from fleet.errors import FleetError

_DOC = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
_LINE = orjson.OPT_SORT_KEYS
_MARKERS = re.compile(rb"^(<{7}|={7}|>{7})( |$)", re.M)


class JSONProblem(ValueError):
    """Why some bytes are not acceptable JSON (without the file name)."""


def dumps(obj: Any) -> bytes:
    """A document in canonical form."""
    return orjson.dumps(obj, option=_DOC)


def dumps_line(obj: Any) -> bytes:
    """The compact canonical form: one line, no trailing newline."""
    return orjson.dumps(obj, option=_LINE)


def digest(obj: Any) -> str:
    """A short content hash of the compact canonical form."""
    return digest_line(dumps_line(obj))


def digest_line(line: bytes) -> str:
    """:func:`digest` of what is already in compact canonical form."""
    return hashlib.sha256(line).hexdigest()[:16]


def clone(obj: Any) -> Any:
    """A deep copy of parsed JSON (five times faster than copy.deepcopy)."""
    return orjson.loads(orjson.dumps(obj))


def parse(data: bytes) -> Any:
    """Parse JSON, raising :class:`JSONProblem` with the rule it broke."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise JSONProblem("starts with a byte-order mark (BOM); save it as UTF-8 without BOM")
    if (b"<<<<<<<" in data or b"=======" in data or b">>>>>>>" in data) and _MARKERS.search(data):
        raise JSONProblem("contains git conflict markers (<<<<<<< / ======= / >>>>>>>)")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise JSONProblem(f"malformed JSON: {e}") from None


def load(data: bytes, where: str) -> Any:
    """Parse JSON or raise a :class:`FleetError` naming ``where``."""
    try:
        return parse(data)
    except JSONProblem as e:
        raise FleetError(f"{where}: {e}") from None


def is_canonical(data: bytes, obj: Any) -> bool:
    return dumps(obj) == data
