"""Reading git's objects in bulk: what replay and the checks read a world through.

Real repositories in temporary folders. ``cat_blobs`` spills a large answer
to a file instead of a pipe, ``changed_modes`` and ``ls_tree`` parse git's
output once, and replay carries a tree listing from commit to commit
(``fleet.replay.Listing``): each must answer exactly what git says.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.errors import FleetError
from fleet.git import Git
from fleet.replay import LISTED, Listing
from fleet.state import MemorySnapshot


def repo(path: Path) -> Git:
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(path)], check=True)
    return Git(path)



def _commit_all(path: Path, message: str) -> str:
    """Commit everything in the work tree at ``path``; its sha."""
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qm", message],
                   check=True)
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()

def test_cat_blobs_reads_many_blobs_through_a_file_as_through_a_pipe(tmp_path: Path) -> None:
    g = repo(tmp_path / "r")
    files = {f"state/c/{i:04d}.json": (f'{{"id":"{i}"}}\n' * (i % 7 + 1)).encode() for i in range(1500)}
    files["state/c/empty.json"] = b""
    files["state/c/binary.json"] = bytes(range(256)) * 3 + b"\n\n"
    commit = g.write_commit(None, "many\n", files, [], when=0)
    entries = g.ls_tree(commit, "state/")
    assert set(entries) == set(files)
    many = g.cat_blobs(list(entries.values()))  # above the spill threshold: through a file
    assert {p: many[sha] for p, sha in entries.items()} == files
    few = g.cat_blobs([entries["state/c/binary.json"], entries["state/c/empty.json"]])  # through the pipe
    assert set(few.values()) == {files["state/c/binary.json"], b""}


def test_cat_blobs_names_a_missing_object_on_either_path(tmp_path: Path) -> None:
    g = repo(tmp_path / "r")
    commit = g.write_commit(None, "one\n", {f"f{i}": str(i).encode() for i in range(1200)}, [], when=0)
    shas = list(g.ls_tree(commit).values())
    assert len(shas) == 1200
    missing = "1" * 40
    for asked in ([missing], [*shas, missing]):
        with pytest.raises(FleetError, match=f"git object {missing} is missing"):
            g.cat_blobs(asked)


def test_changed_modes_and_ls_tree_read_names_and_modes_as_git_writes_them(tmp_path: Path) -> None:
    g = repo(tmp_path / "r")
    (tmp_path / "r" / "state" / "dir with space").mkdir(parents=True)
    (tmp_path / "r" / "state" / "dir with space" / "é ü.json").write_text("{}\n")
    (tmp_path / "r" / "state" / "plain.json").write_text("{}\n")
    first = _commit_all(tmp_path / "r", "a")
    assert first is not None
    (tmp_path / "r" / "state" / "plain.json").unlink()
    (tmp_path / "r" / "state" / "plain.json").symlink_to("/etc/passwd")
    second = _commit_all(tmp_path / "r", "b")
    assert second is not None
    assert set(g.ls_tree(first, "state/")) == {"state/dir with space/é ü.json", "state/plain.json"}
    [(mode, old, new, path)] = g.changed_modes(first, second, ["state/"])
    assert (mode, path) == ("120000", "state/plain.json")
    assert [(old, new, path)] == g.changed(first, second, ["state/"])


paths = st.sampled_from([f"state/{c}/{d}.json" for c in ("a", "ab", "a-b", "b") for d in ("x", "y", "z")]
                        + ["state/a.json", "state/ledger/1/w1.jsonl", "state/ledger/2/w1.jsonl", "schemas/a.json"])
steps = st.lists(st.tuples(st.dictionaries(paths, st.binary(max_size=4), max_size=4),
                           st.lists(st.sampled_from(["state/a", "state/ledger/1", "state/b/x.json", "state/ab"]),
                                    max_size=2)),
                 min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_a_carried_listing_is_the_listing_git_gives(tmp_path_factory: pytest.TempPathFactory,
                                                    history: list[tuple[dict[str, bytes], list[str]]]) -> None:
    """Writes and deletes (of files and of whole folders, as the engine prunes the
    ledger) carried commit by commit equal ls-tree of each commit, and a folder's
    files are what Snapshot.under finds by a pass over every path."""
    g = repo(tmp_path_factory.mktemp("carry") / "r")
    commit = g.write_commit(None, "genesis\n", {"state/config.json": b"{}\n", "state/a/x.json": b"1"}, [], when=0)
    listing = Listing(g.ls_tree(commit, *LISTED))
    for writes, deletes in history:
        new = g.write_commit(commit, "step\n", writes, [d for d in deletes if d not in writes], when=0)
        listing.carry(g, commit, new)
        commit = new
        assert listing.entries == g.ls_tree(commit, *LISTED)
        assert listing.sorted == sorted(listing.entries)
        every = MemorySnapshot(dict.fromkeys(listing.entries, b""))
        for folder in ("state/a", "state/ab", "state/ledger", "state", "schemas", "state/a/"):
            assert listing.under(folder) == every.under(folder)


# a name's bytes: NUL and "/" aside, anything a tree entry can hold (tab, newline, quote,
# backslash, control bytes, bytes that are not UTF-8), which git quotes in some outputs
name_bytes = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b and b"/" not in b
                                                       and b not in (b".", b".."))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(name_bytes, st.sampled_from(["100644", "100755", "120000", "160000"])),
                min_size=1, max_size=8, unique_by=lambda t: t[0]))
def test_ls_tree_answers_the_same_with_and_without_format(tmp_path_factory: pytest.TempPathFactory,
                                                           entries: list[tuple[bytes, str]]) -> None:
    """``ls_tree`` reads git 2.36's ``--format`` (sliced in C) or, for a git
    before it or a name git quotes there, the plain listing: both give the
    same paths, shas, links and submodules, whatever the names' bytes."""
    g = repo(tmp_path_factory.mktemp("ls"))
    blob = g.run("hash-object", "-w", "--stdin", input=b"x").decode().strip()

    def tree(records: bytes) -> str:
        return g.run("mktree", "-z", "--missing", input=records).decode().strip()

    inner = tree(b"".join((f"{mode} commit {'1' * 40}\t" if mode == "160000" else f"{mode} blob {blob}\t").encode() + name + b"\0"
                          for name, mode in entries))
    middle = tree(f"040000 tree {inner}\td\0".encode())
    root = tree(f"040000 tree {middle}\tstate\0".encode())
    found = []
    try:
        for fast in (True, False):
            Git._ls_format = fast
            links: set[str] = set()
            gitlinks: set[str] = set()
            found.append((g.ls_tree(root, "state/", links=links, gitlinks=gitlinks), links, gitlinks))
    finally:
        Git._ls_format = True
    assert found[0] == found[1]
    assert len(found[0][0]) + len(found[0][2]) == len(entries)
