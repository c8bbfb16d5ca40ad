"""The action's "Install fleet" step, run as a runner runs it (bash, read from action.yml):
the plan job builds a wheelhouse once a tick; a later job installs fleet from it alone,
and only from exactly the wheels the plan job named by SHA-256.

The wheelhouse is built for real, with pip as this machine configures it (``pip config
list``), once for the module.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import __version__

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "bench"))
from jobcost import install_step, outputs, step  # noqa: E402

BASE_PATH = f"/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin"


def _runner_env() -> dict[str, str]:
    """A fresh runner: no fleet on the PATH, no key, no token."""
    assert shutil.which("fleet", path=BASE_PATH) is None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "GITHUB_", "GH_", "VIRTUAL_ENV"))}
    env["PATH"] = BASE_PATH
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The plan job's step with build-wheelhouse: the folder and its wheelhouse-sha256 output."""
    tmp = tmp_path_factory.mktemp("plan")
    temp = tmp / "runner-temp"
    temp.mkdir()
    wheelhouse = tmp / "wheelhouse"
    p = step(install_step(), temp, dict(_runner_env(), PIP_CACHE_DIR=str(tmp / "pip-cache")),
             build_wheelhouse=str(wheelhouse))
    assert p.returncode == 0, p.stdout + p.stderr
    sha = outputs(temp)["wheelhouse-sha256"]
    # the plan job itself runs the fleet it built
    r = subprocess.run([str(temp / "fleet-venv/bin/fleet"), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and __version__ in r.stdout
    yield wheelhouse, sha


def _job(tmp: Path, wheelhouse: Path, sha: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    temp = tmp / f"runner-temp-{random.random()}"
    temp.mkdir()
    return step(install_step(), temp, _runner_env(), wheelhouse=str(wheelhouse), wheelhouse_sha256=sha), temp


def _copy(wheelhouse: Path, dest: Path) -> Path:
    shutil.copytree(wheelhouse, dest)
    return dest


@pytest.mark.slow
def test_the_wheelhouse_lists_every_wheel_by_its_sha256(built: tuple[Path, str]) -> None:
    wheelhouse, sha = built
    sums = (wheelhouse / "SHA256SUMS").read_bytes()
    assert hashlib.sha256(sums).hexdigest() == sha
    listed = dict(reversed(line.split("  ", 1)) for line in sums.decode().splitlines())
    assert sorted(listed) == sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert all(hashlib.sha256((wheelhouse / name).read_bytes()).hexdigest() == h for name, h in listed.items())
    names = {n.split("-")[0].lower() for n in listed}
    assert {"fleet", "pip", "click", "orjson", "anthropic", "pygithub", "jsonschema_rs", "rich"} <= names


@pytest.mark.slow
def test_a_later_job_installs_a_working_fleet_from_the_wheels_alone(built: tuple[Path, str], tmp_path: Path) -> None:
    wheelhouse, sha = built
    p, temp = _job(tmp_path, wheelhouse, sha)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"fleet installed from the wheelhouse: fleet, version {__version__}" in p.stdout
    assert outputs(temp) == {}  # it builds nothing
    venv = temp / "fleet-venv"
    site = next(venv.glob("lib/python*/site-packages"))
    assert not (site / "pip").exists()  # pip ran from its wheel; the venv was made without it
    assert not list((site / "fleet").rglob("*.pyc"))  # no compilation of what a job may never import
    r = subprocess.run([str(venv / "bin/fleet"), "init", "--examples", "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and '"examples"' in r.stdout, r.stderr


def _refused(p: subprocess.CompletedProcess[str], temp: Path, rule: str) -> None:
    """Exit 1, one ::error line that says what was wrong, and nothing installed."""
    assert p.returncode == 1, p.stdout + p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("::error")]
    assert len(errors) == 1 and re.search(rule, errors[0]), p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert not (temp / "fleet-venv").exists()


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(min_value=0), where=st.floats(min_value=0, max_value=1, exclude_max=True),
       flip=st.integers(min_value=1, max_value=255))
def test_a_wheel_changed_anywhere_is_refused(built: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory,
                                             which: int, where: float, flip: int) -> None:
    wheelhouse, sha = built
    tmp = tmp_path_factory.mktemp("tampered")
    copy = _copy(wheelhouse, tmp / "wheelhouse")
    wheels = sorted(copy.glob("*.whl"))
    wheel = wheels[which % len(wheels)]
    data = bytearray(wheel.read_bytes())
    data[int(where * len(data))] ^= flip
    wheel.write_bytes(bytes(data))
    p, temp = _job(tmp, copy, sha)
    _refused(p, temp, r"a wheel does not match its SHA-256 in SHA256SUMS")


@pytest.mark.slow
def test_a_wheel_added_or_taken_away_is_refused(built: tuple[Path, str], tmp_path: Path) -> None:
    wheelhouse, sha = built
    added = _copy(wheelhouse, tmp_path / "added")
    # a newer release of a dependency would win pip's choice among --find-links
    shutil.copy2(next(added.glob("click-*.whl")), added / "click-99.0.0-py3-none-any.whl")
    p, temp = _job(tmp_path, added, sha)
    _refused(p, temp, r"holds files SHA256SUMS does not list")
    taken = _copy(wheelhouse, tmp_path / "taken")
    next(taken.glob("orjson-*.whl")).unlink()
    p, temp = _job(tmp_path, taken, sha)
    _refused(p, temp, r"lacks some it lists")


@pytest.mark.slow
def test_a_wheelhouse_that_is_not_the_plan_jobs_is_refused(built: tuple[Path, str], tmp_path: Path) -> None:
    wheelhouse, sha = built
    other = _copy(wheelhouse, tmp_path / "other")
    # a consistent wheelhouse of its own (every wheel listed, every sum right) is still not the plan job's
    kept = (other / "SHA256SUMS").read_text().splitlines()[0]
    (other / "SHA256SUMS").write_text(kept + "\n")
    for wheel in other.glob("*.whl"):
        if wheel.name != kept.split("  ", 1)[1]:
            wheel.unlink()
    p, temp = _job(tmp_path, other, sha)
    _refused(p, temp, r"SHA256SUMS: its SHA-256 is not the wheelhouse-sha256 given")
    p, temp = _job(tmp_path, tmp_path / "never-downloaded", sha)
    _refused(p, temp, r"never-downloaded/SHA256SUMS: .*\(no such file\)")


def test_build_wheelhouse_wants_a_new_folder(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "old.whl").write_bytes(b"")
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    p = step(install_step(), temp, _runner_env(), build_wheelhouse=str(used))
    _refused(p, temp, r"build-wheelhouse: .*/used is not empty")


def test_a_runner_with_fleet_installed_builds_and_installs_nothing(tmp_path: Path) -> None:
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    env = dict(_runner_env(), PATH=f"{Path(sys.executable).parent}{os.pathsep}{BASE_PATH}")
    p = step(install_step(), temp, env, build_wheelhouse=str(tmp_path / "wheelhouse"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("fleet is installed: fleet, version")
    assert outputs(temp) == {} and not (tmp_path / "wheelhouse").exists() and not (temp / "fleet-venv").exists()


@pytest.mark.slow
def test_wheels_that_do_not_fit_this_runner_fall_back_to_the_source_with_a_warning(
        built: tuple[Path, str], tmp_path: Path) -> None:
    """The plan job's wheels, checked and genuine, that pip cannot use here (as on a runner with
    another Python): a warning, then fleet from its source as before the wheelhouse."""
    wheelhouse, _ = built
    only_pip = tmp_path / "only-pip"
    only_pip.mkdir()
    pip = next(wheelhouse.glob("pip-*.whl"))
    shutil.copy2(pip, only_pip / pip.name)
    sums = f"{hashlib.sha256(pip.read_bytes()).hexdigest()}  {pip.name}\n".encode()
    (only_pip / "SHA256SUMS").write_bytes(sums)
    p, temp = _job(tmp_path, only_pip, hashlib.sha256(sums).hexdigest())
    assert p.returncode == 0, p.stdout + p.stderr
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("::warning")]
    assert len(warnings) == 1 and "has no wheels for this runner's Python" in warnings[0], p.stderr
    assert "installed from the wheelhouse" not in p.stdout
    r = subprocess.run([str(temp / "fleet-venv/bin/fleet"), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and __version__ in r.stdout


@pytest.mark.slow
def test_a_second_step_of_the_same_job_uses_the_fleet_the_first_installed(built: tuple[Path, str],
                                                                          tmp_path: Path) -> None:
    wheelhouse, sha = built
    p, temp = _job(tmp_path, wheelhouse, sha)
    assert p.returncode == 0, p.stderr
    again = step(install_step(), temp, _runner_env(), build_wheelhouse=str(tmp_path / "more"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"fleet is installed in {temp / 'fleet-venv'}: fleet, version")
    assert not (tmp_path / "more").exists()
