"""Keys never leave the process: exact-string redaction of every known secret.

Whatever fleet writes (delta files, commit messages, logs, summaries, error
messages) passes through :func:`redact` where it could carry text from the
outside world (a provider's error body, an exception message).
"""

from __future__ import annotations

import os

SECRET_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
MASK = "[REDACTED]"
_extra: set[str] = set()


def register(value: str | None) -> None:
    """Also redact ``value`` (a key passed by flag or config rather than env)."""
    if value and len(value) >= 8:
        _extra.add(value)


def _secrets() -> list[str]:
    found = {os.environ.get(k, "") for k in SECRET_ENV} | _extra
    return sorted((s for s in found if len(s) >= 8), key=len, reverse=True)


def redact(text: str) -> str:
    for s in _secrets():
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact_bytes(data: bytes) -> bytes:
    for s in _secrets():
        b = s.encode()
        if b in data:
            data = data.replace(b, MASK.encode())
    return data
