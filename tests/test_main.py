"""The registry in fleet.main: every command is listed, with its own help, and
listing them imports none; and what a claim, the command run most often, loads."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

import fleet.commands
from fleet.main import COMMANDS, cli
from tests.conftest import Fleet, fleet_cli


def test_every_command_module_is_registered() -> None:
    modules = sorted(p.stem for p in Path(fleet.commands.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    assert sorted(COMMANDS) == modules


def test_the_registry_says_what_each_command_says() -> None:
    for name, short in COMMANDS.items():
        command = getattr(importlib.import_module(f"fleet.commands.{name}"), f"{name}_command")
        assert isinstance(command, click.Command) and command.name == name
        first = inspect.cleandoc(command.help or "").split("\n\n")[0]
        assert " ".join(first.split()) == short, name


def test_help_lists_every_command_and_imports_none() -> None:
    code = ("import sys\nfrom fleet.main import cli\ntry:\n    cli(['--help'], prog_name='fleet')\n"
            "except SystemExit:\n    pass\nprint(sorted(m for m in sys.modules if m.startswith('fleet.commands.')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = p.stdout.splitlines()
    assert lines[-1] == "[]"
    listed = [line.split()[0] for line in lines[lines.index("Commands:") + 1:-1]]
    assert listed == sorted(COMMANDS)


def test_an_unknown_command_is_a_usage_error() -> None:
    r = CliRunner().invoke(cli, ["nosuch"])
    assert r.exit_code == 2 and "No such command 'nosuch'" in r.output


def _misuses() -> list[tuple[list[str], str]]:
    """For every command and subcommand: an option it lacks, and each bounded number
    option given a value past its bounds and one that is no number; with the help to see."""
    out: list[tuple[list[str], str]] = [(["--bogus"], "fleet"), (["-C"], "fleet")]

    def walk(path: list[str], command: click.Command) -> None:
        out.append(([*path, "--no-such-option"], " ".join(["fleet", *path])))
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag or param.count:
                continue
            opt = param.opts[-1]
            if param.nargs == 1 and not param.multiple and param.type.name in ("integer", "float", "integer range",
                                                                               "float range"):
                out.append(([*path, opt, "not-a-number"], " ".join(["fleet", *path])))
            if isinstance(param.type, click.IntRange) and param.type.min is not None:
                out.append(([*path, opt, str(int(param.type.min) - 1)], " ".join(["fleet", *path])))
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk([*path, name], sub)

    for name in COMMANDS:
        walk([name], getattr(importlib.import_module(f"fleet.commands.{name}"), f"{name}_command"))
    return out


def test_every_usage_error_is_one_line_that_names_the_help_to_read() -> None:
    """Click's own shows four lines (usage, hint, blank, error); fleet shows one, as for any error."""
    misuses = _misuses()
    assert len(misuses) > 2 * len(COMMANDS)
    for args, where in misuses:
        r = CliRunner().invoke(cli, args, prog_name="fleet")
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1, (args, r.output)
        assert lines[0].startswith("fleet: ") and lines[0].endswith(f"(see '{where} --help')"), (args, r.output)


def test_a_group_given_no_command_shows_its_help() -> None:
    for args in ([], ["task"], ["msg"]):
        r = CliRunner().invoke(cli, args, prog_name="fleet")
        assert "Usage: fleet" in r.output and "Commands:" in r.output, (args, r.output)


# Modules a claim must not load: the GitHub and Anthropic clients and the property-test
# library are slow to import and a claim needs none of them; jsonschema_rs is needed only
# when a record or the config has not been checked before (fleet.schemas, fleet.config).
HEAVY = {"github", "anthropic", "hypothesis", "fleet.engine", "fleet.github", "fleet.providers", "fleet.world",
         "fleet.tools", "fleet.prompt", "fleet.worker"}
LOADED = ("import atexit, sys\n"
          "atexit.register(lambda: sys.stderr.write('LOADED ' + ' '.join(sorted(sys.modules)) + '\\n'))\n"
          "sys.argv[0] = 'fleet'\nfrom fleet.main import main\nmain()\n")


