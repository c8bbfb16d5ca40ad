"""Templates in a world's declarations: ``{ref}`` in strings.

A world's tools and prompt are JSON; where they need a value from the call or
the state (the acting agent, the tick, an input field, a field of a document)
a string names it in braces: ``"<collection>/{input.field}"``, ``"{agent}"``,
``"- {id}: {title:120}"``. A string that is exactly one reference is replaced
by the value with its type (``"{tick}"`` is the integer); a reference inside
other text is written as text, cut to ``:N`` characters if asked. ``{{`` and
``}}`` are literal braces. Nothing is evaluated: a reference is a dotted
name looked up in a scope, never code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fleet import canonical

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^([A-Za-z_$][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_$-]+)*)(?::([0-9]{1,5}))?$")


class TemplateError(ValueError):
    """A template that cannot be read: the message says what is wrong."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Ref:
    root: str
    path: tuple[str, ...]
    cut: int | None

    @property
    def dotted(self) -> str:
        return ".".join((self.root, *self.path))

    def lookup(self, scope: Scope) -> Any:
        value = scope.get(self.root)
        for key in self.path:
            if isinstance(value, dict):
                value = value.get(key, MISSING)
            else:
                return MISSING
        return value


@dataclass(frozen=True)
class Text:
    """One compiled string: literal parts and references."""

    parts: tuple[str | Ref, ...]

    @property
    def whole(self) -> Ref | None:
        """The reference, if the string is exactly one (its value keeps its type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Ref) and self.parts[0].cut is None:
            return self.parts[0]
        return None

    @property
    def refs(self) -> tuple[Ref, ...]:
        return tuple(p for p in self.parts if isinstance(p, Ref))

    def value(self, scope: Scope) -> Any:
        whole = self.whole
        if whole is not None:
            return whole.lookup(scope)
        return self.text(scope)

    def text(self, scope: Scope) -> str:
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            else:
                s = as_text(p.lookup(scope))
                out.append(s if p.cut is None else s[: p.cut])
        return "".join(out)

    def __str__(self) -> str:
        return "".join(p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else
                       "{" + p.dotted + (f":{p.cut}" if p.cut is not None else "") + "}" for p in self.parts)


def compile_text(text: str) -> Text:
    parts: list[str | Ref] = []
    literal: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        literal.append(text[pos:m.start()])
        pos = m.end()
        tok = m.group(0)
        if tok in ("{{", "}}"):
            literal.append(tok[0])
            continue
        if m.group(1) is None:
            raise TemplateError(f"unmatched {tok!r} in {text[:80]!r} (write {tok}{tok} for a literal brace)")
        name = _NAME.match(m.group(1).strip())
        if not name:
            raise TemplateError(f"{{{m.group(1)[:40]}}} is not a reference (a dotted name, optionally :N)")
        if any(literal):
            parts.append("".join(literal))
        literal = []
        path = tuple(name.group(2).split(".")[1:]) if name.group(2) else ()
        parts.append(Ref(name.group(1), path, int(name.group(3)) if name.group(3) else None))
    literal.append(text[pos:])
    if any(literal):
        parts.append("".join(literal))
    return Text(tuple(parts))


def compile_value(value: Any) -> Any:
    """A JSON value with every string compiled (objects and arrays kept)."""
    if isinstance(value, str):
        return compile_text(value)
    if isinstance(value, dict):
        return {k: compile_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    return value


def render(value: Any, scope: Scope) -> Any:
    """The value of a compiled template. In an object, a key whose value is one
    reference to something missing is left out; elsewhere a missing value is MISSING."""
    if isinstance(value, Text):
        return value.value(scope)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            r = render(v, scope)
            if r is not MISSING:
                out[k] = r
        return out
    if isinstance(value, list):
        return [r for r in (render(v, scope) for v in value) if r is not MISSING]
    return value


def refs_in(value: Any) -> Iterator[Ref]:
    if isinstance(value, Text):
        yield from value.refs
    elif isinstance(value, dict):
        for v in value.values():
            yield from refs_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from refs_in(v)


def as_text(value: Any) -> str:
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return ", ".join(str(v) for v in value)
    return canonical.dumps_line(value).decode("utf-8", errors="replace")


class Scope:
    """Names a template may use: an item's fields first (a document listed in
    a prompt), then the names of the call or the tick."""

    __slots__ = ("item", "names")

    def __init__(self, names: Mapping[str, Any], item: Mapping[str, Any] | None = None) -> None:
        self.names = names
        self.item = item

    def get(self, root: str) -> Any:
        if root == "$":
            return self.item if self.item is not None else MISSING
        if self.item is not None and root in self.item:
            return self.item[root]
        return self.names.get(root, MISSING)
