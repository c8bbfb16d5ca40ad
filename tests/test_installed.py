"""The fleet that runs is the installed one: `fleet run`'s workers never import
a copy of fleet's source that a fleet repository holds, and `fleet status`
says when the carried copy and the installed fleet differ."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fleet as fleet_pkg
from fleet.commands.init import init
from fleet.git import Git
from fleet.installed import CARRIED, command

BIN = Path(sys.executable).parent


def _console_script() -> str:
    """`fleet` as a user types it: the console script of this environment."""
    found = BIN / "fleet"
    if not found.exists():
        pytest.fail("the fleet console script is not installed; `pip install -e '.[test]'` installs it")
    return str(found)


def _booby_trap(package: Path, marker: Path) -> None:
    """A copy of fleet whose import leaves a mark and whose commands fail: if
    anything imports it, the test sees it."""
    init_py = package / "__init__.py"
    init_py.write_text(init_py.read_text() + f"\nopen({str(marker)!r}, 'a').write({str(package)!r} + '\\n')\n"
                       "raise SystemExit('this copy of fleet must never run')\n")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "GITHUB_", "GH_"))}
    env.pop("PYTHONPATH", None)
    return env


def test_fleet_run_workers_run_the_installed_fleet_not_a_copy_in_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "mine"
    init(repo)
    marker = tmp_path / "imported"
    # what `fleet init` made before: fleet's source at the top, here edited (uncommitted) to misbehave
    shutil.copytree(fleet_pkg.__path__[0], repo / "fleet", ignore=shutil.ignore_patterns("__pycache__", "_template"))
    _booby_trap(repo / "fleet", marker)
    # and the copy the workflows carry, edited too
    _booby_trap(repo / CARRIED / "fleet", marker)
    p = subprocess.run([_console_script(), "run", "--ticks", "1", "--workers", "2", "--json"], cwd=repo,
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert not marker.exists(), marker.read_text()  # no process imported a copy
    report = json.loads(p.stdout)
    [tick] = report["ticks"]
    assert tick["delivered"] == tick["workers"] == 2, (report, p.stderr)
    assert report["applied"] == 6, (report, p.stderr)  # every agent's delta, made by the installed fleet


def test_the_worker_command_runs_this_fleet_whatever_the_folder_and_path_hold(tmp_path: Path) -> None:
    """Neither the working folder nor PYTHONPATH decides which fleet a worker imports."""
    marker = tmp_path / "imported"
    for where in (tmp_path / "cwd", tmp_path / "pythonpath"):
        shutil.copytree(fleet_pkg.__path__[0], where / "fleet",
                        ignore=shutil.ignore_patterns("__pycache__", "_template"))
        _booby_trap(where / "fleet", marker)
    env = dict(_env(), PYTHONPATH=str(tmp_path / "pythonpath"))
    p = subprocess.run(command("--version"), cwd=tmp_path / "cwd", env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert fleet_pkg.__version__ in p.stdout
    assert not marker.exists(), marker.read_text()
    # the same process, started as `python -m fleet` was, imports the copy in the folder
    p = subprocess.run([sys.executable, "-m", "fleet", "--version"], cwd=tmp_path / "cwd", env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and marker.exists()


def test_status_says_which_fleet_the_repository_carries_when_it_differs(tmp_path: Path) -> None:
    repo = tmp_path / "mine"
    init(repo)
    st = lambda *a: subprocess.run([_console_script(), "status", *a], cwd=repo, env=_env(),
                                   capture_output=True, text=True, timeout=60)
    same = json.loads(st("--json").stdout)["fleet"]
    assert same == {"installed": fleet_pkg.__version__, "carried": fleet_pkg.__version__,
                    "path": f"{CARRIED}/fleet/", "same": True, "shadows": False}
    assert "warning" not in st().stdout
    init_py = repo / CARRIED / "fleet" / "__init__.py"
    init_py.write_text(init_py.read_text().replace(fleet_pkg.__version__, "0.0.1"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "commit", "-qam", "an older fleet for the workflows"], cwd=repo, check=True)
    other = json.loads(st("--json").stdout)["fleet"]
    assert other["carried"] == "0.0.1" and other["installed"] == fleet_pkg.__version__ and other["same"] is False
    text = st().stdout
    assert f"carries fleet 0.0.1 in {CARRIED}/fleet/, and fleet {fleet_pkg.__version__} is installed" in text


def test_status_warns_of_a_copy_at_the_top_that_shadows_the_installed_fleet(tmp_path: Path) -> None:
    repo = tmp_path / "old"
    init(repo)
    shutil.rmtree(repo / CARRIED)
    shutil.copytree(fleet_pkg.__path__[0], repo / "fleet", ignore=shutil.ignore_patterns("__pycache__", "_template"))
    (repo / "fleet" / "engine" / "__init__.py").write_text("# edited\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "the layout of old fleets"], cwd=repo, check=True)
    p = subprocess.run([_console_script(), "status"], cwd=repo, env=_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "fleet/ at the top shadows the installed fleet" in p.stdout
    assert Git(repo).text("status", "--porcelain") == ""
