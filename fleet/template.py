"""Where the files `fleet init` copies come from.

In an installed wheel they ship as ``fleet/_template``; in a checkout (an
editable install, or this repository used as a template) they are the
repository's own ``state/``, ``schemas/``, workflows and ``action.yml``.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def root() -> Path:
    packaged = _HERE / "_template"
    if (packaged / "schemas").is_dir():
        return packaged
    return _HERE.parent


def protocol_schema_dir() -> Path:
    """The schemas of fleet's own formats (delta, config, fleet, conflict)."""
    return root() / "schemas"
