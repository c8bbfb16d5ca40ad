"""A `fleet work` that fails leaves the repository as it found it: what it made
under .git/fleet in that run (its worker cache, its knowledge cache, the
folders above them, an --outbox folder) is gone again, and what was there
before it started (a cache from an earlier run) is kept as it was.

Real repositories and a real `fleet` process throughout: never a mocked git."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fleet_cli

from fleet.commands.init import init
from fleet.git import Git
from fleet.workspace import Workspace

G = ["git", "-c", "user.name=t", "-c", "user.email=t@x", "-c", "commit.gpgsign=false"]


def paths(repo: Path) -> set[str]:
    """Every path under the repository's .git/fleet (nothing when it is not there)."""
    root = repo / ".git" / "fleet"
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def bare_of(tmp_path: Path, repo: Path) -> Path:
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)
    return bare


def commit_to(bare: Path, tmp_path: Path, change: Callable[[Path], None]) -> None:
    """Commit ``change`` (done in a clone of ``bare``) to its main, as a person would."""
    clone = tmp_path / "person"
    subprocess.run(["git", "clone", "--quiet", str(bare), str(clone)], check=True)
    change(clone)
    subprocess.run([*G, "-C", str(clone), "commit", "--quiet", "-a", "-m", "a change"], check=True)
    subprocess.run(["git", "-C", str(clone), "push", "--quiet", "origin", "main"], check=True)


def fleet_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "x"
    init(repo)
    return repo


# -- each case: (the repository, the arguments after `fleet work`, what the error says) --
Case = tuple[Path, list[str], str]
W1 = ["--worker", "1", "--workers", "1"]


def origin_has_no_main(tmp_path: Path) -> Case:
    repo = fleet_repo(tmp_path)
    empty = tmp_path / "empty.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(empty)], check=True)
    return repo, [*W1, "--remote", str(empty)], "has no main branch"


def origin_path_missing(tmp_path: Path) -> Case:
    return fleet_repo(tmp_path), [*W1, "--remote", str(tmp_path / "gone.git")], "does not appear to be a git repository"


def configured_origin_missing(tmp_path: Path) -> Case:
    repo = fleet_repo(tmp_path)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", str(tmp_path / "gone.git")], check=True)
    return repo, W1, "does not appear to be a git repository"


def not_a_fleet(tmp_path: Path) -> Case:
    repo = tmp_path / "plain"
    repo.mkdir()
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(repo)], check=True)
    subprocess.run([*G, "-C", str(repo), "commit", "--quiet", "--allow-empty", "-m", "x"], check=True)
    return repo, W1, "is this a fleet repository?"


def no_commit_yet(tmp_path: Path) -> Case:
    repo = tmp_path / "unborn"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(repo)], check=True)
    return repo, W1, "no main branch"


def config_missing(tmp_path: Path) -> Case:
    repo = fleet_repo(tmp_path)
    bare = bare_of(tmp_path, repo)
    commit_to(bare, tmp_path, lambda c: subprocess.run(["git", "-C", str(c), "rm", "--quiet", "state/config.json"],
                                                       check=True))
    return repo, [*W1, "--remote", str(bare)], "state/config.json"


def config_invalid(tmp_path: Path) -> Case:
    repo = fleet_repo(tmp_path)
    bare = bare_of(tmp_path, repo)
    commit_to(bare, tmp_path, lambda c: (c / "state" / "config.json").write_text("{ not json\n"))
    return repo, [*W1, "--remote", str(bare)], "config.json"


def not_the_next_tick(tmp_path: Path) -> Case:
    repo = fleet_repo(tmp_path)
    return repo, [*W1, "--remote", str(bare_of(tmp_path, repo)), "--tick", "7"], "works only the next tick"


def unknown_agent(tmp_path: Path) -> Case:
    repo = fleet_repo(tmp_path)
    return repo, [*W1, "--remote", str(bare_of(tmp_path, repo)), "--agents", "nobody"], "--agents"


