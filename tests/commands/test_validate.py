"""`fleet validate [PATH]`: the working tree's state and delta files against their schemas."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run

from fleet import canonical
from fleet.delta import Op, file_path


def edit(f: Fleet, rel: str, **changes: Any) -> Path:
    p = f.path / rel
    doc = json.loads(p.read_bytes())
    doc.update(changes)
    p.write_bytes(canonical.dumps(doc))
    return p


def problems(r: Any) -> list[str]:
    """The problem lines (stdout); the summary goes to stderr when there are problems."""
    return r.stdout.splitlines()


def test_clean_repository_passes(fleet: Fleet) -> None:
    r = run(fleet, "validate")
    assert r.stdout.strip().endswith("0 problem(s)")
    data = json.loads(run(fleet, "validate", "--json").stdout)
    assert data["problems"] == [] and data["checked"] > 10


def test_clean_repository_passes_after_ticks(fleet: Fleet) -> None:
    a = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general"))
    b = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w2")
    fleet.push(a, b, fleet.delta("nobody", Op("incr", "posts", "ada-1", ("score",), 1)))
    run(fleet, "merge")  # a held conflict, a quarantine record and ledger lines in the tree
    assert (fleet.path / "state/conflicts").is_dir()
    run(fleet, "validate")


def test_hand_edited_invalid_document(fleet: Fleet) -> None:
    edit(fleet, "state/posts/ada-1.json", title="", score="high")
    r = run(fleet, "validate", code=1)
    lines = problems(r)
    assert len(lines) == 1
    assert lines[0].startswith("state/posts/ada-1.json: at /")
    assert "(schemas/post.schema.json)" in lines[0]
    assert "1 problem(s)" in r.stderr
    data = json.loads(run(fleet, "validate", "--json", code=1).stdout)
    assert data["problems"][0]["path"] == "state/posts/ada-1.json"
    assert "schemas/post.schema.json" in data["problems"][0]["message"]


def test_unknown_field_is_reported_with_the_rule(fleet: Fleet) -> None:
    edit(fleet, "state/agents/ada.json", mood="grumpy")
    lines = problems(run(fleet, "validate", code=1))
    assert lines == [lines[0]] and lines[0].startswith("state/agents/ada.json:")
    assert "mood" in lines[0] and "schemas/agent.schema.json" in lines[0]


def test_file_name_and_id_mismatch(fleet: Fleet) -> None:
    src = (fleet.path / "state/posts/ada-1.json").read_bytes()
    (fleet.path / "state/posts/ada-9.json").write_bytes(src)
    lines = problems(run(fleet, "validate", code=1))
    assert lines == ["state/posts/ada-9.json: its 'id' must be 'ada-9', the file's name"]


def test_document_in_the_wrong_folder(fleet: Fleet) -> None:
    src = (fleet.path / "state/posts/ada-1.json").read_bytes()
    (fleet.path / "state/posts/ab").mkdir()
    (fleet.path / "state/posts/ab/ada-1.json").write_bytes(src)
    (fleet.path / "state/widgets").mkdir()
    (fleet.path / "state/widgets/w.json").write_bytes(b'{"id": "w"}\n')
    lines = problems(run(fleet, "validate", code=1))
    assert "state/posts/ab/ada-1.json: document 'ada-1' belongs at state/posts/ada-1.json (collections.posts.shard)" in lines
    assert any(line.startswith("state/widgets/w.json: folder state/widgets/ is not a collection") for line in lines)
    assert len(lines) == 2


def test_sharded_collection_wants_shard_folders(fleet: Fleet) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_bytes())
    cfg["collections"]["posts"]["shard"] = 2
    (fleet.path / "state/config.json").write_bytes(canonical.dumps(cfg))
    lines = problems(run(fleet, "validate", code=1))
    assert len(lines) == 2  # ada-1 and cleo-1 are now in the wrong place
    assert all("(collections.posts.shard)" in line and line.startswith("state/posts/") for line in lines)
    from fleet.config import parse
    coll = parse((fleet.path / "state/config.json").read_bytes()).collections["posts"]
    for name in ("ada-1", "cleo-1"):
        old = fleet.path / f"state/posts/{name}.json"
        new = fleet.path / coll.doc_path(name)
        new.parent.mkdir(parents=True, exist_ok=True)
        old.rename(new)
    run(fleet, "validate")


def test_bom_and_conflict_markers(fleet: Fleet) -> None:
    p = fleet.path / "state/posts/ada-1.json"
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    q = fleet.path / "state/agents/ada.json"
    q.write_bytes(b"<<<<<<< HEAD\n" + q.read_bytes() + b"=======\n{}\n>>>>>>> theirs\n")
    lines = problems(run(fleet, "validate", code=1))
    assert lines == [
        "state/agents/ada.json: contains git conflict markers (<<<<<<< / ======= / >>>>>>>)",
        "state/posts/ada-1.json: starts with a byte-order mark (BOM); save it as UTF-8 without BOM",
    ]


def test_malformed_world_schema_is_reported(fleet: Fleet) -> None:
    (fleet.path / "schemas/post.schema.json").write_bytes(b'{"type": "object",\n')
    lines = problems(run(fleet, "validate", code=1))
    assert "schemas/post.schema.json: malformed JSON: Expecting property name enclosed in double quotes: line 2 column 1 (char 19)" in lines
    # and each post says why it was not checked
    assert "state/posts/ada-1.json: cannot be checked: schemas/post.schema.json: malformed JSON: " \
        "Expecting property name enclosed in double quotes: line 2 column 1 (char 19)" in lines
    assert len(lines) == 3


def test_invalid_world_schema_is_reported(fleet: Fleet) -> None:
    (fleet.path / "schemas/post.schema.json").write_bytes(b'{"type": "object", "required": 7}\n')
    r = run(fleet, "validate", code=1)
    lines = problems(r)
    assert any(line.startswith("schemas/post.schema.json: not a valid JSON Schema") for line in lines), lines
    assert all("schemas/post.schema.json" in line for line in lines)


def test_broken_config_is_one_line(fleet: Fleet) -> None:
    cfg = json.loads((fleet.path / "state/config.json").read_bytes())
    cfg["limits"]["max_delta_bytes"] = "big"
    (fleet.path / "state/config.json").write_bytes(canonical.dumps(cfg))
    r = run(fleet, "validate", code=1)
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        'fleet: state/config.json: at /limits/max_delta_bytes: "big" is not of type "integer" (schemas/config.schema.json)'
    ]


def test_a_delta_file_as_path(fleet: Fleet, tmp_path: Path) -> None:
    good = fleet.delta("ada", Op("add", "posts", "ada-1", ("tags",), "x"))
    gp = tmp_path / "inbox" / file_path(good)
    gp.parent.mkdir(parents=True)
    gp.write_bytes(canonical.dumps(good))
    r = run(fleet, "validate", str(gp))
    assert "1 file(s) checked, 0 problem(s)" in r.output

    bad = dict(good, ops=[{"op": "explode", "collection": "posts", "id": "ada-1"}])
    bp = gp.with_name("bad.json")
    bp.write_bytes(canonical.dumps(bad))
    lines = problems(run(fleet, "validate", str(bp), code=1))
    assert len(lines) == 1 and lines[0].startswith(f"{bp}: at /ops/0/op:")
    assert "explode" in lines[0] and "(schemas/delta.schema.json)" in lines[0]

    # a folder of deltas (an inbox): every JSON file in it, nothing else
    (gp.parent / "README.txt").write_text("not a delta\n")
    r = run(fleet, "validate", str(tmp_path / "inbox"), code=1)
    assert "2 file(s) checked, 1 problem(s)" in r.stderr


def test_delta_in_another_workers_folder(fleet: Fleet, tmp_path: Path) -> None:
    d = fleet.delta("ada", Op("add", "posts", "ada-1", ("tags",), "x"), worker="w1")
    p = tmp_path / "deltas/w2/s1/x.json"
    p.parent.mkdir(parents=True)
    p.write_bytes(canonical.dumps(d))
    lines = problems(run(fleet, "validate", str(p), code=1))
    assert lines == [f"{p}: worker 'w1' wrote into deltas/w2/, another worker's directory"]


def test_delta_files_in_the_working_tree(fleet: Fleet) -> None:
    d = fleet.delta("ada", Op("add", "posts", "ada-1", ("tags",), "x"))
    p = fleet.path / file_path(d)
    p.parent.mkdir(parents=True)
    p.write_bytes(canonical.dumps(d)[:40])
    lines = problems(run(fleet, "validate", code=1))
    assert len(lines) == 1 and lines[0].startswith(f"{file_path(d)}: malformed JSON")


def test_a_state_document_as_path(fleet: Fleet) -> None:
    edit(fleet, "state/posts/cleo-1.json", channel="../etc")
    p = fleet.path / "state/posts/cleo-1.json"
    r = run(fleet, "validate", str(p), code=1)
    assert problems(r)[0].startswith("state/posts/cleo-1.json: at /channel")
    run(fleet, "validate", str(fleet.path / "state/posts/ada-1.json"))


def test_whole_repository_as_path_skips_git_and_other_files(fleet: Fleet) -> None:
    fleet.push(fleet.delta("ada", Op("add", "posts", "ada-1", ("tags",), "x")))
    run(fleet, "merge")
    r = run(fleet, "validate", str(fleet.path))
    assert "0 problem(s)" in r.output


def test_relative_path_is_taken_from_the_fleet_with_C(fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    edit(fleet, "state/posts/ada-1.json", title="")
    r = run(fleet, "validate", "state/posts/ada-1.json", code=1)
    assert problems(r)[0].startswith("state/posts/ada-1.json: at /title")
    monkeypatch.chdir(fleet.path / "state")
    r = run(fleet, "validate", "posts/ada-1.json", code=1)
    assert problems(r)[0].startswith("state/posts/ada-1.json: at /title")


def test_missing_path(fleet: Fleet) -> None:
    r = run(fleet, "validate", str(fleet.path / "state/posts/nope.json"), code=1)
    assert "no such file or directory" in r.stderr and len(r.stderr.splitlines()) == 1


def test_not_a_fleet(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fleet.main import cli

    os.makedirs(tmp_path / "plain")
    r = CliRunner().invoke(cli, ["validate", "-C", str(tmp_path / "plain")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert len(r.stderr.splitlines()) == 1 and "not inside a git repository" in r.stderr


def test_stray_files_and_resolutions(fleet: Fleet) -> None:
    (fleet.path / "state" / "notes.txt").write_text("todo\n")
    res = fleet.path / "state" / "resolutions" / "c-0123456789abcdef.json"
    res.parent.mkdir()
    res.write_text('{"conflict": "c-0123456789abcdef", "choose": "base"}\n')
    r = run(fleet, "validate", code=1)
    assert "state/notes.txt: state/ holds only JSON documents" in r.output
    assert "resolutions" not in r.output  # a well-formed decision is fine
    res.write_text('{"conflict": "c-0123456789abcdef"}\n')
    r = run(fleet, "validate", code=1)
    assert "state/resolutions/c-0123456789abcdef.json: " in r.output and "schemas/resolution.schema.json" in r.output


@pytest.mark.parametrize("where", ["state/posts/link.json", "state/linked", "state/.hidden/x.json"])
def test_links_and_hidden_folders_in_state_are_reported_never_followed(fleet: Fleet, tmp_path: Path,
                                                                       where: str) -> None:
    """A link in state/ (to a file or a folder, inside the fleet or out of it) is named,
    and what it points to is never read; a hidden folder in state/ is not skipped."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"id": "secret"}\n')
    p = fleet.path / where
    p.parent.mkdir(parents=True, exist_ok=True)
    if where.endswith("link.json"):
        os.symlink(outside / "secret.json", p)
    elif where.endswith("linked"):
        os.symlink(outside, p)
    else:
        p.write_text('{"id": "x"}\n')
    r = run(fleet, "validate", code=1)
    [line] = problems(r)
    assert line.startswith(f"{where}: ") and "secret" not in line
    if ".hidden" in where:
        assert "is not a collection" in line
    else:
        assert "a symbolic link" in line


