"""The field index beside main (fleet/fieldindex.py): written by the merge with main, read by workers.

What the property test in test_view.py proves on random worlds and ticks (an
index gives the prompts and deltas of the full read, and one built from the
index before is the one built from every document) is taken as given here.
Here, on real git: the merge publishes main and its index in one atomic push
and never one without the other; a worker reads the index only when it
describes its main; an index that is missing, stale or garbled in any way is
a doubt, and a doubt is the full read, with the same prompts; and with it a
worker reads the documents it shows, not every document.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import fleet_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_view import Counting, example_files, prompts

from fleet import canonical, fieldindex, world
from fleet.commands.init import init
from fleet.config import parse as parse_config
from fleet.git import Git
from fleet.repo import FleetRepo
from fleet.state import GitSnapshot
from fleet.world import View


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _world(tmp_path: Path, posts: int = 0, comments: int = 0) -> tuple[Git, str, str]:
    """The example world (with ``posts`` and ``comments`` more) in a repository; (git, main, its index)."""
    repo = tmp_path / "w"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    git = Git(repo)
    files = example_files()
    cfg = parse_config(files["state/config.json"])
    agents = sorted(cfg.agents)
    for i in range(posts):
        doc = {"id": f"x{i:04d}", "channel": "general", "author": agents[i % len(agents)], "title": f"post {i}",
               "body": "b", "tick": i % 7, "score": 0, "comment_count": 0}
        files[cfg.collections["posts"].doc_path(doc["id"])] = canonical.dumps(doc)
    for i in range(comments):
        doc = {"id": f"y{i:05d}", "post": f"x{i % max(1, posts):04d}", "author": agents[i % len(agents)],
               "body": "a comment", "tick": i % 9}
        files[cfg.collections["comments"].doc_path(doc["id"])] = canonical.dumps(doc)
    main = git.write_commit(None, "a world\n", files, [])
    snap = GitSnapshot(git, main)
    spec = world.load(snap.config, snap.read).prompt
    fields, orders = fieldindex.fields_of(spec, snap.config), fieldindex.orders_of(spec, snap.config)
    return git, main, fieldindex.build(git, main, snap.config, fields, None, orders)


def _files(git: Git, commit: str) -> dict[str, bytes]:
    return {p: git.run("cat-file", "blob", s) for p, s in git.ls_tree(commit).items()}


def _rewrite(git: Git, index: str, change: Callable[[dict[str, bytes]], None]) -> str:
    """Another index commit: ``index``'s files, changed."""
    files = _files(git, index)
    change(files)
    return git.write_commit(None, "garbled\n", files, [])


def _rows(files: dict[str, bytes], name: str) -> dict[str, Any]:
    return json.loads(files[name])


def _put(files: dict[str, bytes], name: str, value: Any) -> None:
    files[name] = canonical.dumps_line(value)


def _newest_last(files: dict[str, bytes]) -> None:
    """The post with the oldest tick made the newest: a row that lies about a document it gets shown."""
    rows = _rows(files, "posts.json")
    at = rows["fields"].index("tick") + 1
    oldest = min(range(len(rows["rows"])), key=lambda i: (rows["rows"][i][at] is None, rows["rows"][i][at] or 0))
    rows["rows"][oldest][at] = 10**6
    _put(files, "posts.json", rows)


def _swap(files: dict[str, bytes]) -> None:
    rows = _rows(files, "posts.json")
    rows["rows"][0], rows["rows"][1] = rows["rows"][1], rows["rows"][0]
    _put(files, "posts.json", rows)


def _id_order(files: dict[str, bytes]) -> None:
    """describes.json says the posts' rows are newest first; they are in id order (format 1's)."""
    assert _rows(files, "describes.json")["orders"]["posts"] == ["-tick", "id"]
    rows = _rows(files, "posts.json")
    rows["rows"].sort(key=lambda r: r[0])
    _put(files, "posts.json", rows)


def _drop_row(files: dict[str, bytes]) -> None:
    rows = _rows(files, "posts.json")
    rows["rows"].pop()
    _put(files, "posts.json", rows)


def _object_value(files: dict[str, bytes]) -> None:
    rows = _rows(files, "posts.json")
    rows["rows"][0][1] = {"not": "a scalar"}
    _put(files, "posts.json", rows)


