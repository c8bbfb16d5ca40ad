"""jobcost: what one worker job of a tick spends before its first model call.

A tick on GitHub is up to 256 worker jobs, each on a fresh runner with no
fleet installed. Each way below starts from nothing (no venv) and stops the
clock when the first request of ``fleet work`` arrives at the local Messages
API (tests/servers/anthropic_api.py records each request's arrival); the
checkout (a fresh clone of a fleet made by ``fleet init``) is made before the
clock starts, as every way needs it alike. Each run then lets ``fleet work``
finish and checks it succeeded, so an install that does not work cannot be
fast.

- today (line ``jobcost-today``): the action's "Install fleet" step, read
  from action.yml and run as bash, with no wheelhouse: a venv with pip, then
  ``pip install`` of fleet's source, which resolves fleet's dependencies
  against the package indexes this machine's pip is configured with (``pip
  config list``), downloads them into an empty cache (a fresh runner has
  none), and builds fleet's wheel in an isolated build environment.
- ours (line ``jobcost``): the same step as a worker job now runs it, given
  the plan job's wheelhouse (built once before the clock starts, by the same
  step with ``build-wheelhouse``, as the plan job does once a tick): the
  folder checked against its SHA-256, a venv without pip, pip run from its own
  wheel with ``--no-index --no-compile``.
- floor: the same wheels and the same ``fleet work`` by the simplest means:
  ``python -m venv --without-pip``, each wheel unzipped into site-packages
  with zipfile (no resolution, no checks, no scripts, no RECORD), then
  ``python -m fleet work``.

Each line gives the median wall seconds to the first model call and the
ratio to the floor; ``cpu_s`` / ``cpu_ratio`` the same in CPU seconds (the
install's processes, then ``fleet work``'s own, read from /proc the moment its
first request is in): the machine is shared, so CPU moves less than wall time;
``install_s`` / ``install_cpu_s`` the install alone. ``jobcost`` also gives the
plan job's one-off build of the wheelhouse (``plan_build_s``, the same step
with ``build-wheelhouse``: today's install plus ``pip wheel``), the
wheelhouse's size, and the runner minutes a tick of ``--jobs-per-tick`` jobs
saves against today.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path
from typing import Any

from benchlib import git, log, median, result, workdir

from fleet.commands.init import init

DEFAULT_REPEAT = 3
SMALL_REPEAT = 1
KEY = "sk-bench-not-a-real-key"
ROOT = Path(__file__).resolve().parents[2]
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"  # no fleet on it: a fresh runner has none

sys.path.insert(0, str(ROOT))
from tests.servers.anthropic_api import AnthropicAPI  # noqa: E402


def install_step(action: Path = ROOT / "action.yml") -> str:
    """The bash of action.yml's "Install fleet" step, as the runner runs it."""
    lines = action.read_text().splitlines()
    start = lines.index("    - name: Install fleet")
    run = next(i for i in range(start, len(lines)) if lines[i] == "      run: |")
    body = []
    for line in lines[run + 1:]:
        if line.strip() and not line.startswith(" " * 8):
            break
        body.append(line[8:])
    return "\n".join(body).rstrip() + "\n"


def base_python() -> str:
    """The interpreter a runner's ``python3`` is: not this venv's."""
    return getattr(sys, "_base_executable", sys.executable)


def step(script: str, runner_temp: Path, env: dict[str, str], **inputs: str) -> subprocess.CompletedProcess[str]:
    """Run the step as a composite action's bash step runs (``bash -eo pipefail``), with its inputs
    (build_wheelhouse, wheelhouse, wheelhouse_sha256) as the step's environment says them."""
    (runner_temp / "github_output").touch()
    step_env = dict(env, ACTION_PATH=str(ROOT), FLEET_PYTHON=base_python(), RUNNER_TEMP=str(runner_temp),
                    GITHUB_OUTPUT=str(runner_temp / "github_output"),
                    FLEET_BUILD_WHEELHOUSE=inputs.get("build_wheelhouse", ""),
                    FLEET_WHEELHOUSE=inputs.get("wheelhouse", ""),
                    FLEET_WHEELHOUSE_SHA256=inputs.get("wheelhouse_sha256", ""))
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], env=step_env,
                          capture_output=True, text=True)


def outputs(runner_temp: Path) -> dict[str, str]:
    """The step's outputs (NAME=VALUE lines of $GITHUB_OUTPUT)."""
    lines = (runner_temp / "github_output").read_text().splitlines()
    return dict(line.partition("=")[::2] for line in lines)


def run_step(script: str, runner_temp: Path, env: dict[str, str], **inputs: str) -> dict[str, str]:
    """Run the step; its outputs, or exit naming the failure."""
    p = step(script, runner_temp, env, **inputs)
    if p.returncode:
        raise SystemExit(f"jobcost: the Install fleet step failed ({p.returncode}): {(p.stdout + p.stderr)[-2000:]}")
    return outputs(runner_temp)


