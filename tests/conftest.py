"""Shared fixtures: real fleet repositories in temporary folders, never mocked git."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fleet import delta as delta_mod
from fleet.commands.init import init
from fleet.delta import Op
from fleet.git import Git
from fleet.main import cli
from fleet.worker import commit_deltas, stage_branch


class Fleet:
    """A fleet repository made by `fleet init`, with helpers to act as workers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.git = Git(path)

    def main(self) -> str:
        sha = self.git.rev_parse("refs/heads/main")
        assert sha
        return sha

    def delta(self, agent: str, *ops: Op, tick: int = 1, worker: str = "w1", stream: str | None = None,
              **kw: Any) -> dict[str, Any]:
        """A delta body. Its stream is numbered as its worker (w2: s2) unless given: an
        agent's deltas on two workers of one tick (how tests stage a conflict) are two
        streams' turns, as the merge applies only one turn of a stream a tick."""
        if stream is None:
            stream = f"s{worker[1:]}" if worker[:1] == "w" and worker[1:].isdigit() else f"s-{worker}"
        return delta_mod.make(tick=tick, worker=worker, stream=stream, agent=agent, ops=list(ops), **kw)

    def push(self, *bodies: dict[str, Any], tick: int | None = None) -> None:
        """Stage deltas on their workers' branches, as workers would."""
        by_worker: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for b in bodies:
            by_worker.setdefault((tick or b["tick"], b["worker"]), []).append(b)
        for (t, w), items in by_worker.items():
            ref = f"refs/heads/fleet/t{t}/{w}"
            old = self.git.rev_parse(ref)
            commit = commit_deltas(self.git, self.main(), t, w, items, parent=old)
            assert stage_branch(self.git, t, w, commit, old)

    def push_raw(self, worker: str, rel: str, data: bytes, tick: int = 1) -> None:
        """Stage an arbitrary file (malformed, oversized...) on a worker branch."""
        ref = f"refs/heads/fleet/t{tick}/{worker}"
        old = self.git.rev_parse(ref)
        commit = self.git.write_commit(old or self.main(), "raw\n", {rel: data}, [])
        assert self.git.update_ref(ref, commit, old)

    def read(self, rel: str) -> bytes:
        data = self.git.show("refs/heads/main", rel)
        assert data is not None, rel
        return data

    def fleet(self, *args: str) -> Any:
        """Run the CLI in this repository; returns click's Result."""
        return CliRunner().invoke(cli, [*args[:1], "-C", str(self.path), *args[1:]], catch_exceptions=False)

    def branches(self) -> list[str]:
        """The worker branches (fleet/t<tick>/<worker>; not the field index beside main, fleet/index/main)."""
        out = self.git.text("for-each-ref", "--format=%(refname)", "refs/heads/fleet/t[0-9]*/*")
        return out.split()


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Internal-error logs go to the test's own folder, not ~/.cache; and no
    key from the caller's environment: run.provider auto would take it and
    call the real API. Tests that want the model set the key themselves."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    # Nor the caller's switches (FLEET_PROGRESS=0, FLEET_STOP) or a CI job's summary
    # and annotations: each changes what a command prints. Tests that want one set it.
    for name in [n for n in os.environ if n.startswith("FLEET_")] + ["GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY",
                                                                     "GITHUB_RUN_ID"]:
        monkeypatch.delenv(name, raising=False)


def run(f: Fleet, *args: str, code: int = 0) -> Any:
    """The CLI in ``f``: the expected exit code, and never a traceback."""
    r = f.fleet(*args)
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    assert r.exit_code == code, r.output
    return r


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    path = tmp_path / "fleet"
    init(path)
    return Fleet(path)


@pytest.fixture
def origin_fleet(tmp_path: Path) -> tuple[Fleet, Path]:
    """A fleet whose main lives in a bare origin, as with a real remote."""
    path = tmp_path / "seed"
    init(path)
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(path), str(bare)], check=True)
    subprocess.run(["git", "remote", "add", "origin", str(bare)], cwd=path, check=True)
    subprocess.run(["git", "fetch", "--quiet", "origin"], cwd=path, check=True)
    return Fleet(path), bare


def ops(*items: Iterable) -> list[Op]:
    return [Op(*i) for i in items]


def fleet_cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`fleet ARGS` as a user runs it, in its own process, in ``cwd``; never a traceback."""
    p = subprocess.run([sys.executable, "-m", "fleet", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    assert "Traceback" not in p.stdout + p.stderr
    return p


def hand_tree(git: Git, files: dict[str, tuple[str, bytes | str]]) -> str:
    """A tree holding ``files`` (path -> (git mode, content)) as git stores them, made with
    git's own plumbing in a scratch index, as someone else's tool would: a symbolic link
    is mode 120000 whose content is its target; a submodule (160000) names its commit."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        for path, (mode, data) in files.items():
            if mode == "160000":
                sha = str(data)
            else:
                raw = data.encode() if isinstance(data, str) else data
                sha = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=git.path, input=raw, env=env,
                                     capture_output=True, check=True).stdout.decode().strip()
            subprocess.run(["git", "update-index", "--add", "--cacheinfo", f"{mode},{sha},{path}"], cwd=git.path,
                           env=env, check=True)
        return subprocess.run(["git", "write-tree"], cwd=git.path, env=env, capture_output=True,
                              check=True).stdout.decode().strip()