def _duplicate_id(files: dict[str, bytes]) -> None:
    rows = _rows(files, "posts.json")
    rows["rows"][1][0] = rows["rows"][0][0]
    _put(files, "posts.json", rows)


def _spaced(files: dict[str, bytes]) -> None:
    files["posts.json"] = json.dumps(_rows(files, "posts.json"), indent=1).encode()


def _fields_differ(files: dict[str, bytes]) -> None:
    d = _rows(files, "describes.json")
    d["fields"]["posts"] = ["author", "score", "tick"]
    files["describes.json"] = canonical.dumps(d)


def _no_rows_file(files: dict[str, bytes]) -> None:
    del files["posts.json"]


GARBLED: dict[str, Callable[[dict[str, bytes]], None]] = {
    "describes.json is not JSON": lambda f: f.__setitem__("describes.json", b"{\"format\": 1,"),
    "describes.json has a key more": lambda f: f.__setitem__(
        "describes.json", canonical.dumps({**_rows(f, "describes.json"), "more": 1})),
    "describes.json of another format": lambda f: f.__setitem__(
        "describes.json", canonical.dumps({**_rows(f, "describes.json"), "format": 1})),
    "an order of a field it does not hold": lambda f: f.__setitem__(
        "describes.json", canonical.dumps({**_rows(f, "describes.json"),
                                           "orders": {**_rows(f, "describes.json")["orders"], "posts": ["-score"]}})),
    "an order that is not a list of keys": lambda f: f.__setitem__(
        "describes.json", canonical.dumps({**_rows(f, "describes.json"),
                                           "orders": {**_rows(f, "describes.json")["orders"], "posts": "-tick"}})),
    "rows in id order where another is said": _id_order,
    "no describes.json": lambda f: f.pop("describes.json"),
    "fields that differ from the rows'": _fields_differ,
    "a collection's rows missing": _no_rows_file,
    "rows not in canonical form": _spaced,
    "rows not in the order said": _swap,
    "a row too few": _drop_row,
    "two rows of one id": _duplicate_id,
    "a value that is an object": _object_value,
    "rows not JSON": lambda f: f.__setitem__("posts.json", b"\xff\xfe"),
    "a row that lies about a document it shows": _newest_last,
}


@pytest.mark.parametrize("how", sorted(GARBLED))
def test_a_garbled_index_is_a_doubt_and_a_doubt_is_the_full_read(tmp_path: Path, how: str) -> None:
    git, main, index = _world(tmp_path, posts=30, comments=60)
    snap = GitSnapshot(git, main)
    full = prompts(snap, View(snap, tick=snap.tick + 1, full=True), 4000)
    good, why = fieldindex.open_index(git, index, main)
    assert good is not None, why
    honest = View(snap, tick=snap.tick + 1, index=good)
    assert prompts(snap, honest, 4000) == full and honest.index is good  # the index as written: read, and true
    garbled = _rewrite(git, index, GARBLED[how])
    found, why = fieldindex.open_index(git, garbled, main)
    view = View(snap, tick=snap.tick + 1, index=found)
    assert canonical.dumps(prompts(snap, view, 4000)) == canonical.dumps(full)
    assert view.index is None, how  # dropped: at opening, at its rows, or at a document it shows
    assert why or view.doubt
    # read ahead for every agent at once, as a worker does: what was read from the index is not used once in doubt
    ahead = View(snap, tick=snap.tick + 1, index=found)
    assert canonical.dumps(prompts(snap, ahead, 4000, ahead=True)) == canonical.dumps(full)
    assert ahead.index is None, how


def test_an_index_of_another_main_or_none_at_all_is_not_read(tmp_path: Path) -> None:
    git, main, index = _world(tmp_path, posts=5)
    found, why = fieldindex.open_index(git, "refs/heads/fleet/index/main", main)
    assert found is None and why == "no refs/heads/fleet/index/main"
    later = git.write_commit(main, "a person's commit\n", {"state/channels/more.json": canonical.dumps(
        {"id": "more", "description": "d", "post_count": 0})}, [])
    found, why = fieldindex.open_index(git, index, later)
    assert found is None and why == f"describes.json describes main {main[:12]}, not {later[:12]}"
    found, why = fieldindex.open_index(git, index, main)
    assert found is not None and not why


