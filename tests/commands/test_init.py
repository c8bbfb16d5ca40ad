"""`fleet init DIR`: a new fleet repository, in real git, in a temporary folder."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleet.main import cli


def fleet(*args: str, code: int = 0):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    assert r.exit_code == code, r.output
    return r


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def test_init_makes_a_repository_with_a_genesis_commit_at_tick_0(tmp_path: Path) -> None:
    d = tmp_path / "new"
    r = fleet("init", str(d))
    assert "tick 0" in r.output and "genesis" in r.output
    commits = git(d, "rev-list", "main").split()
    assert len(commits) == 1
    assert git(d, "log", "-1", "--format=%s", "main").strip() == "fleet: genesis (tick 0)"
    assert git(d, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert git(d, "status", "--porcelain") == ""
    fleet_doc = json.loads(git(d, "show", "main:state/fleet.json"))
    assert fleet_doc["tick"] == 0
    files = git(d, "ls-tree", "-r", "--name-only", "main").split()
    for must in ("state/config.json", "state/fleet.json", "schemas/delta.schema.json", "README.md", ".gitignore"):
        assert must in files
    assert any(f.startswith("state/posts/") for f in files)
    assert not any(f.startswith(("state/ledger/", "state/quarantine/", "state/conflicts/")) for f in files)


def test_init_state_is_valid_and_replays(tmp_path: Path) -> None:
    d = tmp_path / "new"
    fleet("init", str(d))
    r = fleet("validate", "-C", str(d))
    assert "0 problem(s)" in r.output
    status = json.loads(fleet("status", "-C", str(d), "--json").output)
    assert status["tick"] == 0 and status["open_conflicts"] == [] and status["pending_branches"] == []
    assert json.loads(fleet("replay", "-C", str(d), "--check", "--json").output)["identical"] is True
    fleet("merge", "-C", str(d), code=3)  # nothing pending yet


def test_init_into_an_existing_empty_folder(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    fleet("init", str(d))
    assert (d / ".git").is_dir() and (d / "state" / "fleet.json").is_file()


def test_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    d = tmp_path / "busy"
    d.mkdir()
    (d / "notes.txt").write_text("mine\n")
    r = fleet("init", str(d), code=1)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert str(d) in lines[0] and "not empty" in lines[0]
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]  # nothing was written
    assert (d / "notes.txt").read_text() == "mine\n"


def test_init_refuses_an_existing_fleet(tmp_path: Path) -> None:
    d = tmp_path / "f"
    fleet("init", str(d))
    head = git(d, "rev-parse", "main")
    r = fleet("init", str(d), code=1)
    assert len(r.stderr.splitlines()) == 1
    assert git(d, "rev-parse", "main") == head


def test_init_ignores_the_users_signing_and_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "pre-commit").write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    (hooks / "pre-commit").chmod(0o755)
    cfg = tmp_path / "gitconfig"
    cfg.write_text(f"[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = false\n[core]\n\thooksPath = {hooks}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    d = tmp_path / "new"
    fleet("init", str(d))
    assert len(git(d, "rev-list", "main").split()) == 1


@pytest.mark.parametrize("exists", [False, True])
def test_init_that_fails_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool) -> None:
    cfg = tmp_path / "gitconfig"
    cfg.write_text("[commit]\n\tcleanup = bogus\n")  # makes `git commit` fail
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    d = tmp_path / "new"
    if exists:
        d.mkdir()
    r = fleet("init", str(d), code=1)
    assert len(r.stderr.splitlines()) == 1 and str(d) in r.stderr and "Invalid cleanup mode" in r.stderr
    assert d.exists() == exists and (not exists or list(d.iterdir()) == [])
    monkeypatch.delenv("GIT_CONFIG_GLOBAL")
    fleet("init", str(d))  # the same command works once the cause is fixed


def test_a_new_fleet_carries_the_fleet_that_made_it(tmp_path: Path) -> None:
    """The workflows say `uses: ./.github/actions/fleet`: the new repository
    holds fleet's source and pyproject there, so the action installs that very
    version on a runner; nothing at the top can shadow the installed fleet."""
    from fleet import __version__
    from fleet.commands.init import init

    repo = tmp_path / "mine"
    init(repo)
    action = repo / ".github" / "actions" / "fleet"
    assert (action / "action.yml").is_file() and (action / "fleet" / "engine" / "__init__.py").is_file()
    assert f'version = "{__version__}"' in (action / "pyproject.toml").read_text()
    assert "force-include" not in (action / "pyproject.toml").read_text()  # the template is in the package
    assert (action / "fleet" / "_template" / "schemas" / "delta.schema.json").is_file()
    assert not (repo / "fleet").exists() and not (repo / "pyproject.toml").exists() and not (repo / "action.yml").exists()
    assert not list(repo.rglob("__pycache__"))
    for wf in ("tick.yml", "merge.yml", "watchdog.yml"):
        text = (repo / ".github" / "workflows" / wf).read_text()
        assert "uses: ./.github/actions/fleet" in text and "uses: ./ " not in text, wf
    assert not (repo / ".github" / "workflows" / "ci.yml").exists()


@pytest.mark.slow
def test_the_carried_fleet_builds_into_a_wheel_with_its_template(tmp_path: Path) -> None:
    """What the action's install step does with it (`pip install $ACTION_PATH`)."""
    import sys
    import zipfile

    from fleet.commands.init import init

    repo = tmp_path / "mine"
    init(repo)
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "dist"),
                        str(repo / ".github" / "actions" / "fleet")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("fleet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("fleet/engine/__init__.py", "fleet/_template/schemas/delta.schema.json", "fleet/_template/state/config.json",
                 "fleet/_template/.github/workflows/tick.yml", "fleet/_template/action.yml",
                 "fleet/examples/social/README.md", "fleet/examples/tickets/README.md",
                 "fleet/examples/tickets/state/config.json", "fleet/examples/tickets/schemas/ticket.schema.json"):
        assert must in names, must