def no_agents_for_this_worker(tmp_path: Path) -> Case:
    repo = fleet_repo(tmp_path)
    return repo, ["--worker", "2", "--workers", "8", "--remote", str(bare_of(tmp_path, repo))], "has no agents"


def provider_unavailable(tmp_path: Path) -> Case:
    repo = fleet_repo(tmp_path)
    return repo, [*W1, "--remote", str(bare_of(tmp_path, repo)), "--provider", "anthropic"], "--provider"


def knowledge_read_then_provider_unavailable(tmp_path: Path) -> Case:
    """Fails after the knowledge source was fetched into .git/fleet/knowledge/w1.git."""
    kb = tmp_path / "kb"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(kb)], check=True)
    (kb / "notes").mkdir()
    (kb / "notes" / "a.md").write_text("# a note\n")
    subprocess.run(["git", "-C", str(kb), "add", "."], check=True)
    subprocess.run([*G, "-C", str(kb), "commit", "--quiet", "-m", "kb"], check=True)
    subprocess.run(["git", "-C", str(kb), "config", "uploadpack.allowFilter", "true"], check=True)
    repo = fleet_repo(tmp_path)
    bare = bare_of(tmp_path, repo)

    def with_knowledge(clone: Path) -> None:
        cfg = clone / "state" / "config.json"
        raw = json.loads(cfg.read_text())
        raw["remotes"] = {**raw.get("remotes", {}), "kb": str(kb)}
        raw["knowledge"] = {"sources": [{"remote": "kb", "path": "notes"}]}
        cfg.write_text(json.dumps(raw, indent=2) + "\n")

    commit_to(bare, tmp_path, with_knowledge)
    return repo, [*W1, "--remote", str(bare), "--provider", "anthropic"], "--provider"


CASES = [origin_has_no_main, origin_path_missing, configured_origin_missing, not_a_fleet, no_commit_yet,
         config_missing, config_invalid, not_the_next_tick, unknown_agent, no_agents_for_this_worker,
         provider_unavailable, knowledge_read_then_provider_unavailable]