def test_a_value_the_rows_cannot_hold_leaves_its_collection_to_the_full_read(tmp_path: Path) -> None:
    git, main, index = _world(tmp_path, posts=3, comments=3)
    snap = GitSnapshot(git, main)
    path = snap.config.collections["comments"].doc_path("y00001")
    doc = json.loads(git.show(main, path) or b"")
    for value in ("x[0001", {"an": "object"}):
        later = git.write_commit(main, "a person's commit\n", {path: canonical.dumps({**doc, "post": value})}, [])
        spec = world.load(snap.config, snap.read).prompt
        found, why = fieldindex.open_index(git, fieldindex.build(
            git, later, snap.config, fieldindex.fields_of(spec, snap.config), index,
            fieldindex.orders_of(spec, snap.config)), later)
        assert found is not None and set(found.fields) == {"posts", "follows"}, why  # comments: read in full


def test_rows_bigger_than_the_limit_are_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git, main, index = _world(tmp_path, posts=5)
    monkeypatch.setattr(fieldindex, "MAX_BLOB", 64)
    found, why = fieldindex.open_index(git, index, main)
    assert found is None and why.endswith("bigger than 64 bytes")


def test_with_the_index_a_worker_reads_the_documents_it_shows_not_every_one(tmp_path: Path) -> None:
    git, main, index = _world(tmp_path, posts=400, comments=2000)
    found, _ = fieldindex.open_index(git, index, main)
    with Counting(git, main) as snap:
        view = View(snap, tick=snap.tick + 1, index=found)
        got = prompts(snap, view, 4000)
        read = [p for p in snap.asked if p.startswith(("state/posts/", "state/comments/"))]
    full_snap = GitSnapshot(git, main)
    assert got == prompts(full_snap, View(full_snap, tick=full_snap.tick + 1, full=True), 4000)
    assert view.index is found
    assert 0 < len(set(read)) < 2400 / 4  # what the prompts show, read a batch ahead
    with Counting(git, main) as snap:  # without it: every document of both
        prompts(snap, View(snap, tick=snap.tick + 1), 4000)
        assert len({p for p in snap.asked if p.startswith(("state/posts/", "state/comments/"))}) >= 2400


# -- publishing: main and its index in one atomic push ---------------------------------------------

def _origin(tmp_path: Path) -> tuple[FleetRepo, Path, str]:
    path = tmp_path / "seed"
    init(path)
    bare = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(path), str(bare)], check=True)
    subprocess.run(["git", "remote", "add", "origin", str(bare)], cwd=path, check=True)
    repo = FleetRepo(path)
    repo.fetch()
    return repo, bare, repo.main()


def test_publish_moves_main_and_its_index_together_or_neither(tmp_path: Path) -> None:
    repo, bare, head = _origin(tmp_path)
    remote = Git(bare)
    index_ref = f"refs/heads/{fieldindex.BRANCH}"
    first = repo.git.write_commit(head, "a tick\n", {"state/channels/a.json": b"{}\n"}, [])
    idx1 = repo.git.write_commit(None, "index 1\n", {"describes.json": b"{}\n"}, [])
    idx0 = repo.git.write_commit(None, "index 0\n", {"describes.json": b"[]\n"}, [])
    # the index lease does not hold (the remote has no index, this one says it has idx0): nothing moves
    assert not repo.publish(first, head, [], (idx1, idx0))
    assert remote.rev_parse("refs/heads/main") == head and remote.rev_parse(index_ref) is None
    assert repo.publish(first, head, [], (idx1, None))
    assert remote.rev_parse("refs/heads/main") == first and remote.rev_parse(index_ref) == idx1
    assert repo.git.rev_parse(repo.index_ref) == idx1
    # main's lease does not hold (another merge published first): the index stays too
    second = repo.git.write_commit(first, "another tick\n", {"state/channels/b.json": b"{}\n"}, [])
    idx2 = repo.git.write_commit(None, "index 2\n", {"describes.json": b"{\"a\":1}\n"}, [])
    assert not repo.publish(second, head, [], (idx2, idx1))
    assert remote.rev_parse("refs/heads/main") == first and remote.rev_parse(index_ref) == idx1
    assert repo.publish(second, first, [], (idx2, idx1))  # an index commit has no parent: replaced, not appended
    assert remote.rev_parse("refs/heads/main") == second and remote.rev_parse(index_ref) == idx2