def test_a_fleet_as_path_is_validated_as_that_fleet(fleet: Fleet, tmp_path: Path) -> None:
    """PATH holding state/config.json is a fleet: checked as `fleet -C PATH validate`
    would, its schemas as schemas, not every JSON file as a delta."""
    from fleet.commands.init import init

    other = tmp_path / "other"
    init(other)
    by_c = json.loads(Fleet(other).fleet("validate", "--json").stdout)
    by_path = json.loads(run(fleet, "validate", "--json", str(other)).stdout)
    assert by_path == by_c and by_path["problems"] == [] and by_path["checked"] > 10
    p = other / "state/posts/ada-1.json"
    doc = json.loads(p.read_bytes())
    p.write_bytes(canonical.dumps({**doc, "title": ""}))
    r = run(fleet, "validate", str(other), code=1)
    assert problems(r) == [line for line in Fleet(other).fleet("validate").stdout.splitlines()]
    assert problems(r)[0].startswith("state/posts/ada-1.json: at /title") and "schemas/" not in r.stdout.split(":")[0]


@pytest.mark.parametrize("files", [[], ["a.txt"], ["sub/readme.md", "sub/deeper/x.yaml"], [".git/x.json"]])
def test_a_path_with_nothing_to_check_is_an_error_naming_it(fleet: Fleet, tmp_path: Path, files: list[str]) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x\n")
    r = run(fleet, "validate", str(folder), code=1)
    lines = r.output.strip().splitlines()
    says = "a git repository that is not a fleet" if files[:1] == [".git/x.json"] else "nothing to check"
    assert len(lines) == 1 and f"{folder}: {says}" in lines[0], r.output
    # a folder of the fleet with nothing to check likewise
    (fleet.path / "empty").mkdir()
    r = run(fleet, "validate", str(fleet.path / "empty"), code=1)
    assert "nothing to check" in r.output


