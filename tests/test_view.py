"""A worker's view of main (fleet/world.py View): it reads only what its turns ask of it.

The reference is the full read every worker once made (``View(full=True)``:
every document of a collection read and checked at its first use). On worlds
drawn at random (documents with ties, missing fields, sharded collections,
sections in any order, any room), the prompts built from a view that reads
lazily are the same, byte for byte, and so are the deltas the offline
provider's turns come to. Then, on real git: what the lazy view does not read.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import canonical, fieldindex, world
from fleet.config import parse as parse_config
from fleet.errors import FleetError
from fleet.git import Git
from fleet.prompt import PromptBuilder, _ordered, sort_documents
from fleet.providers.offline import OfflineProvider
from fleet.state import GitSnapshot, MemorySnapshot, Snapshot
from fleet.streams import run_turns
from fleet.world import View

REPO = Path(__file__).resolve().parents[1]
ORDERS = [[], ["id"], ["-id"], ["-tick", "id"], ["tick"], ["-score", "-tick"], ["score", "id"], ["channel", "-tick"],
          ["-channel"], ["author", "-id"], ["-post", "tick"], ["follower"], ["-followee", "-tick"]]


def example_files() -> dict[str, bytes]:
    return {p.relative_to(REPO).as_posix(): p.read_bytes()
            for folder in ("state", "schemas") for p in (REPO / folder).rglob("*.json")}


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, bytes], int]:
    """The example world's rules with documents and a prompt drawn at random; (files, context tokens)."""
    files = {p: d for p, d in example_files().items()
             if not p.startswith(("state/agents/", "state/posts/", "state/comments/", "state/follows/"))}
    cfg = json.loads(files["state/config.json"])
    agents = [f"a{i:02d}" for i in range(draw(st.integers(1, 12)))]
    cfg["agents"] = {a: {"priority": 0} for a in agents}
    for coll in ("agents", "posts", "comments", "follows"):
        cfg["collections"][coll]["shard"] = draw(st.sampled_from([0, 1, 2]))
    files["state/config.json"] = canonical.dumps(cfg)
    parsed = parse_config(files["state/config.json"])
    channels = ["general", "ideas"]
    tick = st.one_of(st.none(), st.integers(0, 6))  # ties, and documents without one
    docs: dict[str, list[dict[str, Any]]] = {"agents": [], "posts": [], "comments": [], "follows": []}
    for a in agents:
        if draw(st.integers(0, 9)):  # now and then an agent without a document
            docs["agents"].append({"id": a, "name": a.upper(), "persona": draw(st.sampled_from(["", "kind", "terse", "é ünï"])),
                                   "bio": draw(st.text(max_size=20)),
                                   "memory": [{"id": f"m{k}", "tick": draw(st.integers(0, 4)), "text": f"note {k}"}
                                              for k in range(draw(st.integers(0, 4)))]})
    posts = [f"p{i:03d}" for i in range(draw(st.integers(0, 40)))]
    for p in posts:
        doc = {"id": p, "channel": draw(st.sampled_from(channels)), "author": draw(st.sampled_from(agents)),
               "title": draw(st.sampled_from(["t", "a longer title", "x" * 90])), "body": "b"}
        for name, value in (("tick", draw(tick)), ("score", draw(st.one_of(st.none(), st.integers(-3, 3))))):
            if value is not None:
                doc[name] = value
        docs["posts"].append(doc)
    for i in range(draw(st.integers(0, 60))):
        doc = {"id": f"c{i:03d}", "post": draw(st.sampled_from(posts + ["gone"])), "author": draw(st.sampled_from(agents)),
               "body": draw(st.sampled_from(["hi", "a comment of some length " * 3]))}
        t = draw(tick)
        if t is not None:
            doc["tick"] = t
        docs["comments"].append(doc)
    for i in range(draw(st.integers(0, 10))):
        docs["follows"].append({"id": f"f{i}", "follower": draw(st.sampled_from(agents)),
                                "followee": draw(st.sampled_from(agents)), "tick": draw(st.integers(0, 6))})
    for coll, items in docs.items():
        for doc in items:
            files[parsed.collections[coll].doc_path(doc["id"])] = canonical.dumps(doc)
    prompt = json.loads(files["state/prompt.json"])
    for s in prompt["shared"] + prompt["own"]:
        if "collection" in s:
            fields = set(json.loads(files[f"schemas/{cfg['collections'][s['collection']]['schema']}"])["properties"])
            s["order"] = draw(st.sampled_from([o for o in ORDERS if {f.lstrip("-") for f in o} <= fields]))
            limit = draw(st.one_of(st.none(), st.integers(1, 6)))
            s.pop("limit", None)
            if limit is not None:
                s["limit"] = limit
    files["state/prompt.json"] = json.dumps(prompt).encode()
    return files, draw(st.sampled_from([300, 900, 2500, 8000]))