def test_publish_without_a_remote_moves_main_and_its_index_in_one_transaction(tmp_path: Path) -> None:
    bare = tmp_path / "f.git"
    init(tmp_path / "seed")
    subprocess.run(["git", "clone", "--quiet", "--bare", str(tmp_path / "seed"), str(bare)], check=True)
    subprocess.run(["git", "remote", "remove", "origin"], cwd=bare, check=True)  # its own main: no remote
    repo = FleetRepo(bare)
    head = repo.main()
    new = repo.git.write_commit(head, "a tick\n", {"state/channels/a.json": b"{}\n"}, [])
    idx = repo.git.write_commit(None, "index\n", {"describes.json": b"{}\n"}, [])
    assert not repo.publish(new, head, [], (idx, idx))  # the index is not where it is said to be
    assert repo.main() == head and repo.git.rev_parse(repo.index_ref) is None
    assert repo.publish(new, head, [], (idx, None))
    assert repo.main() == new and repo.git.rev_parse(repo.index_ref) == idx


def test_each_merge_publishes_the_index_of_its_main_and_the_next_workers_read_it(tmp_path: Path) -> None:
    repo = tmp_path / "x"
    init(repo)
    bare = tmp_path / "o.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(bare)], check=True)
    origin = Git(bare)
    seen = []
    for tick in (1, 2, 3):
        outbox = tmp_path / f"outbox{tick}"
        for i in (1, 2):
            p = fleet_cli(repo, "work", "--worker", str(i), "--workers", "2", "--remote", str(bare), "--outbox",
                          str(outbox), "--provider", "offline", "--json")
            assert p.returncode == 0, p.stderr
            seen.append(json.loads(p.stdout)["index"])
        m = fleet_cli(repo, "merge", "--remote", str(bare), "--inbox", str(outbox), "--json")
        assert m.returncode == 0, m.stderr
        main = origin.rev_parse("refs/heads/main")
        assert main == json.loads(m.stdout)["commit"]
        index = origin.rev_parse(f"refs/heads/{fieldindex.BRANCH}")
        assert index is not None and origin.text("rev-list", "--count", index) == "1"  # no history kept
        found, why = fieldindex.open_index(origin, index, main)
        assert found is not None and set(found.fields) == {"posts", "comments", "follows"}, why
        snap = GitSnapshot(origin, main)
        spec = world.load(snap.config, snap.read).prompt
        fields, orders = fieldindex.fields_of(spec, snap.config), fieldindex.orders_of(spec, snap.config)
        # the one the merge came to from the index before is the one every document gives
        assert origin.commit_tree(index) == origin.commit_tree(
            fieldindex.build(origin, main, snap.config, fields, None, orders))
    # before the first merge there was none; after each, the workers read the one of their main
    assert seen == ["not read: no refs/fleet/index/main"] * 2 + ["read"] * 4


def test_rows_kept_in_id_order_are_read_only_in_id_order() -> None:
    """A collection with no order said (its sections filter, or list by id) keeps its rows
    in id order, and rows out of it, or two of one id, are a doubt."""
    fields = ("author",)
    good = fieldindex.rows_blob(fields, {"b": ["ada"], "a": ["basil"]})
    assert list(fieldindex.parse_rows(good, fields, "posts")) == ["a", "b"]
    swapped = canonical.dumps_line({"fields": ["author"], "rows": [["b", "ada"], ["a", "basil"]]})
    with pytest.raises(fieldindex.Doubt, match="in id order"):
        fieldindex.parse_rows(swapped, fields, "posts")
    assert list(fieldindex.parse_rows(swapped, fields, "posts", in_id_order=False)) == ["b", "a"]
    twice = canonical.dumps_line({"fields": ["author"], "rows": [["a", "ada"], ["a", "basil"]]})
    for in_id_order in (True, False):
        with pytest.raises(fieldindex.Doubt, match="two rows of one id"):
            fieldindex.parse_rows(twice, fields, "posts", in_id_order=in_id_order)


_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2, allow_nan=False),
                    st.sampled_from(["", "a", "b", "ab"]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["x", "y", "z", "xy", "q1", "q2"]), st.tuples(_values, _values), max_size=6),
       st.lists(st.sampled_from(["k", "-k", "m", "-m", "id", "-id"]), min_size=1, max_size=3, unique_by=lambda k: k.lstrip("-")),
       st.randoms())
