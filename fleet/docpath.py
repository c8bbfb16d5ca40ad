"""A field of a JSON document, addressed by its path of keys (never positions)."""

from __future__ import annotations

from typing import Any

MISSING = object()  # the field is absent (JSON has no value for that)


class PathError(Exception):
    """The path crosses a value that is not an object."""


def get(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path``, or :data:`MISSING`."""
    cur = doc
    for k in path:
        if not isinstance(cur, dict):
            raise PathError(f"{'.'.join(path)} crosses a value that is not an object")
        if k not in cur:
            return MISSING
        cur = cur[k]
    return cur


def put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``path`` to ``value``, making the objects on the way that are absent."""
    cur = doc
    for k in path[:-1]:
        nxt = cur.get(k, MISSING)
        if nxt is MISSING:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict):
            raise PathError(f"{'.'.join(path)} crosses a value that is not an object")
        cur = nxt
    cur[path[-1]] = value