def prompts(snap: Snapshot, view: View, context: int, ahead: bool = False) -> list[Any]:
    """Every agent's prompt; ``ahead``: with what they show first read for all of them at once, as a worker does."""
    w = world.load(snap.config, snap.read)
    b = PromptBuilder(view, w.prompt, context, snap.config.name)
    if ahead:
        b.read_ahead(sorted(snap.config.agents))
    out = []
    for a in sorted(snap.config.agents):
        p = b.for_agent(a)
        out.append((p.system, p.messages, p.prefix_tokens, p.total_tokens))
    return out


def turns(snap: Snapshot, view: View, seed: int) -> list[dict[str, Any]]:
    bodies = asyncio.run(run_turns(OfflineProvider(seed=seed), snap, sorted(snap.config.agents), tick=snap.tick + 1,
                                   worker="w1", view=view))
    return [{k: v for k, v in b.items() if k not in ("id", "utc")} for b in bodies]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(worlds(), st.integers(0, 3))
def test_a_view_that_reads_lazily_gives_the_prompts_and_deltas_of_a_full_read(drawn: tuple[dict[str, bytes], int],
                                                                             seed: int) -> None:
    files, context = drawn
    snap = MemorySnapshot(files)
    tick = snap.tick + 1
    full = prompts(snap, View(snap, tick=tick, full=True), context)
    assert prompts(snap, View(snap, tick=tick), context) == full
    assert canonical.dumps(full) == canonical.dumps(prompts(snap, View(snap, tick=tick), context))
    assert canonical.dumps(full) == canonical.dumps(prompts(snap, View(snap, tick=tick), context, ahead=True))
    assert turns(snap, View(snap, tick=tick), seed) == turns(snap, View(snap, tick=tick, full=True), seed)


# -- with the field index the merge writes (fleet.fieldindex), after a tick ---------------------------

@st.composite
def a_tick(draw: st.DrawFn, files: dict[str, bytes]) -> tuple[dict[str, bytes], list[str]]:
    """What a tick might do to the documents a prompt sorts and filters: (writes, deletes)."""
    cfg = parse_config(files["state/config.json"])
    agents = sorted(cfg.agents)
    docs = {p: json.loads(d) for p, d in files.items() if p.startswith(("state/posts/", "state/comments/", "state/follows/"))}
    posts = sorted(d["id"] for p, d in docs.items() if p.startswith("state/posts/"))
    writes: dict[str, bytes] = {}
    deletes: list[str] = []
    for k in range(draw(st.integers(0, 8))):
        if not docs:
            break
        path = draw(st.sampled_from(sorted(docs)))
        doc = dict(docs[path])
        coll = path.split("/")[1]
        what = draw(st.sampled_from(["delete", "tick", "field", "new"]))
        if what == "delete":
            deletes.append(path)
            del docs[path]
            continue
        if what == "tick":
            t = draw(st.one_of(st.none(), st.integers(0, 8))) if coll != "follows" else draw(st.integers(0, 8))
            doc.pop("tick", None)
            if t is not None:
                doc["tick"] = t
        elif what == "field":
            name = {"posts": "author", "comments": "post", "follows": "followee"}[coll]
            doc[name] = draw(st.sampled_from(posts + ["gone"] if coll == "comments" else agents))
        else:
            doc["id"] = f"{doc['id']}n{k}"
            path = cfg.collections[coll].doc_path(doc["id"])
        docs[path] = doc
        writes[path] = canonical.dumps(doc)
        if path in deletes:
            deletes.remove(path)
    return writes, deletes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(worlds(), st.data(), st.integers(0, 3))
