"""A remote over ssh: fleet's ssh gives up on an address that does not answer and
never asks at a terminal, unless the user named an ssh of their own, which is used
as named. A recording `ssh` on PATH stands in for the network (none here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.commands.init import init


def _recorder(folder: Path, name: str) -> Path:
    """A program that writes its arguments to ``name``.args and fails as ssh does on a dead address."""
    folder.mkdir(exist_ok=True)
    prog = folder / name
    prog.write_text(f"#!/bin/sh\necho \"$@\" >> '{folder / (name + '.args')}'\n"
                    "echo 'ssh: connect to host example.invalid port 22: Connection timed out' >&2\nexit 255\n")
    prog.chmod(0o755)
    return prog


@pytest.fixture
def ssh_fleet(tmp_path: Path) -> Path:
    path = tmp_path / "fleet"
    init(path)
    subprocess.run(["git", "remote", "add", "origin", "ssh://git@example.invalid/fleet.git"], cwd=path, check=True)
    return path


def _status(path: Path, bin_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("GIT_SSH", "GIT_SSH_COMMAND")}
    environ.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env)
    p = subprocess.run([sys.executable, "-m", "fleet", "status"], cwd=path, capture_output=True, text=True,
                       env=environ, timeout=120)
    assert "Traceback" not in p.stdout + p.stderr
    return p


def test_fleets_ssh_gives_up_on_a_silent_address_and_never_asks(ssh_fleet: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _recorder(bin_dir, "ssh")
    p = _status(ssh_fleet, bin_dir)
    assert p.returncode != 0 and p.stderr.strip().startswith("fleet: "), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Connection timed out" in p.stderr, p.stderr  # ssh's why
    args = (bin_dir / "ssh.args").read_text()
    assert "ConnectTimeout=30" in args and "BatchMode=yes" in args and "example.invalid" in args, args


@pytest.mark.parametrize("how", ["core.sshCommand", "GIT_SSH_COMMAND", "GIT_SSH"])
def test_an_ssh_the_user_named_is_used_as_named(ssh_fleet: Path, tmp_path: Path, how: str) -> None:
    bin_dir = tmp_path / "bin"
    _recorder(bin_dir, "ssh")
    mine = _recorder(bin_dir, "myssh")
    env: dict[str, str] = {}
    if how == "core.sshCommand":
        subprocess.run(["git", "config", "core.sshCommand", f"{mine} -o Mine=yes"], cwd=ssh_fleet, check=True)
    elif how == "GIT_SSH_COMMAND":
        env["GIT_SSH_COMMAND"] = f"{mine} -o Mine=yes"
    else:
        env["GIT_SSH"] = str(mine)
    p = _status(ssh_fleet, bin_dir, **env)
    assert p.returncode != 0
    assert not (bin_dir / "ssh.args").exists()
    args = (bin_dir / "myssh.args").read_text()
    assert "ConnectTimeout" not in args and "example.invalid" in args, args