def clean_env(cache: Path) -> dict[str, str]:
    """The machine's environment (its pip configuration included) with no fleet on the PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "GITHUB_", "GH_", "VIRTUAL_ENV"))}
    env.update(PATH=BASE_PATH, PIP_CACHE_DIR=str(cache))
    if shutil.which("fleet", path=BASE_PATH):
        raise SystemExit(f"jobcost: a fleet is on {BASE_PATH}; a fresh runner has none")
    return env


def floor_install(runner_temp: Path, wheelhouse: Path) -> Path:
    """The simplest means: a venv without pip and every wheel unzipped into it."""
    venv = runner_temp / "fleet-venv"
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for wheel in sorted(wheelhouse.glob("*.whl")):
        if not wheel.name.startswith("pip-"):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)
    return python


def cpu() -> float:
    """CPU seconds of this process (the floor unzips here; the server thread idles meanwhile) and of the
    child processes it waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def proc_cpu(pid: int) -> float:
    """CPU seconds so far of a running process and of the children it waited for (git)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def one_job(way: str, tmp: Path, origin: Path, api: AnthropicAPI, script: str, wheelhouse: Path,
            sha: str) -> dict[str, float]:
    """One fresh job: install by ``way``, then ``fleet work`` to its first model call."""
    job = tmp / f"job-{way}-{time.monotonic_ns()}"
    runner_temp = job / "temp"
    runner_temp.mkdir(parents=True)
    checkout = job / "checkout"
    git(tmp, "clone", "-q", str(origin), str(checkout))
    env = clean_env(job / "pip-cache")
    api.reset()
    t0, wall0, c0 = time.perf_counter(), time.time(), cpu()
    if way == "floor":
        argv = [str(floor_install(runner_temp, wheelhouse)), "-m", "fleet"]
    else:
        inputs = {"wheelhouse": str(wheelhouse), "wheelhouse_sha256": sha} if way == "ours" else {}
        run_step(script, runner_temp, env, **inputs)
        argv = [str(runner_temp / "fleet-venv" / "bin" / "fleet")]
    installed, install_cpu = time.perf_counter() - t0, cpu() - c0
    work_env = dict(env, ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=api.url)
    p = subprocess.Popen([*argv, "work", "-C", str(checkout), "--json", "--worker", "1", "--workers", "1",
                          "--outbox", str(job / "outbox")], env=work_env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    work_cpu = None
    while p.poll() is None:
        if api.requests:
            work_cpu = proc_cpu(p.pid)  # the first request is in: what fleet work spent to make it
            break
        time.sleep(0.005)
    _, err = p.communicate()
    done = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"jobcost: fleet work failed after the {way} install ({p.returncode}): {err[-2000:]}")
    seen = api.requests
    if not seen or work_cpu is None or not list((job / "outbox").rglob("*.json")):
        raise SystemExit(f"jobcost: fleet work after the {way} install made no model call or wrote no delta")
    first = min(s.wall for s in seen) - wall0
    shutil.rmtree(job, ignore_errors=True)
    return {"first_call": first, "install": installed, "install_cpu": install_cpu,
            "first_call_cpu": install_cpu + work_cpu, "job": done}


def build_wheelhouse(tmp: Path, script: str) -> tuple[Path, str, float]:
    """The plan job's one-off: the same step with build-wheelhouse."""
    runner_temp = tmp / "plan-temp"
    runner_temp.mkdir()
    wheelhouse = tmp / "wheelhouse"
    t0 = time.perf_counter()
    outputs = run_step(script, runner_temp, clean_env(tmp / "plan-pip-cache"), build_wheelhouse=str(wheelhouse))
    seconds = time.perf_counter() - t0
    shutil.rmtree(runner_temp, ignore_errors=True)
    if not outputs.get("wheelhouse-sha256"):
        raise SystemExit("jobcost: build-wheelhouse gave no wheelhouse-sha256 output")
    return wheelhouse, outputs["wheelhouse-sha256"], seconds


def add_arguments(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--jobs-per-tick", type=int, default=256,
                   help="worker jobs in a tick, for the per-tick figures (default 256, GitHub's matrix limit)")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    script = install_step()
    with workdir(args.tmp, "fleet-bench-jobcost-", args.keep) as tmp:
        repo, origin = tmp / "fleet", tmp / "origin.git"
        init(repo)
        git(tmp, "clone", "-q", "--bare", str(repo), str(origin))
        log("building the wheelhouse as the plan job does (once)")
        wheelhouse, sha, build = build_wheelhouse(tmp, script)
        size = sum(p.stat().st_size for p in wheelhouse.iterdir())
        wheels = len(list(wheelhouse.glob("*.whl")))
        runs: dict[str, list[dict[str, float]]] = {"today": [], "ours": [], "floor": []}
        with AnthropicAPI() as api:
            for i in range(args.repeat):
                for way in runs:
                    log(f"run {i + 1}/{args.repeat}: {way}")
                    runs[way].append(one_job(way, tmp, origin, api, script, wheelhouse, sha))

    def med(way: str, key: str) -> float:
        return median([r[key] for r in runs[way]])

    floor = med("floor", "first_call")
    floor_cpu = med("floor", "first_call_cpu")
    jobs = args.jobs_per_tick

    def line(bench: str, way: str, **extra: Any) -> dict[str, Any]:
        ours_cpu = med(way, "first_call_cpu")
        return result(bench, med(way, "first_call"), floor, "s",
                      cpu_s=round(ours_cpu, 3), floor_cpu_s=round(floor_cpu, 3),
                      cpu_ratio=round(ours_cpu / floor_cpu, 3) if floor_cpu else None,
                      install_s=round(med(way, "install"), 3), install_cpu_s=round(med(way, "install_cpu"), 3),
                      floor_install_s=round(med("floor", "install"), 3),
                      floor_install_cpu_s=round(med("floor", "install_cpu"), 3),
                      repeat=args.repeat, python=sysconfig.get_python_version(), **extra)

    saved = med("today", "first_call") - med("ours", "first_call")
    return [
        line("jobcost", "ours", today_s=round(med("today", "first_call"), 3), plan_build_s=round(build, 3),
             wheelhouse_mb=round(size / 1e6, 1), wheels=wheels, jobs_per_tick=jobs,
             runner_minutes_saved_per_tick=round(jobs * saved / 60, 1)),
        line("jobcost-today", "today"),
    ]