def test_a_view_with_the_field_index_gives_the_prompts_and_deltas_of_a_full_read(
        tmp_path: Path, drawn: tuple[dict[str, bytes], int], data: st.DataObject, seed: int) -> None:
    files, context = drawn
    repo = tmp_path / "indexed"
    if not repo.exists():
        repo.mkdir()
        _git(repo, "init", "-q", "-b", "main")
    git = Git(repo)
    cfg = parse_config(files["state/config.json"])
    spec = world.load(cfg, MemorySnapshot(files).read).prompt
    fields, orders = fieldindex.fields_of(spec, cfg), fieldindex.orders_of(spec, cfg)
    before = git.write_commit(None, "a world\n", files, [])
    old = fieldindex.build(git, before, cfg, fields, None, orders)
    writes, deletes = data.draw(a_tick(files))
    after = git.write_commit(before, "a tick\n", writes, deletes)
    # from the index before and what changed, or from every document: the same index
    index = fieldindex.build(git, after, cfg, fields, old, orders)
    assert git.commit_tree(index) == git.commit_tree(fieldindex.build(git, after, cfg, fields, None, orders))
    found, why = fieldindex.open_index(git, index, after)
    assert found is not None and set(found.fields) == set(fields), why
    snap = GitSnapshot(git, after)
    tick = snap.tick + 1
    full = prompts(snap, View(snap, tick=tick, full=True), context)
    view = View(snap, tick=tick, index=found)
    assert canonical.dumps(prompts(snap, view, context)) == canonical.dumps(full)
    assert view.index is found and not view.doubt  # it was true: it never came into doubt (its rows' order too)
    ahead = View(snap, tick=tick, index=found)
    assert canonical.dumps(prompts(snap, ahead, context, ahead=True)) == canonical.dumps(full)
    assert ahead.index is found and not ahead.doubt
    assert turns(snap, View(snap, tick=tick, index=found), seed) == turns(snap, View(snap, tick=tick, full=True), seed)


# -- the order of a section: one sort on a made key, as the sorts one key at a time gave ---------------

def _ordered_by_sorts(items: list[Any], order: tuple[str, ...]) -> list[Any]:
    """The order a section's items had before: sorted by id, then one stable sort a key, last key first."""
    out = sorted(items, key=lambda i: str(i.get("id", ""))) if items and "id" in items[0] else list(items)
    for key in reversed(order):
        desc, name = key.startswith("-"), key.lstrip("-")

        def sortable(v: Any) -> bool:
            return isinstance(v, (int, float, str)) and not isinstance(v, bool)

        present = [i for i in out if sortable(i.get(name))]
        missing = [i for i in out if not sortable(i.get(name))]
        present.sort(key=lambda i: (0, i[name]) if isinstance(i[name], (int, float)) else (1, i[name]), reverse=desc)
        out = present + missing
    return out


values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2, allow_nan=False),
                   st.sampled_from(["", "a", "b", "ab"]), st.lists(st.integers(), max_size=1))
items = st.lists(st.fixed_dictionaries({}, optional={"id": st.one_of(st.sampled_from(["x", "y", "z", "xy"]), st.integers(0, 3)),
                                                     "k": values, "m": values, "n": values}), max_size=12)


@settings(max_examples=400, deadline=None)
@given(items, st.lists(st.sampled_from(["k", "-k", "m", "-m", "n", "-n", "id", "-id"]), max_size=3))
def test_a_sections_order_is_the_order_of_one_sort_per_key(found: list[dict[str, Any]], order: list[str]) -> None:
    assert [id(i) for i in _ordered(found, tuple(order))] == [id(i) for i in _ordered_by_sorts(found, tuple(order))]


