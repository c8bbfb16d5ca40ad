"""`fleet validate IN` judges an inbox's files where `fleet merge --inbox IN` puts them.

An inbox holds ``<worker>/<stream>/<id>.json`` or ``deltas/<worker>/...``;
validate takes the same layouts as the merge (fleet.repo's rule), so a file
it passes is one the merge applies, and one the merge would quarantine or
leave unread is a problem, wherever the file stands in the inbox.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Fleet, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet import canonical, delta
from fleet.commands.init import init
from fleet.commands.validate import validate
from fleet.config import parse as parse_config
from fleet.delta import Op
from fleet.errors import FleetError
from fleet.repo import inbox_arrivals

NAME = st.from_regex(r"\A[a-z][a-z0-9_-]{0,8}\Z")


def _delta(worker: str, stream: str) -> dict[str, Any]:
    return delta.make(tick=1, worker=worker, stream=stream, agent="ada",
                      ops=[Op("add", "posts", "ada-1", ("tags",), "x")])


def _merge_takes(inbox: Path, limits: Any) -> bool:
    """Whether the merge reads the inbox's one file as a delta it accepts (fleet.repo, fleet.delta)."""
    try:
        [(arrival, _)] = inbox_arrivals(inbox, 1 << 20)
    except FleetError as e:  # its one file of the layout is no delta: the folder is refused whole
        assert "is a delta" in str(e)
        return False
    if arrival.foreign:
        return False
    try:
        delta.parse(arrival, limits)
    except delta.Rejected:
        return False
    return True


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inbox") / "fleet"
    init(root)
    return root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(worker=NAME, other=NAME, stream=NAME, under=st.sampled_from(["", "deltas/", "x/deltas/", "x/"]),
       folder=st.sampled_from(["own", "other's", "none"]), deeper=st.booleans())
def test_validate_takes_an_inbox_file_exactly_when_the_merge_does(
        fleet_dir: Path, tmp_path_factory: pytest.TempPathFactory, worker: str, other: str, stream: str, under: str,
        folder: str, deeper: bool) -> None:
    body = _delta(worker, stream)
    at = {"own": f"{worker}/{stream}/", "other's": f"{other}/{stream}/", "none": ""}[folder]
    inbox = tmp_path_factory.mktemp("in")
    path = inbox / f"{under}{at}{'sub/' if deeper else ''}{body['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical.dumps(body))
    limits = parse_config((fleet_dir / "state/config.json").read_bytes()).limits
    try:
        _, problems, _ = validate(fleet_dir, inbox)
    except FleetError as e:  # no inbox at all: validate says so in one line, as the merge does
        assert "is a delta" in str(e)
        problems = [str(e)]
    assert (problems == []) == _merge_takes(inbox, limits), (path.relative_to(inbox), problems)
    shutil.rmtree(inbox)


@pytest.mark.parametrize("under", ["", "deltas/"])
def test_a_delta_validate_passes_in_an_inbox_is_merged(fleet: Fleet, tmp_path: Path, under: str) -> None:
    body = _delta("w1", "s1")
    inbox = tmp_path / "IN"
    path = inbox / f"{under}w1/s1/{body['id']}.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(canonical.dumps(body))
    r = run(fleet, "validate", str(inbox))
    assert "1 file(s) checked, 0 problem(s)" in r.output
    run(fleet, "merge", "--inbox", str(inbox))
    ledger = fleet.git.text("ls-tree", "-r", "--name-only", "main", "state/ledger/").split()
    assert any(body["id"] in json.dumps(fleet.read(p).decode()) for p in ledger), ledger


def _odd_entry(inbox: Path, elsewhere: Path, kind: str, good: dict[str, Any]) -> None:
    """One entry the merge refuses by its kind alone, beside a good delta file."""
    name = f"{good['id']}.json"
    if kind == "linked worker folder":  # inbox/w2 -> a folder elsewhere that holds a delta
        (elsewhere / "s1").mkdir(parents=True)
        (elsewhere / "s1" / name).write_bytes(canonical.dumps(good))
        (inbox / "w2").symlink_to(elsewhere, target_is_directory=True)
    elif kind == "linked stream folder":
        (elsewhere / name).parent.mkdir(parents=True, exist_ok=True)
        (elsewhere / name).write_bytes(canonical.dumps(good))
        (inbox / "w2").mkdir()
        (inbox / "w2" / "s1").symlink_to(elsewhere, target_is_directory=True)
    elif kind == "hard link":
        elsewhere.mkdir(parents=True)
        (elsewhere / name).write_bytes(canonical.dumps(good))
        (inbox / "w2" / "s1").mkdir(parents=True)
        (inbox / "w2" / "s1" / name).hardlink_to(elsewhere / name)
    elif kind == "folder named like a delta":
        (inbox / "w2" / "s1" / name).mkdir(parents=True)
        (inbox / "w2" / "s1" / name / "x.json").write_bytes(canonical.dumps(good))
    elif kind == "linked file":
        elsewhere.mkdir(parents=True)
        (elsewhere / "x").write_bytes(canonical.dumps(good))
        (inbox / "w2" / "s1").mkdir(parents=True)
        (inbox / "w2" / "s1" / name).symlink_to(elsewhere / "x")
    elif kind == "linked top folder":
        elsewhere.mkdir(parents=True)
        (inbox / "deltas").symlink_to(elsewhere, target_is_directory=True)
    elif kind == "FIFO":
        import os

        (inbox / "w2" / "s1").mkdir(parents=True)
        os.mkfifo(inbox / "w2" / "s1" / name)


ODD = ["linked worker folder", "linked stream folder", "hard link", "folder named like a delta", "linked file",
       "linked top folder", "FIFO"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(ODD), min_size=1, max_size=3, unique=True), worker=NAME, stream=NAME)
def test_validate_names_every_entry_of_an_inbox_the_merge_would_quarantine(
        fleet_dir: Path, tmp_path_factory: pytest.TempPathFactory, kinds: list[str], worker: str, stream: str) -> None:
    """validate said "0 problems" for a symbolic link to a worker's folder, a hard-linked
    delta and a folder named <id>.json, each of which the merge quarantines."""
    root = tmp_path_factory.mktemp("odd")
    good = _delta(worker, stream)
    for n, kind in enumerate(kinds):
        inbox = root / f"in{n}"
        (inbox / worker / stream).mkdir(parents=True)
        (inbox / worker / stream / f"{good['id']}.json").write_bytes(canonical.dumps(good))
        _odd_entry(inbox, root / f"elsewhere{n}", kind, _delta("w2", "s1"))
        refused = {str(p) for a, p in inbox_arrivals(inbox, 1 << 20) if a.refused and not a.foreign}
        assert refused, kind  # the merge quarantines something here
        _, problems, _ = validate(fleet_dir, inbox)
        named = {p.path for p in problems}
        assert refused <= named, (kind, refused, problems)
        assert str(inbox / worker / stream / f"{good['id']}.json") not in named  # the good one passes
    shutil.rmtree(root)
