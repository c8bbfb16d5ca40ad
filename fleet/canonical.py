"""Canonical JSON: the only way fleet writes JSON to disk or to git.

Documents are written with sorted keys, two-space indentation and a trailing
newline, so a diff shows what changed and a replay is byte-identical. Ledger
lines are the compact form (sorted keys, no whitespace).

Reading is strict, because every byte read may come from a hostile worker, a
model or a careless edit: it rejects what a bad merge leaves behind (a BOM,
conflict markers), and whatever the writer could not write back or would
change on the way (duplicate keys, NaN and Infinity, integers beyond 64 bits,
lone surrogates, nesting deeper than :data:`MAX_DEPTH`), each with a message
that names the rule. :func:`check` applies the same rules to values that
arrive already parsed (a model's tool input).
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from fleet.errors import FleetError

_DOC = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
_LINE = orjson.OPT_SORT_KEYS
_MARKERS = re.compile(rb"^(<{7}|={7}|>{7})( |$)", re.M)
# digits -> "0", e/E -> "e", "+" stays, anything else -> " ": a number's shape
_SHAPE = bytes(48 if 48 <= b <= 57 else 101 if b in (69, 101) else 43 if b == 43 else 32 for b in range(256))
_DIGITS_19 = b"0" * 19

# One depth limit for input from outside (a delta, a tool input, a task's
# result, a decision): 64 levels. Fleet's own records wrap such input a few
# levels deeper (a quarantine record holds a delta, a conflict holds ops that
# hold values, a task holds its result), so they are read back with
# RECORD_DEPTH: what fleet writes from accepted input, it can always read.
# The writer (orjson) stops at 254, far beyond either.
MAX_DEPTH = 64
RECORD_DEPTH = MAX_DEPTH + 8
# What the writer (orjson) writes exactly: signed and unsigned 64-bit integers.
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1


class JSONProblem(ValueError):
    """Why some bytes are not acceptable JSON (without the file name)."""


@contextmanager
def no_gc() -> Iterator[None]:
    """The cycle collector off while parsing makes hundreds of thousands of small
    objects that are freed all at once at the end (a big tick's merge, a report
    over months of ledger): its passes over them cost a fifth to a quarter of the
    work. Off for the whole of such a command: once on again while they are alive,
    its first passes walk them all; freed later by reference counting, unwalked."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise JSONProblem(f"duplicate key {_excerpt(dup)} in one object (each key may appear once)")
    return obj


def _no_constant(name: str) -> Any:
    raise JSONProblem(f"{name} is not a JSON number (NaN and Infinity are refused)")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def parse(data: bytes, max_depth: int = RECORD_DEPTH) -> Any:
    """Parse JSON strictly, raising :class:`JSONProblem` with the rule it broke.
    Input from outside is parsed with ``max_depth=MAX_DEPTH``."""
    obj = _canonical(data)
    if obj is not _NOT:
        # Text orjson wrote back byte for byte cannot hold what orjson refuses
        # to read (a lone surrogate, a number that overflows) nor an integer
        # beyond 64 bits (it reads one as a float, which writes back
        # otherwise): only the depth is left to look at, and only when the
        # brackets could exceed it.
        if data.count(b"[") + data.count(b"{") > max_depth:
            check(obj, strings=False, max_depth=max_depth)
        return obj
    obj = _strict(data, max_depth)
    # The walk is needed only if the text could break a rule: more brackets
    # than the depth limit, a lone surrogate's escape, a number of 19 digits or
    # more, or an exponent of three digits.
    # (translate and find run at memory speed; a regex took longer than the parse)
    strings = b"\\u" in data
    shape = data.translate(_SHAPE)
    if (strings or data.count(b"[") + data.count(b"{") > max_depth
            or _DIGITS_19 in shape or b"e000" in shape or b"e+000" in shape):
        check(obj, strings=strings, max_depth=max_depth)
    return obj


_NOT = object()