@settings(max_examples=400, deadline=None)
@given(items, st.lists(st.sampled_from(["k", "-k", "m", "-m", "n", "-n", "id", "-id"]), max_size=3), st.randoms())
def test_documents_of_one_collection_sort_alike_whatever_order_they_come_in(
        found: list[dict[str, Any]], order: list[str], rnd: Any) -> None:
    """sort_documents (rows of the field index, kept in their order) skips the sort by
    id first when the ids are unique text and the order has id among its keys: the
    order it gives is the one a section gives, from any order the documents come in."""
    docs = list({str(d.get("id")): {**d, "id": str(d.get("id"))} for d in found}.values())  # one collection's: unique
    shuffled = docs[:]
    rnd.shuffle(shuffled)
    want = [id(i) for i in _ordered(docs, tuple(order))]
    assert [id(i) for i in sort_documents(shuffled, tuple(order))] == want
    assert [id(i) for i in sort_documents(sort_documents(docs, tuple(order)), tuple(order))] == want


# -- on real git: what a lazy view leaves unread -------------------------------------------------------

def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


class Counting(GitSnapshot):
    def __init__(self, git: Git, commit: str) -> None:
        super().__init__(git, commit)
        self.asked: list[str] = []

    def read_many(self, paths: Any) -> dict[str, bytes | None]:
        paths = list(paths)
        self.asked += paths
        return super().read_many(paths)


def _big_world(tmp_path: Path, agents: int) -> tuple[Git, str]:
    """The example world with ``agents`` agents (sharded) and a collection no prompt or tool reads."""
    repo = tmp_path / "w"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    files = example_files()
    cfg = json.loads(files["state/config.json"])
    names = [f"a{i:04d}" for i in range(agents)]
    cfg["agents"] = {a: {"priority": 0} for a in names}
    cfg["collections"]["agents"]["shard"] = 2
    cfg["collections"]["notes"] = {"schema": "comment.schema.json", "owner": None}
    files = {p: d for p, d in files.items() if not p.startswith("state/agents/")}
    files["state/config.json"] = canonical.dumps(cfg)
    parsed = parse_config(files["state/config.json"])
    for a in names:
        files[parsed.collections["agents"].doc_path(a)] = canonical.dumps({"id": a, "name": a, "persona": f"{a} persona."})
    for i in range(50):
        files[f"state/notes/n{i}.json"] = canonical.dumps({"id": f"n{i}", "post": "p", "author": "a0000", "body": "x"})
    for rel, data in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "world")
    return Git(repo), _git(repo, "rev-parse", "HEAD").strip()


def test_a_worker_reads_its_agents_and_what_fits_not_every_document(tmp_path: Path) -> None:
    git, commit = _big_world(tmp_path, 1500)
    mine = ["a0007", "a1234"]
    with Counting(git, commit) as snap:
        view = View(snap, tick=snap.tick + 1)
        lazy = [turns(snap, view, 1), prompts(snap, view, snap.config.run.context_tokens)]
        read = {p for p in snap.asked if p.startswith("state/agents/")}
    full_snap = GitSnapshot(git, commit)
    full = View(full_snap, tick=full_snap.tick + 1, full=True)
    assert lazy == [turns(full_snap, full, 1), prompts(full_snap, full, full_snap.config.run.context_tokens)]
    # the prompts list agents by id as far as their room goes: far fewer than 1,500 documents are read
    with Counting(git, commit) as snap:
        view = View(snap, tick=snap.tick + 1)
        b = PromptBuilder(view, world.load(snap.config, snap.read).prompt, 4000, snap.config.name)
        shown = [b.for_agent(a) for a in mine]
        asked = [p for p in snap.asked if p.startswith("state/agents/")]
    listed = shown[0].system[0]["text"].count("\n- a")
    assert 0 < listed < 1500
    assert len(set(asked)) < 1500 / 2
    assert {snap.config.collections["agents"].doc_path(a) for a in mine} <= set(asked)  # its own, by path
    assert all(f"You are {a}. {a} persona." in p.system[1]["text"] for a, p in zip(mine, shown, strict=True))
    assert not any(p.startswith("state/notes/") for p in snap.asked + sorted(read))  # nobody asks for them


class Requests(GitSnapshot):
    """A snapshot that records each request for blobs it has not read yet (one a round trip to git)."""

    def __init__(self, git: Git, commit: str) -> None:
        super().__init__(git, commit)
        self.requests: list[list[str]] = []

    def read_many(self, paths: Any) -> dict[str, bytes | None]:
        paths = list(paths)
        new = [p for p in paths if p not in self._cache]
        if new:
            self.requests.append(new)
        return super().read_many(paths)


