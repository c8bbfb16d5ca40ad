"""Identifiers that are safe to use as path components, and new delta ids.

Every id that ends up in a path (collection, document, worker, stream, agent,
delta) matches ``ID_PATTERN``: no separators, no ``..``, no leading dot or dash.
"""

from __future__ import annotations

import re
import secrets

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_ID = re.compile(ID_PATTERN)


def is_safe_id(value: object) -> bool:
    return isinstance(value, str) and bool(_ID.match(value)) and ".." not in value


def new_delta_id(tick: int, worker: str, stream: str) -> str:
    """A collision-proof delta id: readable prefix plus 64 random bits.

    Two streams that pick the same stream name still get distinct ids, and the
    file lives under its worker's own directory, so file names cannot collide.
    """
    return f"t{tick}-{worker}-{stream}-{secrets.token_hex(8)}"
