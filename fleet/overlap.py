"""The paths a task will touch, and when two tasks' paths overlap.

Seed 003: shared files are found before work starts, so two tasks that would
edit the same file are never in flight at once. A task declares ``paths`` in
the code repository it is about: files, folders or glob patterns, relative to
that repository's top, ``/`` between folders.

**The rule.** A path *covers* every file it matches and everything under
them: ``src/app.py`` covers that file, ``docs`` (or ``docs/``) covers every
file in ``docs/``, ``src/*.py`` covers the Python files directly in ``src/``.
In a pattern ``*`` is any run of characters within one name, ``?`` one
character, ``[abc]``, ``[a-z]`` and ``[!abc]`` one character of (or not of)
a set, and a ``**`` segment any number of folders (``**/test_*.py``), as in
``fnmatch`` for each name. **Two paths overlap when some file path is covered
by both**; two tasks overlap when a path of one overlaps a path of the other.
So the same file overlaps itself, a folder overlaps every file under it,
``src/*.py`` overlaps ``src/app.py`` but not ``src/web/app.py``, and
``a/*`` overlaps ``*/b``. The rule is decided exactly, not guessed: the
answer comes with a file path both cover (:func:`overlap`), found by a
search over both patterns at once (a product of two automata), which is
polynomial in the patterns' lengths, so no pattern, however absurd, makes it
slow. Whether such a file exists in the repository does not matter: paths are
declared before the work that may create them.

**What a path may be** (:func:`parse`): relative, at most 256 characters and
32 names, no empty, ``.`` or ``..`` names, no backslash, no control
character, ``**`` only as a whole name, every ``[`` closed, a set holding
letters or ranges of them (no ``/``, ``\\``, ``[``, ``-``, ``!`` or ``^`` inside
but a leading ``!``). A task has at most 64 paths.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

MAX_PATHS = 64  # a task's paths
MAX_LENGTH = 256  # characters of one path
MAX_NAMES = 32  # names (segments) of one path
_SPECIAL = frozenset("*?[")
_NOT_IN_SET = frozenset("]/\\[-!^")


class PathRule(ValueError):
    """A path that breaks a rule; the message says which."""


# A character class: inclusive ranges of code points, possibly negated. A
# literal character is a class of one; ``?`` is the negated empty class.
# None of them ever matches "/", which separates names.
@dataclass(frozen=True)
class CharSet:
    ranges: tuple[tuple[int, int], ...]
    negated: bool = False

    def has(self, c: int) -> bool:
        if c == 0x2F:
            return False
        inside = any(lo <= c <= hi for lo, hi in self.ranges)
        return inside != self.negated


STAR = "*"  # within one name: any run of characters
GLOBSTAR = "**"  # a whole segment: any number of names
Token = CharSet | str  # a CharSet or STAR
Name = tuple[Token, ...]
Segment = Name | str  # a Name or GLOBSTAR


@dataclass(frozen=True)
class Pattern:
    """One declared path, parsed: ``text`` as stored (no trailing ``/``) and its segments."""

    text: str
    segments: tuple[Segment, ...]

    @property
    def first(self) -> str | None:
        """The first name when it is plain text (no wildcard): paths whose first
        names differ and are both plain cannot overlap, which indexes them."""
        head = self.text.split("/", 1)[0]
        return None if _SPECIAL & set(head) else head


@lru_cache(maxsize=4096)
def parse(text: str) -> Pattern:
    """A declared path, checked against the rules above (PathRule says which it breaks)."""
    if not isinstance(text, str) or not text:
        raise PathRule("a path is a non-empty string")
    if len(text) > MAX_LENGTH:
        raise PathRule(f"a path has at most {MAX_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text) or "\\" in text:
        raise PathRule("no control characters or backslashes in a path ('/' between folders)")
    if text.startswith("/"):
        raise PathRule("a path is relative to the top of the repository, not absolute")
    body = text[:-1] if text.endswith("/") else text  # "docs/" is the folder docs
    names = body.split("/")
    if len(names) > MAX_NAMES:
        raise PathRule(f"a path has at most {MAX_NAMES} names")
    segments: list[Segment] = []
    for name in names:
        if name in ("", ".", ".."):
            raise PathRule("no empty, '.' or '..' names in a path")
        if name == GLOBSTAR:
            segments.append(GLOBSTAR)
        elif "**" in name:
            raise PathRule("'**' stands alone between slashes (a/**/b), or use '*' within a name")
        else:
            segments.append(_name(name))
    return Pattern(body, tuple(segments))


def _name(name: str) -> Name:
    tokens: list[Token] = []
    i = 0
    while i < len(name):
        c = name[i]
        if c == "*":
            tokens.append(STAR)
        elif c == "?":
            tokens.append(CharSet((), True))
        elif c == "[":
            end = name.find("]", i + 1)
            if end < 0:
                raise PathRule("a '[' without its ']'")
            tokens.append(_set(name[i + 1:end]))
            i = end
        else:
            tokens.append(CharSet(((ord(c), ord(c)),)))
        i += 1
    return tuple(tokens)


def _set(inside: str) -> CharSet:
    negated = inside.startswith("!")
    body = inside[1:] if negated else inside
    if not body:
        raise PathRule("an empty set '[]' matches nothing")
    ranges: list[tuple[int, int]] = []
    i = 0
    while i < len(body):
        lo = body[i]
        if lo in _NOT_IN_SET:
            raise PathRule(f"a set holds letters and ranges such as [a-z] or [!._], not {lo!r}")
        if i + 2 < len(body) and body[i + 1] == "-":
            hi = body[i + 2]
            if hi in _NOT_IN_SET or hi < lo:
                raise PathRule(f"a range in a set goes up, such as a-z, not {lo}-{hi}")
            ranges.append((ord(lo), ord(hi)))
            i += 3
        else:
            ranges.append((ord(lo), ord(lo)))
            i += 1
    return CharSet(tuple(ranges), negated)


def check(value: Any) -> list[str]:
    """A task's ``paths`` as given: a list of paths, each checked, stored without a
    trailing ``/``. PathRule names the index (``at /paths/2: ...``) and the rule."""
    if not isinstance(value, list):
        raise PathRule("at /paths: a list of paths such as [\"src/app.py\", \"docs/\"]")
    if len(value) > MAX_PATHS:
        raise PathRule(f"at /paths: {len(value)} paths; a task has at most {MAX_PATHS}")
    out: list[str] = []
    for k, p in enumerate(value):
        try:
            text = parse(p).text
        except PathRule as e:
            shown = repr(p[:60]) if isinstance(p, str) else type(p).__name__
            raise PathRule(f"at /paths/{k}: {shown}: {e}") from None
        except TypeError:  # unhashable: a list or an object where a path should be
            raise PathRule(f"at /paths/{k}: a path is a non-empty string") from None
        if text in out:
            raise PathRule(f"at /paths/{k}: {text!r} is given twice")
        out.append(text)
    return out


# -- the decision ------------------------------------------------------------
def _pick(a: CharSet, b: CharSet) -> int | None:
    """A character both sets hold (never "/"), or None; a readable one when there is a choice.

    If any character is in both, one lies at the edge of a range of either set
    or of "/" (a range's start or end, or just outside it), or at either end of
    Unicode: those are all the candidates there are to try."""
    candidates = [*map(ord, "xaX_0~"), 0, 0x10FFFF]
    for lo, hi in (*a.ranges, *b.ranges, (0x2F, 0x2F)):
        candidates += [lo, hi, lo - 1, hi + 1]
    for c in candidates:
        if 0 <= c <= 0x10FFFF and a.has(c) and b.has(c):
            return c
    return None


_ANY = CharSet((), True)


@lru_cache(maxsize=65536)
def _names_meet(p: Name, q: Name) -> str | None:
    """A non-empty name that both name patterns match, or None: a breadth-first
    search over pairs of positions (i in p, j in q, whether a character was read yet)."""
    start = (0, 0, False)
    parent: dict[tuple[int, int, bool], tuple[tuple[int, int, bool], str]] = {start: (start, "")}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        i, j, some = state
        if i == len(p) and j == len(q) and some:
            out = []
            while state != start:
                state, c = parent[state]
                out.append(c)
            found = "".join(reversed(out))
            # the shortest name may be a hidden one ("*.py" meets "*" in ".py"); "x.py" reads better
            return "x" + found if found.startswith(".") and _matches(p, "x" + found) and _matches(q, "x" + found) \
                else found
        moves: list[tuple[tuple[int, int, bool], str]] = []
        a = p[i] if i < len(p) else None
        b = q[j] if j < len(q) else None
        if a == STAR:
            moves.append(((i + 1, j, some), ""))
        if b == STAR:
            moves.append(((i, j + 1, some), ""))
        if a is not None and b is not None:  # read one character with both
            sa = _ANY if a == STAR else a
            sb = _ANY if b == STAR else b
            assert isinstance(sa, CharSet) and isinstance(sb, CharSet)
            code = _pick(sa, sb)
            if code is not None:
                moves.append(((i if a == STAR else i + 1, j if b == STAR else j + 1, True), chr(code)))
        for nxt, read in moves:
            if nxt not in parent:
                parent[nxt] = (state, read)
                todo.append(nxt)
    return None


def _matches(name: Name, text: str) -> bool:
    """Whether one name pattern matches ``text`` (positions of the pattern reachable after each character)."""
    def close(states: set[int]) -> set[int]:
        out = set(states)
        for k in sorted(states):
            while k < len(name) and name[k] == STAR:
                k += 1
                out.add(k)
        return out

    states = close({0})
    for ch in text:
        step = set()
        for k in states:
            if k < len(name):
                token = name[k]
                if token == STAR:
                    step.add(k)
                elif isinstance(token, CharSet) and token.has(ord(ch)):
                    step.add(k + 1)
        states = close(step)
    return len(name) in states


@lru_cache(maxsize=65536)
def overlap(a: str, b: str) -> str | None:
    """A file path that both ``a`` and ``b`` cover, or None when they do not overlap.

    Both patterns get a ``**`` at the end (a path covers what is under it); a
    breadth-first search over pairs of segment positions then reads one name at
    a time with both: two name patterns read a name both match; ``**`` reads
    any name the other side's pattern matches, or steps aside."""
    p = parse(a).segments + (GLOBSTAR,)
    q = parse(b).segments + (GLOBSTAR,)
    start = (0, 0)
    parent: dict[tuple[int, int], tuple[tuple[int, int], str | None]] = {start: (start, None)}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        i, j = state
        if i == len(p) and j == len(q):
            names = []
            while state != start:
                state, name = parent[state]
                if name is not None:
                    names.append(name)
            return "/".join(reversed(names)) or "x"  # "**" and "**": any file at all
        moves: list[tuple[tuple[int, int], str | None]] = []
        x = p[i] if i < len(p) else None
        y = q[j] if j < len(q) else None
        if x == GLOBSTAR:
            moves.append(((i + 1, j), None))
        if y == GLOBSTAR:
            moves.append(((i, j + 1), None))
        if x is not None and y is not None and not (x == GLOBSTAR and y == GLOBSTAR):
            nx = (STAR,) if x == GLOBSTAR else x
            ny = (STAR,) if y == GLOBSTAR else y
            assert isinstance(nx, tuple) and isinstance(ny, tuple)
            name = _names_meet(nx, ny)
            if name is not None:
                moves.append(((i if x == GLOBSTAR else i + 1, j if y == GLOBSTAR else j + 1), name))
        for nxt, name in moves:
            if nxt not in parent:
                parent[nxt] = (state, name)
                todo.append(nxt)
    return None


@dataclass(frozen=True)
class Shared:
    """Where two tasks' paths overlap: one path of each, and a file both cover."""

    mine: str
    theirs: str
    covers: str

    def __str__(self) -> str:
        if self.mine == self.theirs:
            return f"both declare {self.mine!r}"
        return f"{self.mine!r} and {self.theirs!r} both cover {self.covers}"


def shared(mine: Sequence[str], theirs: Sequence[str]) -> Shared | None:
    """The first overlap between two tasks' paths (in the order declared), or None."""
    for a in mine:
        fa = parse(a).first
        for b in theirs:
            fb = parse(b).first
            if fa is not None and fb is not None and fa != fb:
                continue
            found = overlap(a, b)
            if found is not None:
                return Shared(a, b, found)
    return None


class Index:
    """Tasks' paths, looked up by first name: only paths that share a plain
    first name, or that start with a wildcard, are compared."""

    def __init__(self) -> None:
        self._by_first: dict[str, dict[str, list[str]]] = {}
        self._wild: dict[str, list[str]] = {}

    def add(self, key: str, paths: Iterable[str]) -> None:
        for p in paths:
            first = parse(p).first
            where = self._wild if first is None else self._by_first.setdefault(first, {})
            where.setdefault(key, []).append(p)

    def candidates(self, paths: Iterable[str]) -> set[str]:
        """Keys whose paths might overlap ``paths`` (a superset of those that do)."""
        out: set[str] = set(self._wild)
        for p in paths:
            first = parse(p).first
            if first is None:
                for group in self._by_first.values():
                    out.update(group)
            else:
                out.update(self._by_first.get(first, ()))
        return out