def test_a_worker_reads_what_its_agents_prompts_show_first_in_one_request(tmp_path: Path) -> None:
    git, commit = _big_world(tmp_path, 1500)
    mine = [f"a{i:04d}" for i in range(900, 1500, 15)]  # beyond what the shared prefix lists
    with Requests(git, commit) as snap:
        view = View(snap, tick=snap.tick + 1)
        b = PromptBuilder(view, world.load(snap.config, snap.read).prompt, 4000, snap.config.name)
        before = len(snap.requests)
        b.read_ahead(mine)
        ahead = snap.requests[before:]
        after = len(snap.requests)
        shown = [b.for_agent(a) for a in mine]
        later = snap.requests[after:]
    # every agent's own document, in one request after the filters' scans (of the follows: one for all agents)
    own = {snap.config.collections["agents"].doc_path(a) for a in mine}
    assert own <= set(ahead[-1])
    assert not own & {p for r in ahead[:-1] for p in r} and len(ahead) <= 2
    # the prompts then read none of those again: what they read after is what their room adds, if any
    assert not own & {p for r in later for p in r}
    assert len(later) < len(mine)
    plain = GitSnapshot(git, commit)
    one_by_one = PromptBuilder(View(plain, tick=plain.tick + 1), world.load(plain.config, plain.read).prompt, 4000,
                               plain.config.name)
    assert [p.system for p in shown] == [one_by_one.for_agent(a).system for a in mine]


def test_a_bad_document_a_turn_shows_stops_the_worker_naming_the_file(tmp_path: Path) -> None:
    files = example_files()
    snap = MemorySnapshot(files)
    path = snap.config.collections["posts"].doc_path("ada-1")
    doc = json.loads(files[path]) if path in files else None
    assert doc is not None, sorted(p for p in files if "posts" in p)
    doc["score"] = "high"  # not an integer
    bad = MemorySnapshot({**files, path: canonical.dumps(doc)})
    w = world.load(bad.config, bad.read)
    with pytest.raises(FleetError, match=rf"^{path}: .*score.*the worker cannot read main's state"):
        PromptBuilder(View(bad, tick=1), w.prompt, 8000, bad.config.name)
    with pytest.raises(FleetError, match=rf"^{path}: .*the worker cannot read main's state"):
        View(bad, tick=1).get("posts", "ada-1")


def test_cat_file_reads_many_blobs_through_one_process_and_names_a_missing_one(tmp_path: Path) -> None:
    git, commit = _big_world(tmp_path, 1200)  # more blobs than one chunk of requests
    entries = git.ls_tree(commit, "state/")
    reader = git.cat_file()
    try:
        shas = sorted(set(entries.values()))
        assert len(shas) > 2 * reader.CHUNK
        got = reader.read(shas)
        assert got == git.cat_blobs(shas)
        assert reader.read(shas[:3]) == {s: got[s] for s in shas[:3]}  # the same process, again
        with pytest.raises(FleetError, match="0" * 40 + " is missing"):
            reader.read([shas[0], "0" * 40])
        assert reader.read(shas[-2:]) == {s: got[s] for s in shas[-2:]}  # a new process after the error
    finally:
        reader.close()


_names = st.text(alphabet="ab-./0_~é", min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.sets(st.lists(_names, min_size=1, max_size=3).map("/".join)), st.lists(_names, min_size=1, max_size=2).map("/".join))
def test_a_snapshots_folder_by_bisection_is_the_folder_by_scan(paths: set[str], folder: str) -> None:
    """GitSnapshot.under (paths sorted once, then bisected) gives what a scan of every path gives."""
    snap = GitSnapshot.__new__(GitSnapshot)
    snap._entries = {p: "0" * 40 for p in paths}
    for f in (folder, folder + "/", *sorted(paths)[:3]):
        assert snap.under(f) == Snapshot.under(snap, f)
        # the files directly in it, by bisection past its folders: those a scan finds with no "/" after the folder
        prefix = f.rstrip("/") + "/"
        assert snap.files_in(f) == sorted(p for p in paths if p.startswith(prefix) and "/" not in p[len(prefix):])
