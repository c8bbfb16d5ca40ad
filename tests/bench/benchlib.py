"""Helpers shared by the benchmarks in tests/bench/.

A benchmark module ``tests/bench/<name>.py`` exposes ``run(args) -> list[dict]``
and, if it has options of its own, ``add_arguments(parser)``. Each dict is one
result line: at least ``bench``, ``ours``, ``floor``, ``ratio`` (ours / floor,
lower is better) and ``unit``; :func:`result` builds one.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PERSON = ("Bench Person", "person@example.com")


def result(bench: str, ours: float, floor: float, unit: str = "s", **extra: Any) -> dict[str, Any]:
    """One result line; the four required keys first, then the extras."""
    out: dict[str, Any] = {
        "bench": bench,
        "ours": round(ours, 4),
        "floor": round(floor, 4),
        "ratio": round(ours / floor, 3) if floor else None,
        "unit": unit,
    }
    out.update(extra)
    return out


def fs_type(path: Path) -> str:
    """The file system a scratch folder is on (ext4, tmpfs...): disk-bound results depend on it."""
    p = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return p.stdout.strip() or "unknown"


def median(values: list[float]) -> float:
    return statistics.median(values)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Stopwatch:
    """``with sw: ...`` adds the elapsed wall time to ``sw.times`` and the CPU
    time of this process and the child processes it waited for (git) to
    ``sw.cpu``: on a busy machine CPU time moves less than wall time."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []

    def __enter__(self) -> Stopwatch:
        self._c0 = _cpu()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.times.append(time.perf_counter() - self._t0)
        self.cpu.append(_cpu() - self._c0)


def log(msg: str) -> None:
    """Progress on stderr, so stdout stays one JSON line per result."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def default_tmp() -> str | None:
    """Where scratch repositories go unless ``--tmp`` says: $FLEET_BENCH_TMP,
    else /dev/shm when it is a writable RAM disk with room, else $TMPDIR.

    Both sides write tens of thousands of small files; on a virtual machine's
    disk that write-back swings a run by tens of percent, which hides what the
    benchmark is for (fleet's own work against the floor's). Pass ``--tmp``
    a disk folder to include the disk.
    """
    env = os.environ.get("FLEET_BENCH_TMP")
    if env:
        return env
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
        if os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize > 2 << 30:
            return shm
    except OSError:
        pass
    return None


@contextmanager
def workdir(parent: str | None, prefix: str, keep: bool) -> Iterator[Path]:
    """A scratch folder, removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    """Run git in ``repo`` as a person (not as fleet); raise on failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME=PERSON[0], GIT_AUTHOR_EMAIL=PERSON[1],
        GIT_COMMITTER_NAME=PERSON[0], GIT_COMMITTER_EMAIL=PERSON[1],
        GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
    )
    p = subprocess.run(["git", *args], cwd=repo, input=input, capture_output=True, env=env)
    if p.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def copy_repo(src: Path, dst: Path) -> Path:
    """An identical copy of a repository with a fresh index (so neither side
    pays for re-hashing files whose inode numbers changed in the copy)."""
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    git(dst, "update-index", "-q", "--really-refresh")
    return dst


def profile_to_stderr(fn: Callable[[], Any], top: int = 25, title: str = "", own: int = 15) -> Any:
    """Run ``fn`` under cProfile; write the top cumulative entries, then the
    top entries by own time, to stderr."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    try:
        value = fn()
    finally:
        prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"\n==== profile{': ' + title if title else ''} (top {top} by cumulative time) ====", file=sys.stderr)
    print(buf.getvalue(), file=sys.stderr, flush=True)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(own)
    text = buf.getvalue()
    text = text[text.find("   ncalls"):] if "   ncalls" in text else text
    print(f"==== profile{': ' + title if title else ''} (top {own} by own time) ====", file=sys.stderr)
    print(text, file=sys.stderr, flush=True)
    return value


class PhaseTimer:
    """Wrap named callables (``owner.attr``) to sum their wall time and calls.

    Used only with ``--phases``: the wrappers cost about a microsecond a call.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str | None = None) -> None:
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        name = label or attr
        totals, calls = self.totals, self.calls
        totals.setdefault(name, 0.0)
        calls.setdefault(name, 0)
        func = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return func(*a, **kw)
            finally:
                totals[name] += time.perf_counter() - t0
                calls[name] += 1

        timed.__wrapped__ = func  # type: ignore[attr-defined]
        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()

    def report(self) -> dict[str, dict[str, float]]:
        return {k: {"s": round(v, 4), "calls": self.calls[k]} for k, v in self.totals.items()}