def _canonical(data: bytes) -> Any:
    """The fast way, for text already in canonical form (every document fleet
    wrote): orjson parses it, and writing the value back gives the same bytes.
    Text that did not come back the same (a duplicate key, which orjson keeps
    the last of; a big integer it made a float; any other layout) is _NOT, and
    goes the strict way, which names the rule it broke."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _NOT
    try:
        same = orjson.dumps(obj, option=_DOC) == data
    except orjson.JSONEncodeError:  # nested beyond the writer's limit
        return _NOT
    return obj if same else _NOT


def _strict(data: bytes, max_depth: int) -> Any:
    if data.startswith(b"\xef\xbb\xbf"):
        raise JSONProblem("starts with a byte-order mark (BOM); save it as UTF-8 without BOM")
    if (b"<<<<<<<" in data or b"=======" in data or b">>>>>>>" in data) and _MARKERS.search(data):
        raise JSONProblem("contains git conflict markers (<<<<<<< / ======= / >>>>>>>)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JSONProblem(f"malformed JSON: not UTF-8 (byte {e.start} is {data[e.start:e.start + 1]!r})") from None
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise JSONProblem(f"malformed JSON: {e}") from None
    except JSONProblem:
        raise
    except ValueError:  # Python's own cap on the digits of an integer
        raise JSONProblem(f"an integer of thousands of digits is beyond 64 bits ({MIN_INT} to {MAX_INT})") from None
    except RecursionError:
        raise JSONProblem(f"nested deeper than {max_depth} levels") from None
    return obj


def parse_trusted(data: bytes) -> Any:
    """Parse bytes that fleet has already checked with :func:`parse` or written
    itself (a document the merge validated, a ledger line): no second walk."""
    return orjson.loads(data)


def check(obj: Any, strings: bool = True, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JSONProblem` unless ``obj`` is JSON that fleet can write back
    exactly: at most ``max_depth`` levels, integers within 64 bits, finite
    numbers, string keys, and (with ``strings``) no lone surrogates."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is dict or kind is list:
            if depth > max_depth:
                raise JSONProblem(f"nested deeper than {max_depth} levels")
            if kind is dict:
                for k in value:
                    if type(k) is not str:
                        raise JSONProblem(f"an object key is {type(k).__name__}, not a string")
                    if strings:
                        _check_str(k)
                items = value.values()
            else:
                items = value
            stack.extend((v, depth + 1) for v in items if type(v) not in _PLAIN)
        elif kind is int:
            if not MIN_INT <= value <= MAX_INT:
                digits = str(value)
                shown = digits if len(digits) <= 40 else f"{digits[:12]}...({len(digits)} digits)"
                raise JSONProblem(f"{_at(obj, value)}integer {shown} is beyond 64 bits ({MIN_INT} to {MAX_INT})")
        elif kind is float:
            if not math.isfinite(value):
                raise JSONProblem(f"{_at(obj, value)}a number is {value}, not finite (too large, or NaN or Infinity)")
        elif kind is str:
            if strings:
                _check_str(value)
        elif value is not None and kind is not bool:
            raise JSONProblem(f"{kind.__name__} is not a JSON value")


_PLAIN = (bool, type(None))


def _at(obj: Any, found: Any) -> str:
    """'at /a/0/b: ' for the place of ``found`` (that very object) in ``obj``; looked
    for only once a value is refused, so the walk that checks pays nothing for it."""
    stack: list[tuple[Any, str]] = [(obj, "")]
    while stack:
        value, path = stack.pop()
        if value is found:
            return f"at {path or '/'}: "
        if type(value) is dict:
            stack.extend((v, f"{path}/{str(k).replace('~', '~0').replace('/', '~1')}") for k, v in value.items())
        elif type(value) is list:
            stack.extend((v, f"{path}/{i}") for i, v in enumerate(value))
    return ""


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONProblem("a string holds a lone UTF-16 surrogate (\\ud800 to \\udfff), which is not text") from None


def _excerpt(text: str, limit: int = 60) -> str:
    """A short, printable quote of ``text`` for an error message."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 12] + "..." + r[-8:]


def load(data: bytes, where: str, max_depth: int = RECORD_DEPTH) -> Any:
    """Parse JSON or raise a :class:`FleetError` naming ``where``."""
    try:
        return parse(data, max_depth)
    except JSONProblem as e:
        raise FleetError(f"{where}: {e}") from None


def is_canonical(data: bytes, obj: Any) -> bool:
    return dumps(obj) == data
