"""The one compare-and-swap push, against real bare repositories.

Every writer of a shared ref (the merge, the workers, the task queue, the
conflict pull requests, `fleet run`) publishes through ``Git.push``, which
answers won, lost or refused; nobody else builds a push or reads git's text.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

import fleet
from fleet.git import Git, RefUpdate

MAIN = "refs/heads/main"


def bare(tmp_path: Path, name: str = "origin.git") -> Git:
    """An empty bare repository."""
    path = tmp_path / name
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(path)], check=True)
    return Git(path)


def clone_of(origin: Git, tmp_path: Path, name: str) -> Git:
    """A repository that can write commits, with ``origin`` as its remote."""
    path = tmp_path / name
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(path)], check=True)
    g = Git(path)
    g.run("remote", "add", "origin", str(origin.path))
    return g


def commit(g: Git, parent: str | None, text: str) -> str:
    return g.write_commit(parent, f"{text}\n", {"f.txt": text.encode()}, [], when=0)


def hook(origin: Git, name: str, script: str) -> None:
    path = origin.path / "hooks" / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_won_moves_the_ref_when_it_is_where_we_expected(tmp_path: Path) -> None:
    origin = bare(tmp_path)
    g = clone_of(origin, tmp_path, "a")
    first = commit(g, None, "one")
    assert g.push("origin", [RefUpdate(MAIN, first, None)]).outcome == "won"
    second = commit(g, first, "two")
    result = g.push("origin", [RefUpdate(MAIN, second, first)])
    assert (result.outcome, result.reason) == ("won", "")
    assert origin.rev_parse(MAIN) == second


def test_lost_when_another_push_moved_the_ref_first(tmp_path: Path) -> None:
    origin = bare(tmp_path)
    a, b = clone_of(origin, tmp_path, "a"), clone_of(origin, tmp_path, "b")
    base = commit(a, None, "base")
    assert a.push("origin", [RefUpdate(MAIN, base, None)]).outcome == "won"
    b.run("fetch", "--quiet", "origin", "main")
    theirs = commit(b, base, "theirs")
    assert b.push("origin", [RefUpdate(MAIN, theirs, base)]).outcome == "won"
    ours = commit(a, base, "ours")  # computed from base, which is no longer the tip
    result = a.push("origin", [RefUpdate(MAIN, ours, base)])
    assert result.outcome == "lost" and "stale info" in result.reason
    assert origin.rev_parse(MAIN) == theirs
    # "must not exist yet" loses to whoever created the branch first
    assert a.push("origin", [RefUpdate(MAIN, ours, None)]).outcome == "lost"


def test_lost_when_another_writer_published_the_very_same_commit_first(tmp_path: Path) -> None:
    """A merge is deterministic: two merges of the same deltas in the same second make the
    same commit. git then moves nothing for the second and checks no lease, exit 0; that
    writer did not win (it must not, say, dispatch the next run as well)."""
    origin = bare(tmp_path)
    a, b = clone_of(origin, tmp_path, "a"), clone_of(origin, tmp_path, "b")
    base = commit(a, None, "base")
    assert a.push("origin", [RefUpdate(MAIN, base, None)]).outcome == "won"
    b.run("fetch", "--quiet", "origin", "main")
    same_a, same_b = commit(a, base, "tick 1"), commit(b, base, "tick 1")
    assert same_a == same_b
    assert a.push("origin", [RefUpdate(MAIN, same_a, base)]).outcome == "won"
    result = b.push("origin", [RefUpdate(MAIN, same_b, base)])
    assert result.outcome == "lost" and "another writer published it" in result.reason


def test_lost_when_the_ref_moves_while_the_push_runs(tmp_path: Path) -> None:
    """The remote's own check: the ref moves after git advertised it and before
    the update lands, so the remote (not the client) rejects the update and
    says so in words a refusal uses too; the verb asks whether the ref moved."""
    origin = bare(tmp_path)
    a = clone_of(origin, tmp_path, "a")
    base = commit(a, None, "base")
    theirs = commit(a, base, "theirs")
    assert a.push("origin", [RefUpdate(MAIN, base, None), RefUpdate("refs/heads/theirs", theirs, None)],
                  atomic=True).outcome == "won"
    # another writer lands between the remote's advertisement and its update
    hook(origin, "pre-receive", f"env -u GIT_QUARANTINE_PATH git update-ref {MAIN} {theirs}\n")
    result = a.push("origin", [RefUpdate(MAIN, commit(a, base, "ours"), base)])
    assert result.outcome == "lost" and "[remote rejected] (failed to update ref)" in result.reason
    assert origin.rev_parse(MAIN) == theirs


def test_refused_by_a_hook_with_gits_reason(tmp_path: Path) -> None:
    origin = bare(tmp_path)
    g = clone_of(origin, tmp_path, "a")
    hook(origin, "pre-receive", "echo 'main is protected' >&2\nexit 1\n")
    result = g.push("origin", [RefUpdate(MAIN, commit(g, None, "one"), None)])
    assert result.outcome == "refused"
    assert result.reason == ("refs/heads/main [remote rejected] (pre-receive hook declined) "
                             "(the remote said: main is protected)")
    assert origin.rev_parse(MAIN) is None


def test_a_name_clash_is_refused_not_lost(tmp_path: Path) -> None:
    """The remote says "failed to update ref" for a clash as for a race; the ref
    did not move, so retrying cannot help."""
    origin = bare(tmp_path)
    g = clone_of(origin, tmp_path, "a")
    one = commit(g, None, "one")
    assert g.push("origin", [RefUpdate("refs/heads/fleet", one, None)]).outcome == "won"
    result = g.push("origin", [RefUpdate("refs/heads/fleet/tasks", one, None)])
    assert result.outcome == "refused"
    assert "'refs/heads/fleet' exists; cannot create 'refs/heads/fleet/tasks'" in result.reason


def test_atomic_moves_every_ref_or_none(tmp_path: Path) -> None:
    origin = bare(tmp_path)
    g = clone_of(origin, tmp_path, "a")
    one = commit(g, None, "one")
    assert g.push("origin", [RefUpdate(MAIN, one, None), RefUpdate("refs/heads/w1", one, None)],
                  atomic=True).outcome == "won"
    two = commit(g, one, "two")
    # main may move, but w1 is not where we think: neither moves
    result = g.push("origin", [RefUpdate(MAIN, two, one), RefUpdate("refs/heads/w1", None, two)], atomic=True)
    assert result.outcome == "lost"
    assert origin.ref_tips(MAIN, "refs/heads/w1") == {MAIN: one, "refs/heads/w1": one}
    result = g.push("origin", [RefUpdate(MAIN, two, one), RefUpdate("refs/heads/w1", None, one)], atomic=True)
    assert result.outcome == "won"
    assert origin.ref_tips(MAIN, "refs/heads/w1") == {MAIN: two}


def test_while_running_is_called_once_the_push_has_started(tmp_path: Path) -> None:
    """A crash test kills the process there: the push must already be under way."""
    origin = bare(tmp_path)
    g = clone_of(origin, tmp_path, "a")
    seen: list[bool] = []
    hook(origin, "pre-receive", f"touch {tmp_path / 'started'}\n")
    one = commit(g, None, "one")

    def check() -> None:
        seen.append(True)

    assert g.push("origin", [RefUpdate(MAIN, one, None)], while_running=check).outcome == "won"
    assert seen == [True] and (tmp_path / "started").exists()


def _push_arguments(source: str) -> list[int]:
    """Lines where "push" is passed to a call or listed among arguments (a
    dict key or an index such as plan's ``p["push"]`` is not a push)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            values = [*node.args, *(k.value for k in node.keywords)]
        elif isinstance(node, (ast.List, ast.Tuple)):
            values = list(node.elts)
        else:
            continue
        values = [v.value if isinstance(v, ast.Starred) else v for v in values]
        lines += [v.lineno for v in values if isinstance(v, ast.Constant) and v.value == "push"]
    return lines


def test_nobody_but_git_py_builds_a_push() -> None:
    package = Path(fleet.__file__).parent
    offenders = [f"{path.relative_to(package)}:{n}" for path in sorted(package.rglob("*.py"))
                 if path != package / "git.py" for n in _push_arguments(path.read_text())]
    assert offenders == []
    assert _push_arguments((package / "git.py").read_text())  # the check sees the one push there is


def test_git_keeps_its_heap_until_it_ends_unless_the_user_says_otherwise(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every git fleet runs gets glibc's trim threshold and top pad raised (fast-import
    spent half its time giving memory back and taking it again); a value set by the
    user reaches git unchanged."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)

    def seen() -> dict[str, str]:
        out = Git(tmp_path).run("-c", "alias.showenv=!env", "showenv").decode()
        return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("MALLOC_"))

    assert seen() == {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_TOP_PAD_": str(64 << 20)}
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert seen()["MALLOC_TRIM_THRESHOLD_"] == "131072"