def test_init_json(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fleet.main import cli

    r = CliRunner().invoke(cli, ["init", str(tmp_path / "j"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["tick"] == 0 and len(out["genesis"]) == 40 and out["path"] == str((tmp_path / "j").resolve())


# -- example worlds --------------------------------------------------------------

def test_init_examples_lists_each_example_with_a_description(tmp_path: Path) -> None:
    out = json.loads(fleet("init", "--examples", "--json").output)
    by_name = {e["name"]: e for e in out["examples"]}
    assert {"social", "tickets"} <= set(by_name)
    assert [e["name"] for e in out["examples"] if e["default"]] == ["social"]
    assert all(e["description"] and "\n" not in e["description"] for e in out["examples"])
    text = fleet("init", "--examples").output.splitlines()
    assert len(text) == len(out["examples"])
    assert any(line.startswith("tickets ") and by_name["tickets"]["description"] in line for line in text)
    assert any(line.startswith("social ") and line.endswith("(default)") for line in text)
    assert list(tmp_path.iterdir()) == []  # listing creates nothing


def test_init_with_an_unknown_example_is_a_usage_error_that_creates_nothing(tmp_path: Path) -> None:
    d = tmp_path / "new"
    r = fleet("init", str(d), "--example", "nosuch", code=2)
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert "unknown example 'nosuch'" in r.stderr and "social" in r.stderr and "tickets" in r.stderr
    assert not d.exists()
    r = fleet("init", str(d), "--example", "nosuch", "--json", code=2)
    assert json.loads(r.stdout)["exit"] == 2 and not d.exists()


def test_init_needs_a_directory_unless_it_lists_the_examples(tmp_path: Path) -> None:
    r = fleet("init", code=2)
    assert "DIRECTORY" in r.stderr and "--examples" in r.stderr and len(r.stderr.splitlines()) == 1
    fleet("init", str(tmp_path / "x"), "--examples", code=2)
    assert not (tmp_path / "x").exists()


def test_init_with_the_tickets_example_has_its_world_and_fleets_schemas_only(tmp_path: Path) -> None:
    d = tmp_path / "team"
    r = fleet("init", str(d), "--example", "tickets", "--json")
    assert json.loads(r.output)["example"] == "tickets"
    files = git(d, "ls-tree", "-r", "--name-only", "main").split()
    schemas = sorted(f.removeprefix("schemas/") for f in files if f.startswith("schemas/"))
    protocol = ["clock", "config", "conflict", "delta", "fleet", "heartbeat", "message", "prompt", "relay", "resolution",
                "task", "tools", "worker"]
    world = ["comment", "person", "review", "ticket"]
    assert schemas == sorted(f"{n}.schema.json" for n in protocol + world)
    assert "state/tools.json" in files and "state/prompt.json" in files
    assert any(f.startswith("state/tickets/") and f.count("/") == 3 for f in files)  # sharded
    assert not any(f.startswith(("state/posts/", "state/channels/", "state/agents/")) for f in files)
    config = json.loads(git(d, "show", "main:state/config.json"))
    assert config["collections"]["tickets"]["shard"] == 1
    assert "tickets" in git(d, "log", "-1", "--format=%b", "main")
    assert "0 problem(s)" in fleet("validate", "-C", str(d)).output
    assert json.loads(fleet("replay", "-C", str(d), "--check", "--json").output)["identical"] is True
    # the carried action and workflows are every fleet's
    assert (d / ".github" / "actions" / "fleet" / "fleet" / "examples" / "tickets" / "state" / "config.json").is_file()
    assert "uses: ./.github/actions/fleet" in (d / ".github" / "workflows" / "tick.yml").read_text()


def test_init_with_the_social_example_is_the_default(tmp_path: Path) -> None:
    fleet("init", str(tmp_path / "a"))
    fleet("init", str(tmp_path / "b"), "--example", "social")
    tree = lambda d: [line for line in git(d, "ls-tree", "-r", "main").splitlines() if not line.endswith("\tREADME.md")]
    assert tree(tmp_path / "a") == tree(tmp_path / "b")  # all but the README, which names its folder


def _fs_problem(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A target the file system refuses, and the reason it gives."""
    if kind == "too-long":
        return tmp_path / ("n" * 300), "File name too long"
    if kind == "proc":
        return Path("/proc/x") / "fleet", ""
    if kind == "dangling-link":
        link = tmp_path / "link"
        link.symlink_to(tmp_path / "gone")
        return link, "a symbolic link to"
    if kind == "under-a-file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "fleet", "Not a directory"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["too-long", "proc", "dangling-link", "under-a-file"])
def test_init_where_the_file_system_refuses_is_one_line_naming_the_path_and_reason(tmp_path: Path, kind: str) -> None:
    target, reason = _fs_problem(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = CliRunner().invoke(cli, ["init", str(target)])
    assert r.exit_code == 1, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output
    [line] = r.output.strip().splitlines()
    assert str(target)[:200] in line and reason in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made


def test_shell_word_reads_back_as_the_name_in_one_line() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fleet.commands.init import shell_word

    @settings(max_examples=60, deadline=None)
    @given(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=30)
           | st.binary(min_size=1, max_size=20).filter(lambda b: b"\x00" not in b)
           .map(lambda b: b.decode("utf-8", errors="surrogateescape")))
    def check(name: str) -> None:
        word = shell_word(name)
        assert "\n" not in word and "\r" not in word and word.isprintable()
        got = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True).stdout
        assert got == name.encode("utf-8", errors="surrogateescape")

    check()


@pytest.mark.parametrize("name", ["with space", "it's", "new\nline", "tab\there", "esc\x1b[31m", "$(touch x)"])
def test_init_says_next_with_the_name_quoted_for_a_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          name: str) -> None:
    monkeypatch.chdir(tmp_path)
    r = fleet("init", name)
    lines = r.output.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("next: cd ") and lines[1].endswith(" && fleet run"), r.output
    word = lines[1][len("next: cd "):-len(" && fleet run")]
    got = subprocess.run(["bash", "-c", f"cd {word} && pwd -P"], capture_output=True, check=True, cwd=tmp_path)
    assert got.stdout.decode().rstrip("\n") == str((tmp_path / name).resolve())
    assert not (tmp_path / "x").exists()
