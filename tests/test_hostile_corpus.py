"""A generated corpus of hostile input, into an inbox and a worker branch at once.

Hypothesis writes arbitrary bytes, names (newlines, ``..``, unicode, bidi
overrides, bytes that are not UTF-8, 255-byte names), nesting, numbers
(beyond 64 bits, NaN, 2.0 for an integer), duplicate keys and links (to a
valid delta outside the inbox, to the process's environment, to nowhere) and
checks the invariants of the merge:

- no internal error, whatever arrives;
- every entry ends applied or quarantined (by its printable name), and the
  inbox is empty afterwards;
- nothing outside the inbox is read: the delta behind a link never applies,
  and the key in the environment never reaches history;
- main stays valid (`fleet validate`) and replays byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_input import TOKEN, history, ledger_ids, raw_tree_branch, records

from fleet import canonical
from fleet.commands.init import init
from fleet.delta import Op
from fleet.ids import printable

# -- names -------------------------------------------------------------------------------

_PLAIN = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-."), min_size=1, max_size=12)
_ODD = st.sampled_from(["w9\n", "x\nFleet-Tick: 99\n", "..w", "-w", " w", "w\r", "w\u202e", "é", "日本",
                        "\x1b[31m", "a\\b", "'\"", "w" * 250, "\t"])


@st.composite
def names(draw: Any) -> str:
    """A file name: plain, odd, or a mix; at most 255 bytes, never '.' or '..'."""
    name = draw(st.one_of(_PLAIN, _ODD, st.tuples(_PLAIN, _ODD).map("".join),
                          st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                                  min_size=1, max_size=20)))
    name = name.encode()[:240].decode(errors="ignore") or "x"
    return "x" if name in (".", "..") else name


# -- contents ----------------------------------------------------------------------------


def _deep(n: int) -> str:
    return "[" * n + "]" * n


_VALUES = st.sampled_from([str(2**64), str(2**70 + 1), "-" + str(2**63 + 1), "NaN", "Infinity", "-Infinity",
                           "1e400", _deep(70), _deep(400), '"\\ud800"', '{"a": 1, "a": 2}', "1", '"ok"', "null"])


@st.composite
def delta_text(draw: Any, worker: str, n: int) -> bytes:
    """A delta as text, perhaps made hostile in one place."""
    tick = draw(st.sampled_from(["1", "1", "1", "1.0", "2", "0", "1e0"]))
    agent = draw(st.sampled_from(["ada", "basil", "cleo", "nobody", "ada\n"]))
    value = draw(_VALUES)
    op = draw(st.sampled_from([
        '{"op": "incr", "collection": "posts", "id": "ada-1", "path": ["score"], "by": 1}',
        f'{{"op": "set", "collection": "agents", "id": "{agent.strip()}", "path": ["bio"], "value": {value}}}',
        f'{{"op": "incr", "collection": "posts", "id": "ada-1", "path": ["score"], "by": {value}}}',
    ]))
    dup = draw(st.sampled_from(["", "", ', "agent": "basil"']))
    text = (f'{{"id": "t{tick}-{worker}-s1-c{n}", "tick": {tick}, "utc": "2026-01-01T00:00:00.{n:06d}Z", '
            f'"worker": "{worker}", "stream": "s1", "agent": {json.dumps(agent)}{dup}, "ops": [{op}], "meta": {{}}}}')
    return text.encode()


@st.composite
def contents(draw: Any, worker: str, n: int) -> bytes:
    return draw(st.one_of(delta_text(worker, n), delta_text(worker, n),
                          st.binary(max_size=200), st.just(b"\xef\xbb\xbf{}"), st.just(b"<<<<<<< ours\n")))


@st.composite
def entries(draw: Any) -> list[dict[str, Any]]:
    """What lands in the inbox or on the branch: (where, kind, folder, name, content)."""
    out = []
    for n in range(draw(st.integers(1, 8))):
        where = draw(st.sampled_from(["inbox", "branch"]))
        kinds = ["file", "file", "file", "deep"] + (["link-outside", "link-environ", "dangling", "fifo", "folder"]
                                                     if where == "inbox" else ["symlink", "submodule", "notutf8"])
        kind = draw(st.sampled_from(kinds))
        folder = draw(st.one_of(st.just("w9"), names()))
        worker = folder if folder == "w9" else "w9"
        out.append({"where": where, "kind": kind, "folder": folder, "name": draw(names()) + ".json",
                    "content": draw(contents(worker, n))})
    return out


# -- the fleet ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "fleet"
    init(path)
    return path


def _fresh(template: Path, tmp: Path) -> Fleet:
    shutil.copytree(template, tmp / "fleet", symlinks=True)
    return Fleet(tmp / "fleet")


def _place(f: Fleet, tmp: Path, items: list[dict[str, Any]]) -> tuple[Path, dict[str, str]]:
    """Put the entries in place; returns the inbox and the valid delta behind the outside link."""
    inbox = tmp / "inbox"
    inbox.mkdir()
    outside = tmp / "outside"
    outside.mkdir()
    lured = f.delta("cleo", Op("incr", "posts", "ada-1", ("score",), 5), worker="w9", delta_id="t1-w9-s1-lured")
    (outside / "valid.json").write_bytes(canonical.dumps(lured))
    # a worker's outbox holds at least one delta that names itself; a folder with none is refused whole
    # (test_hostile_input), so every case here has one good delta beside the hostile entries
    good = f.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1), worker="w8")
    (inbox / f"deltas/w8/{good['stream']}").mkdir(parents=True)
    (inbox / f"deltas/w8/{good['stream']}/{good['id']}.json").write_bytes(canonical.dumps(good))
    tree: list[tuple[bytes, str, bytes]] = []
    for e in items:
        rel = f"deltas/{e['folder']}/s1/{e['name']}"
        if e["where"] == "branch":
            name = os.fsencode(rel)
            if e["kind"] == "notutf8":
                name = name[:-5] + b"\xff\xfe.json"
            mode = {"symlink": "120000", "submodule": "160000"}.get(e["kind"], "100644")
            data = f.main().encode() if mode == "160000" else b"/proc/self/environ" if mode == "120000" else e["content"]
            if e["kind"] == "deep":
                data = b"[" * 100_000 + b"]" * 100_000
            tree.append((name, mode, data))
            continue
        path = inbox / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue  # a name already taken by a file: nothing placed, nothing to decide
        if path.exists() or path.is_symlink():
            continue
        kind = e["kind"]
        if kind in ("file", "deep"):
            path.write_bytes(b"{" * 100_000 if kind == "deep" else e["content"])
        elif kind == "link-outside":
            path.symlink_to(outside / "valid.json")
        elif kind == "link-environ":
            path.symlink_to("/proc/self/environ")
        elif kind == "dangling":
            path.symlink_to(tmp / "nowhere.json")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
            (path / "inner.json").write_bytes(e["content"])
    if tree:
        # one path once: git trees cannot hold two entries of one name
        unique = {p: (p, m, d) for p, m, d in tree}
        raw_tree_branch(f, "refs/heads/fleet/t1/w9", list(unique.values()))
    return inbox, lured


def _inbox_files(inbox: Path) -> list[str]:
    out = []
    for here, dirs, files in os.walk(inbox):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(here, d))]:
            out.append(os.path.relpath(os.path.join(here, name), inbox))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(items=entries())
def test_any_inbox_and_branch_leave_main_valid_and_every_file_decided(
        template: Path, tmp_path_factory: pytest.TempPathFactory, items: list[dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path_factory.mktemp("case")
    f = _fresh(template, tmp)
    inbox, lured = _place(f, tmp, items)
    placed = _inbox_files(inbox)
    branch = f.git.rev_parse("refs/heads/fleet/t1/w9")
    branch_paths = (subprocess.run(["git", "ls-tree", "-r", "-z", "--name-only", branch, "deltas/"], cwd=f.path,
                                   check=True, capture_output=True).stdout.split(b"\0") if branch else [])
    branch_paths = [os.fsdecode(p) for p in branch_paths if p]
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)

    before = _inbox_files(inbox)
    r = f.fleet("merge", "--inbox", str(inbox), "--json")
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    if any(e["where"] == "inbox" and e["folder"] == ".git" for e in items):
        # an inbox holding a .git folder may be a repository: refused whole, nothing read or removed
        assert r.exit_code == 1 and "holds a git repository (.git)" in r.output, r.output
        assert _inbox_files(inbox) == before
        return
    assert r.exit_code in (0, 3), r.output

    # every entry decided: applied (its id in the ledger) or quarantined by its name
    applied = ledger_ids(f)
    quarantined = {q["path"] for q in records(f)}
    for rel in placed:
        full = rel if rel.startswith("deltas/") else f"deltas/{rel}"
        if printable(full) in quarantined:
            continue
        data = (inbox / rel).read_bytes() if (inbox / rel).is_file() else b""
        assert data == b"" or json.loads(data)["id"] in applied, (rel, quarantined)
    for rel in branch_paths:
        assert printable(rel) in quarantined or any(i in applied for i in _ids_in(f, branch, rel)), rel
    assert _inbox_files(inbox) == []  # decided entries leave the inbox
    assert f.branches() == []

    # nothing outside the inbox was read; no key reached history
    assert lured["id"] not in applied
    assert TOKEN.encode() not in history(f)

    # main is valid and replays byte for byte
    run(f, "validate")
    run(f, "replay", "--check")


def _ids_in(f: Fleet, branch: str, rel: str) -> list[str]:
    data = subprocess.run(["git", "cat-file", "blob", f"{branch}:{rel}"], cwd=f.path, capture_output=True).stdout
    try:
        return [json.loads(data)["id"]]
    except (ValueError, KeyError, TypeError):
        return []