def assert_one_line_failure(p: subprocess.CompletedProcess, says: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0, p.stderr
    assert len(lines) == 1 and lines[0].startswith("fleet: ") and says in lines[0], p.stderr
    assert "internal error" not in p.stderr and "Traceback" not in p.stdout + p.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_a_failed_work_leaves_nothing_under_git_fleet(tmp_path: Path, case: Callable[[Path], Case]) -> None:
    repo, args, says = case(tmp_path)
    before = paths(repo)
    p = fleet_cli(repo, "work", *args)
    assert_one_line_failure(p, says)
    assert paths(repo) == before
    assert not (repo / ".git" / "fleet").exists()  # not even the folder: it was not there before


@pytest.mark.parametrize("case", [origin_has_no_main, not_the_next_tick, knowledge_read_then_provider_unavailable],
                         ids=["origin_has_no_main", "not_the_next_tick", "knowledge_read_then_provider_unavailable"])
def test_a_failed_work_keeps_the_fleet_folder_it_found(tmp_path: Path, case: Callable[[Path], Case]) -> None:
    """.git/fleet there already (another command's, with a file of its own): only this run's own paths go."""
    repo, args, says = case(tmp_path)
    mine = repo / ".git" / "fleet" / "cache"
    mine.mkdir(parents=True)
    (mine / "other.json").write_text("{}\n")
    before = paths(repo)
    assert_one_line_failure(fleet_cli(repo, "work", *args), says)
    assert paths(repo) == before


def test_a_failed_work_removes_the_outbox_it_made(tmp_path: Path) -> None:
    repo, args, says = origin_path_missing(tmp_path)
    outbox = tmp_path / "out" / "box"
    assert_one_line_failure(fleet_cli(repo, "work", *args, "--outbox", str(outbox)), says)
    assert not (tmp_path / "out").exists() and paths(repo) == set()
    # an outbox that was there is kept, with what is in it
    outbox.mkdir(parents=True)
    assert_one_line_failure(fleet_cli(repo, "work", *args, "--outbox", str(outbox)), says)
    assert outbox.is_dir() and paths(repo) == set()


@pytest.mark.parametrize("case", [origin_has_no_main, not_the_next_tick, provider_unavailable])
def test_a_worker_cache_from_an_earlier_run_survives_a_failure(tmp_path: Path,
                                                               case: Callable[[Path], Case]) -> None:
    repo, args, says = case(tmp_path)
    bare = tmp_path / "origin.git"
    if not bare.exists():
        bare = bare_of(tmp_path, repo)
    done = fleet_cli(repo, "work", *W1, "--remote", str(bare), "--outbox", str(tmp_path / "outbox"))
    assert done.returncode == 0, done.stderr
    cache = repo / ".git" / "fleet" / "workers" / "w1.git"
    main = Git(cache).rev_parse("refs/fleet/main")
    assert main is not None
    before = paths(repo)
    assert_one_line_failure(fleet_cli(repo, "work", *args), says)
    assert paths(repo) == before
    assert Git(cache).rev_parse("refs/fleet/main") == main
    assert subprocess.run(["git", "rev-list", "--objects", "--quiet", "refs/fleet/main"], cwd=cache).returncode == 0
    # and it still serves the next run
    again = fleet_cli(repo, "work", *W1, "--remote", str(bare), "--outbox", str(tmp_path / "outbox2"))
    assert again.returncode == 0, again.stderr


def test_a_run_refused_by_the_worker_at_work_leaves_its_cache_alone(tmp_path: Path) -> None:
    """The same worker started twice at once in a fresh clone: the second, refused,
    removes nothing of what the first made and holds."""
    repo = fleet_repo(tmp_path)
    bare = bare_of(tmp_path, repo)
    gitdir = repo / ".git"
    with Workspace(gitdir, "w1") as ws:
        before = paths(repo)
        p = fleet_cli(repo, "work", *W1, "--remote", str(bare))
        assert_one_line_failure(p, "worker w1 is already working in this clone")
        assert paths(repo) == before
        sha, _ = ws.fetch(bare.as_uri())  # the first goes on in its cache
        assert sha == Git(bare).rev_parse("refs/heads/main")
    assert (gitdir / "fleet" / "workers" / "w1.git" / "HEAD").is_file()


def test_a_successful_work_keeps_its_cache(tmp_path: Path) -> None:
    repo = fleet_repo(tmp_path)
    bare = bare_of(tmp_path, repo)
    p = fleet_cli(repo, "work", *W1, "--remote", str(bare))
    assert p.returncode == 0, p.stderr
    made = paths(repo)
    assert {"tmp", "workers", "workers/w1.git", "workers/w1.git/HEAD"} <= made
    assert not [p for p in made if p.startswith("workers/.") or p.endswith(".pid")]


def test_the_knowledge_cache_a_failed_run_removed_is_one_a_good_run_keeps(tmp_path: Path) -> None:
    """The knowledge case above fails after its cache was made: the same run that succeeds keeps it."""
    repo, args, _ = knowledge_read_then_provider_unavailable(tmp_path)
    p = fleet_cli(repo, "work", *[a if a != "anthropic" else "offline" for a in args])
    assert p.returncode == 0, p.stderr
    assert {"knowledge/w1.git/HEAD", "workers/w1.git/HEAD"} <= paths(repo)


def test_a_cache_left_half_removed_by_a_killed_run_is_swept(tmp_path: Path) -> None:
    """A failed run moves its cache aside, then removes it: killed (-9) in between, the next run
    of that worker removes what is left. A process still alive keeps its own."""
    repo = fleet_repo(tmp_path)
    workers = repo / ".git" / "fleet" / "workers"
    dead = workers / ".w1.git.4999999.gone"
    (dead / "objects").mkdir(parents=True)
    alive = workers / f".w1.git.{os.getpid()}.gone"
    alive.mkdir()
    p = fleet_cli(repo, "work", *W1, "--remote", str(bare_of(tmp_path, repo)))
    assert p.returncode == 0, p.stderr
    assert not dead.exists() and alive.is_dir()
