"""Where the files `fleet init` copies come from.

In an installed wheel they ship as ``fleet/_template``; in a checkout (an
editable install, or this repository used as a template) they are the
repository's own ``state/``, ``schemas/``, workflows and ``action.yml``.

The example worlds are folders of ``fleet/examples/`` (in a checkout and in
a wheel alike), each with a ``README.md`` whose first line describes it. A
folder with its own ``state/`` and ``schemas/`` is a world of its own (its
schemas are its collections'; fleet's protocol schemas come from the
template); the one folder without is the template's own world, the default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import FleetError

_HERE = Path(__file__).resolve().parent
EXAMPLES = _HERE / "examples"


def root() -> Path:
    packaged = _HERE / "_template"
    if (packaged / "schemas").is_dir():
        return packaged
    return _HERE.parent


def protocol_schema_dir() -> Path:
    """The schemas of fleet's own formats (delta, config, fleet, conflict)."""
    return root() / "schemas"


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    state: Path  # the world's state/ folder
    schemas: tuple[Path, ...]  # the files of a new fleet's schemas/
    default: bool  # the template's own world


def examples() -> dict[str, Example]:
    """The example worlds by name, from ``fleet/examples/``."""
    out: dict[str, Example] = {}
    if not EXAMPLES.is_dir():
        return out
    template = root()
    for folder in sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and (p / "README.md").is_file()):
        description = next((line.strip() for line in (folder / "README.md").read_text().splitlines() if line.strip()), "")
        if (folder / "state").is_dir():
            own = sorted((folder / "schemas").glob("*.json"))
            protocol = protocol_schemas()
            clash = sorted({p.name for p in own} & {p.name for p in protocol})
            if clash:
                raise FleetError(f"{folder / 'schemas' / clash[0]}: has the name of one of fleet's protocol schemas")
            out[folder.name] = Example(folder.name, description, folder / "state", tuple(protocol + own), False)
        else:
            out[folder.name] = Example(folder.name, description, template / "state",
                                       tuple(sorted((template / "schemas").glob("*.json"))), True)
    return out


def default_example() -> str:
    """The name of the template's own world (the example ``fleet init`` makes by default)."""
    return next((e.name for e in examples().values() if e.default), "")


def protocol_schemas() -> list[Path]:
    """fleet's own schemas: the template's ``schemas/`` but for those its own
    world's collections name."""
    template = root()
    config = json.loads((template / "state" / "config.json").read_text())
    world = {c.get("schema") for c in config.get("collections", {}).values() if isinstance(c, dict)}
    return [p for p in sorted((template / "schemas").glob("*.json")) if p.name not in world]
