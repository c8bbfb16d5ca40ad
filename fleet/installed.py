"""Which fleet runs: the installed package, never a copy in the fleet repository.

A fleet repository made by ``fleet init`` carries fleet's source for its
workflows (``uses: ./.github/actions/fleet`` installs it on a runner). That
copy lives under ``.github/actions/fleet/``, where ``import fleet`` cannot
find it; repositories made before kept it in ``fleet/`` at the top, where
``python -m fleet`` run in the repository imported it instead of the
installed package. Worker processes are started by :func:`command`, which
runs the very package this process imported, whatever the working folder or
``PYTHONPATH`` hold, so the workers and the merge always run the same code.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from fleet import __version__
from fleet.git import Git

PACKAGE = Path(__file__).resolve().parent
CARRIED = ".github/actions/fleet"  # where a fleet repository carries fleet's source (a repository's own action)
LEGACY = "fleet"  # where `fleet init` put it before: it shadowed the installed package

# -P: no working folder on sys.path (so no ./click or ./anthropic either);
# then `fleet` is loaded from the exact folder the parent runs, not looked up.
_BOOT = """\
import importlib.util, sys
pkg = sys.argv.pop(1)
spec = importlib.util.spec_from_file_location("fleet", pkg + "/__init__.py", submodule_search_locations=[pkg])
mod = importlib.util.module_from_spec(spec)
sys.modules["fleet"] = mod
spec.loader.exec_module(mod)
sys.argv[0] = "fleet"
from fleet.entry import main
main()
"""


def command(*args: str) -> list[str]:
    """The argv of a ``fleet ARGS...`` process that runs this very fleet package.

    Not ``python -m fleet``: that imports ``./fleet`` from the working folder
    first, so a worker started in a repository holding a copy of fleet's source
    would run that copy (uncommitted edits included) while the merge runs the
    installed package.
    """
    return [sys.executable, "-P", "-c", _BOOT, str(PACKAGE), *args]


_VERSION = re.compile(rb"""^__version__\s*=\s*["']([^"'\n]{1,64})["']""", re.MULTILINE)


def _blob_sha(data: bytes) -> str:
    """The git blob id of ``data``, to compare a carried file with an installed one without reading it twice."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _installed_sources() -> dict[str, str]:
    """Path (relative to the package) -> blob id of the installed package's Python files."""
    return {p.relative_to(PACKAGE).as_posix(): _blob_sha(p.read_bytes())
            for p in sorted(PACKAGE.rglob("*.py")) if "_template" not in p.relative_to(PACKAGE).parts}


def carried(git: Git, rev: str) -> dict[str, Any]:
    """Which fleet the repository carries at ``rev`` and which is installed.

    ``carried`` is None when the repository holds no copy of fleet's source;
    ``same`` says whether its Python files equal the installed package's;
    ``shadows`` is true for a copy at the top (``fleet/``), where
    ``python -m fleet`` run in a checkout imports it instead of the installed one.
    """
    out: dict[str, Any] = {"installed": __version__, "carried": None, "path": None, "same": None, "shadows": False}
    for folder in (f"{CARRIED}/fleet", LEGACY):
        files = {p[len(folder) + 1:]: sha for p, sha in git.ls_tree(rev, folder + "/").items()
                 if p.endswith(".py") and "/_template/" not in p}
        if "__init__.py" not in files:
            continue
        found = _VERSION.search(git.show(rev, f"{folder}/__init__.py") or b"")
        out.update(carried=found.group(1).decode(errors="replace") if found else "unknown", path=folder + "/",
                   same=files == _installed_sources(), shadows=folder == LEGACY)
        break
    return out
