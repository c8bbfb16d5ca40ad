"""What a GitHub Actions job shows a person: a short summary table and one
annotation per quarantined delta.

Written only when the job provides ``GITHUB_STEP_SUMMARY`` (the table) and
``GITHUB_ACTIONS=true`` (annotations, as workflow commands on stdout). Every
line passes through secret redaction.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Any

from fleet.keys import redact
from fleet.records import Usage


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def table(title: str, row: dict[str, Any], notes: list[str] = ()) -> None:
    """Append a one-row table under ``title`` to the job summary, if there is one."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    head = "| " + " | ".join(row) + " |"
    rule = "| " + " | ".join("---" for _ in row) + " |"
    body = "| " + " | ".join(str(v) for v in row.values()) + " |"
    text = "\n".join([f"### {title}", "", head, rule, body, "", *[f"- {n}" for n in notes], ""]) + "\n"
    try:
        # O_NONBLOCK: a FIFO there fails at once instead of waiting for a reader for ever
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(0, "not a regular file")
            os.write(fd, redact(text).encode())
        finally:
            os.close(fd)
    except OSError as e:  # the summary is for show: a job whose work is done does not fail on it
        from fleet.ids import printable

        sys.stderr.write(f"fleet: warning: GITHUB_STEP_SUMMARY {printable(path, 200)}: the job summary was not "
                         f"written: {e.strerror or e}\n")


def quarantined(records: list[dict[str, Any]]) -> None:
    """One warning annotation per quarantined delta."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    for q in records:
        title = _escape_property(f"fleet: quarantined {q['path']}")
        sys.stdout.write(f"::warning title={title}::{_escape_data(redact(q['source'] + ': ' + q['reason']))}\n")
    sys.stdout.flush()


def warning(title: str, message: str) -> None:
    """One warning annotation."""
    if os.environ.get("GITHUB_ACTIONS") != "true":
        return
    sys.stdout.write(f"::warning title={_escape_property(title)}::{_escape_data(redact(message))}\n")
    sys.stdout.flush()


def cell(text: str, limit: int = 120) -> str:
    """Text from a delta (a model name a worker wrote) made safe for one table cell."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def money(usage: dict[str, Any]) -> tuple[str, str]:
    """A usage figure as written, for a table: every token, and the dollars."""
    u = Usage.parse(usage)
    return f"{u.tokens:,}", f"${u.cost_usd:.4f}"