def test_the_merge_keeps_rows_in_the_order_a_prompt_sorts_them(rows: dict[str, tuple[Any, Any]], order: list[str],
                                                              rnd: Any) -> None:
    """The rows file's order (one sort on a key made of the row, from rows in any
    order) is the order a worker's sort of the rows gives (fleet.prompt.sort_documents)."""
    from fleet.prompt import sort_documents

    fields = ("k", "m")
    items = list(rows.items())
    rnd.shuffle(items)
    blob = fieldindex.rows_blob(fields, {i: list(v) for i, v in items}, tuple(order))
    stubs = list(fieldindex.parse_rows(blob, fields, "c", in_id_order=False).values())
    assert [d["id"] for d in sort_documents(stubs, tuple(order))] == [d["id"] for d in stubs]
    assert blob == fieldindex.rows_blob(fields, {i: list(v) for i, v in sorted(items)}, tuple(order))


def test_the_merge_builds_the_index_from_the_one_before_and_what_changed(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """From the index before: one diff and the changed documents, no listing of any
    collection, and the same index as from every document."""
    git, main, index = _world(tmp_path, posts=20, comments=40)
    snap = GitSnapshot(git, main)
    path = snap.config.collections["posts"].doc_path("x0003")
    doc = json.loads(git.show(main, path) or b"")
    later = git.write_commit(main, "a tick\n", {path: canonical.dumps({**doc, "tick": 99})}, [])
    spec = world.load(snap.config, snap.read).prompt
    fields, orders = fieldindex.fields_of(spec, snap.config), fieldindex.orders_of(spec, snap.config)
    full = fieldindex.build(git, later, snap.config, fields, None, orders)
    listed = []
    monkeypatch.setattr(Git, "ls_tree", lambda self, *a, **k: listed.append(a) or {})
    assert git.commit_tree(fieldindex.build(git, later, snap.config, fields, index, orders)) == git.commit_tree(full)
    assert listed == []
    assert json.loads(git.show(full, "posts.json") or b"")["rows"][0][0] == "x0003"  # newest first: kept in order


def test_the_merge_builds_the_index_from_the_bytes_it_wrote_and_only_those_git_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents the merge just wrote are not read back from git; bytes said to be
    written that are not what the commit holds are not believed (git's are read)."""
    git, main, index = _world(tmp_path, posts=20, comments=40)
    snap = GitSnapshot(git, main)
    spec = world.load(snap.config, snap.read).prompt
    fields, orders = fieldindex.fields_of(spec, snap.config), fieldindex.orders_of(spec, snap.config)
    posts = snap.config.collections["posts"]
    writes = {posts.doc_path(f"x{i:04d}"): canonical.dumps({**json.loads(git.show(main, posts.doc_path(f"x{i:04d}"))
                                                                          or b""), "tick": 90 + i})
              for i in (2, 5)}
    later = git.write_commit(main, "a tick\n", writes, [])
    full = fieldindex.build(git, later, snap.config, fields, None, orders)
    read: list[list[str]] = []
    real = Git.cat_blobs
    monkeypatch.setattr(Git, "cat_blobs", lambda self, shas, *a, **k: read.append(list(shas)) or real(self, shas, *a, **k))
    built = fieldindex.build(git, later, snap.config, fields, index, orders, written=writes)
    assert git.commit_tree(built) == git.commit_tree(full)
    assert all(fieldindex.blob_id(d, 40) not in shas for d in writes.values() for shas in read)
    lie = {p: d.replace(b'"tick": 9', b'"tick": 1') for p, d in writes.items()}  # not what the commit holds
    read.clear()
    assert git.commit_tree(fieldindex.build(git, later, snap.config, fields, index, orders, written=lie)) \
        == git.commit_tree(full)
    assert sorted(s for shas in read for s in shas if s in {fieldindex.blob_id(d, 40) for d in writes.values()}) \
        == sorted(fieldindex.blob_id(d, 40) for d in writes.values())
    assert fieldindex.blob_id(b"hello\n", 40) == git.run("hash-object", "--stdin", input=b"hello\n").decode().strip()