SPECIAL = ["fifo", "socket", "loop", "dangling", "to_device", "to_folder"]


def _special(where: Path, kind: str) -> None:
    """Make ``where`` an entry that is no regular file."""
    import socket

    if kind == "fifo":
        os.mkfifo(where)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(where))
        s.close()
    elif kind == "loop":
        os.symlink(where.name, where)
    elif kind == "dangling":
        os.symlink("/nonexistent/x.json", where)
    elif kind == "to_device":
        os.symlink("/dev/zero", where)
    else:
        os.symlink("/", where)


@pytest.mark.parametrize("kind", SPECIAL)
def test_what_is_no_regular_file_in_state_is_named_never_read_or_waited_on(fleet: Fleet, kind: str) -> None:
    """A FIFO would block a reader for ever and a device never ends: validate names
    each entry that is no regular file, in state/ or as PATH, and reads none."""
    rel = "state/posts/odd-1.json"
    if kind == "socket" and len(str(fleet.path / rel)) > 100:  # AF_UNIX paths are short
        pytest.skip("temporary folder too deep for a socket path")
    _special(fleet.path / rel, kind)
    r = run(fleet, "validate", code=1)
    [line] = [ln for ln in r.stdout.splitlines() if ln.startswith(rel)]
    assert "regular file" in line or "symbolic link" in line
    if kind in ("fifo", "socket"):
        r = run(fleet, "validate", rel, code=1)
        assert r.stdout.startswith(f"{rel}: is a ") and "fleet reads only regular files" in r.stdout