def loaded(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`fleet ARGS` in its own process, and the modules it had loaded when it exited
    (packages by their top-level name too)."""
    p = subprocess.run([sys.executable, "-c", LOADED, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    names = next(line for line in p.stderr.splitlines() if line.startswith("LOADED ")).split()[1:]
    assert "fleet.main" in names
    return p, {n for name in names for n in (name, name.split(".")[0])}


def test_help_and_a_claims_help_load_no_heavy_module(tmp_path: Path) -> None:
    for args in (["--help"], ["task", "claim", "--help"], ["--version"]):
        p, modules = loaded(tmp_path, *args)
        assert p.returncode == 0, p.stderr
        assert not modules & (HEAVY | {"jsonschema_rs"}), (args, sorted(modules & (HEAVY | {"jsonschema_rs"})))
    assert not loaded(tmp_path, "--help")[1] & {"fleet.config", "fleet.tasks", "fleet.schemas", "orjson"}


def test_a_claim_on_a_checked_queue_and_config_loads_no_schema_library(origin_fleet: tuple[Fleet, Path]) -> None:
    f, _ = origin_fleet
    for title in ("one", "two", "three"):
        assert fleet_cli(f.path, "task", "add", title).returncode == 0
    p, checking = loaded(f.path, "validate")  # the instrument sees the schema library where it is used
    assert p.returncode == 0 and "jsonschema_rs" in checking, p.stderr
    p, _ = loaded(f.path, "task", "claim", "--as", "ada", "--json")
    assert p.returncode == 0, p.stderr
    taken = json.loads(p.stdout)["id"]
    assert fleet_cli(f.path, "task", "list").returncode == 0  # checks the claimed task's new file, and keeps it
    p, second = loaded(f.path, "task", "claim", "--as", "basil", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["claimed_by"] == "basil" and json.loads(p.stdout)["id"] != taken
    assert not second & (HEAVY | {"jsonschema_rs"}), sorted(second & (HEAVY | {"jsonschema_rs"}))
    # claim after claim, with no other reader between: each claimer keeps its own claim's record
    p, third = loaded(f.path, "task", "claim", "--as", "cleo", "--json")
    assert p.returncode == 0, p.stderr
    assert not third & (HEAVY | {"jsonschema_rs"}), sorted(third & (HEAVY | {"jsonschema_rs"}))


def test_a_file_where_fleet_keeps_a_folder_is_named_not_an_internal_error(tmp_path: Path) -> None:
    """A file at .git/fleet or .git/fleet/origin.git (where fleet run makes the
    local origin) was an internal error: NotADirectoryError, FileExistsError. The
    file system's refusals are the file and the reason, in one line, exit 1."""
    from fleet.commands.init import init

    for where in (".git/fleet", ".git/fleet/origin.git", ".git/fleet/origin.git.partial"):
        root = tmp_path / where.replace("/", "_")
        init(root)
        blocker = root / where
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_bytes(b"x")
        r = subprocess.run([sys.executable, "-m", "fleet", "run", "-C", str(root), "--ticks", "1"],
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and "internal error" not in r.stderr, r.stderr
        assert lines[0].startswith("fleet: ") and str(blocker.parent) in lines[0], r.stderr
        assert blocker.read_bytes() == b"x"


def test_init_says_a_next_step_the_shell_runs_as_said(tmp_path: Path) -> None:
    """`fleet init -- -x` said `next: cd -x`, which cd reads as an option; a name
    with a space, a quote or a newline is quoted so that bash lands in it."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    names = st.text(alphabet="-ab x'\"$\n\té!", min_size=1, max_size=8).filter(
        lambda n: n.strip() and "/" not in n and n not in (".", ".."))

    @settings(max_examples=25, deadline=None)
    @given(name=names)
    def check(name: str) -> None:
        import tempfile

        base = Path(tempfile.mkdtemp(dir=tmp_path))
        r = subprocess.run([sys.executable, "-m", "fleet", "init", "--", name], cwd=base, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        step = next(line for line in r.stdout.splitlines() if line.startswith("next: "))[len("next: "):]
        cd = step.removesuffix(" && fleet run")
        landed = subprocess.run(["bash", "-c", f"{cd} && pwd -P"], cwd=base, capture_output=True, text=True)
        assert landed.returncode == 0 and landed.stdout[:-1] == str((base / name).resolve()), (step, landed)

    check()
    r = subprocess.run([sys.executable, "-m", "fleet", "init", ""], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "DIRECTORY is empty" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
