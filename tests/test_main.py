"""The registry in fleet.main: every command is listed, with its own help, and
listing them imports none."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

import fleet.commands
from fleet.main import COMMANDS, cli


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