@pytest.mark.parametrize("path, says", [
    ("/dev/zero", "is a device, not a file"),
    ("/", "holds your home folder"),
    ("~", "holds your home folder"),
    ("..", "holds this fleet"),
    ("loop", "a loop of symbolic links"),
    ("repo", "a git repository that is not a fleet"),
])
def test_a_path_that_is_no_fleet_and_no_inbox_is_one_line(fleet: Fleet, tmp_path: Path, path: str, says: str) -> None:
    """PATH outside the fleet is checked as an inbox of delta files; the whole disk,
    a home folder, a repository or a device are none, and are said so at once."""
    if path == "loop":
        os.symlink("loop", tmp_path / "loop")
        path = str(tmp_path / "loop")
    elif path == "repo":
        (tmp_path / "repo" / ".git").mkdir(parents=True)
        (tmp_path / "repo" / "x.json").write_text("{}")
        path = str(tmp_path / "repo")
    elif path == "..":
        path = str(fleet.path.parent)
    elif path == "~":
        path = str(Path.home())
    r = run(fleet, "validate", path, code=1)
    assert says in r.output and len(r.output.strip().splitlines()) <= 2 and "internal error" not in r.output


@pytest.mark.parametrize("names, warned", [
    (["CON"], ["CON"]), (["con"], ["con"]), (["Aux"], ["Aux"]), (["lpt9"], ["lpt9"]), (["COM1"], ["COM1"]),
    (["Ada-7", "ada-7"], ["ada-7"]), (["x-1", "X-1", "x-2"], ["x-1"]), (["console"], []), (["COM0"], []),
])
def test_names_a_clone_on_windows_or_macos_cannot_hold_are_warned_of(fleet: Fleet, names: list[str],
                                                                     warned: list[str]) -> None:
    """A device name (CON) or two names that differ only by case pass the schemas and the
    merge, but break a clone on Windows or macOS: validate says so, as a warning."""
    doc = json.loads(fleet.read("state/posts/ada-1.json"))
    for n in names:
        (fleet.path / f"state/posts/{n}.json").write_bytes(canonical.dumps({**doc, "id": n}))
    r = run(fleet, "validate", "--json")
    got = json.loads(r.stdout)
    assert got["problems"] == []
    assert sorted(w["path"] for w in got["warnings"]) == sorted(f"state/posts/{n}.json" for n in warned)
