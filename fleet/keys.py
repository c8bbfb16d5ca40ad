"""Keys never leave the process: exact-string redaction of every secret it can see.

(Named ``keys``, not ``secrets``, so as not to shadow the standard library.)

A secret is the value of a variable fleet knows to hold one (``GITHUB_TOKEN``,
``GH_TOKEN``, ``ANTHROPIC_API_KEY``, ...), of any variable named like one (a
token, key, secret, password or credential), of a variable the config names
(``redact`` in state/config.json), or a key passed by flag or config. Whatever
fleet writes passes through :func:`redact` where it could carry text from the
outside world, and every blob and commit message fleet writes to git passes
through it once more (``Git.write_commit``), so a secret that slipped into a
record still never reaches a commit.
"""

from __future__ import annotations

import os
import re

SECRET_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "GITHUB_TOKEN", "GH_TOKEN",
              "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN")
# Names that say a value is a secret, as CI systems mask them by name.
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY)", re.I)
MASK = "[REDACTED]"
MIN_LENGTH = 8  # shorter values ("1", "true") are not keys, and masking them would garble text
_extra: set[str] = set()
_names: set[str] = set()


def register(value: str | None) -> None:
    """Also redact ``value`` (a key passed by flag or config rather than env)."""
    if value and len(value) >= MIN_LENGTH:
        _extra.add(value)


def register_names(names: list[str] | tuple[str, ...]) -> None:
    """Also redact the values of these environment variables (config ``redact``)."""
    _names.update(names)


def is_secret_name(name: str) -> bool:
    return name in SECRET_ENV or name in _names or _SECRET_NAME.search(name) is not None


def values() -> list[str]:
    """Every secret value this process can see, longest first."""
    found = {v for k, v in os.environ.items() if is_secret_name(k)} | _extra
    return sorted((s for s in found if len(s) >= MIN_LENGTH), key=len, reverse=True)


# user:password@ in a URL (a remote given with its credentials): git strips
# them from its own messages, and so does every line fleet prints.
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def redact(text: str, known: list[str] | None = None) -> str:
    """``text`` with every secret value, and a URL's credentials, masked."""
    for s in values() if known is None else known:
        if s in text:
            text = text.replace(s, MASK)
    if "@" in text:
        text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", text)
    return text


def redact_bytes(data: bytes, known: list[str] | None = None) -> bytes:
    for s in values() if known is None else known:
        b = s.encode(errors="surrogateescape")
        if b in data:
            data = data.replace(b, MASK.encode())
    return data


def named() -> list[tuple[str, bytes]]:
    """(name, value as bytes) of every secret this process can see; keys given
    to fleet by flag or config are named as such. Encoded once, for a merge
    that looks for them in every delta file."""
    out = [(k, v) for k, v in sorted(os.environ.items()) if is_secret_name(k) and len(v) >= MIN_LENGTH]
    out += [("a key given to fleet", v) for v in sorted(_extra)]
    return [(k, v.encode(errors="surrogateescape")) for k, v in out]


def refuse(text: str, what: str) -> None:
    """Refuse a person's value that holds a secret: it would reach a commit
    masked (every commit is redacted), silently becoming ``[REDACTED]``. One
    line naming ``what`` (the flag or file) and which secret; the value itself
    is never echoed."""
    if redact(text) == text:
        return
    from fleet.errors import FleetError

    name = found_in(text.encode("utf-8", errors="surrogateescape"), named())
    held = f"the value of {name}" if name else "credentials in a URL (user:password@)"
    raise FleetError(f"{what}: holds {held}, a secret; fleet masks secrets in everything it commits, "
                     f"so it would be stored as {MASK}: refused, nothing written")


def found_in(data: bytes, known: list[tuple[str, bytes]]) -> str | None:
    """The name of the first of ``known`` (see :func:`named`) that ``data`` holds."""
    for name, value in known:
        if value in data:
            return name
    return None
