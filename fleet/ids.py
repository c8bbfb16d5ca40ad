"""Identifiers that are safe to use as path components, and new delta ids.

Every id that ends up in a path (collection, document, worker, stream, agent,
delta) matches ``ID_PATTERN``: no separators, no ``..``, no leading dot or dash,
nothing git refuses in a branch's name.
"""

from __future__ import annotations

import re
import secrets
import unicodedata

# No ``..``, no ``.lock`` or ``.`` at the end: an agent's, a task's, a lane's or a
# worker's name is also part of a git branch's name, which may have none of them
# (and Windows drops a file name's last dot).
ID_PATTERN = r"^(?!.*\.lock$)(?!.*\.\.)[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_-])?$"
NAME_RULE = ("letters, digits, '_', '.', '-'; a letter or digit first; at most 128; no '..'; "
             "not ending in '.' or '.lock'")  # ID_PATTERN in words
_ID = re.compile(ID_PATTERN)


def is_safe_id(value: object) -> bool:
    """Whether ``value`` may be a path component (a full match: ``$`` alone
    would accept a trailing newline)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None and ".." not in value


# Characters that would make a name print as something else: controls (a
# newline forges a line), format characters (bidirectional overrides),
# surrogates (bytes that are not UTF-8), unassigned and line separators.
_HIDDEN = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def utf8(text: str) -> bool:
    """Whether ``text`` came from UTF-8 bytes: Python keeps a byte that is not
    (in git's output as fleet.git.decode reads it, in argv) as a lone surrogate."""
    return text.isascii() or not any("\udc80" <= c <= "\udcff" for c in text)


def printable(name: str, limit: int = 300) -> str:
    """``name`` as one line of text that says what it is: every character that
    could hide or forge something escaped (``\\x0a``, ``\\x1b``, ``\\u202e``,
    ``\\udcff`` for a byte that is not UTF-8), and at most ``limit`` characters.
    Applying it twice changes nothing (a backslash is kept as it is).

    This is how a name from outside (a file in an inbox, a path in a worker's
    tree) appears in a quarantine record, a commit message or an error."""
    out = name if name.isprintable() and name.isascii() else "".join(_escape(c) for c in name)
    return out if len(out) <= limit else out[: limit - 20] + f"...({len(out)} chars)"


def printable_lines(text: str) -> str:
    """Text for a terminal: as :func:`printable`, every character that could hide
    or forge something escaped, but newlines and tabs kept and no length limit.
    (A terminal obeys an escape sequence or a bidirectional override in a file's
    name; click drops escape sequences when the output is not a terminal, so the
    name shown would be another file's.)"""
    if text.isascii():
        return _ASCII_HIDDEN.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return "\n".join(line if line.isprintable() else "".join(c if c == "\t" else _escape(c) for c in line)
                     for line in text.split("\n"))


def json_lines(text: str) -> str:
    """JSON text with every hidden character outside ASCII (a bidirectional
    override, a lone surrogate) written as its ``\\uXXXX`` escape: the same data
    to a reader of JSON, nothing a terminal obeys. (json.dumps escapes ASCII
    control characters itself; such characters occur only inside strings.)"""
    if text.isascii():
        return text
    return "".join(c if c.isascii() or unicodedata.category(c) not in _HIDDEN else _json_escape(c) for c in text)


def _json_escape(c: str) -> str:
    code = ord(c)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


_ASCII_HIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _escape(c: str) -> str:
    if unicodedata.category(c) not in _HIDDEN:
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def new_delta_id(tick: int, worker: str, stream: str) -> str:
    """A collision-proof delta id: readable prefix plus 64 random bits.

    Two streams that pick the same stream name still get distinct ids, and the
    file lives under its worker's own directory, so file names cannot collide.
    """
    return f"t{tick}-{worker}-{stream}-{secrets.token_hex(8)}"


# Names Windows keeps for devices, with or without an extension: a clone there cannot hold such a file.
WINDOWS_DEVICES = frozenset(["CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                             *(f"LPT{i}" for i in range(1, 10))])


def device_name(file_name: str) -> bool:
    """Whether ``file_name`` is one Windows keeps for a device (``CON.json``, ``nul``)."""
    return file_name.split(".", 1)[0].upper() in WINDOWS_DEVICES
