"""What a worker says reaches the terminal whole and on one line: a name from
--agents with a newline in it is escaped; git's reason a knowledge source could
not be fetched is not cut at its first line; a server that ignores the size
filter is said once. Real git, a real closed port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import knowledge
from fleet.ids import printable
from tests.conftest import Fleet, run
from tests.test_knowledge import TOMATOES, fleet_with, git, knowledge_repo, report_of


@settings(max_examples=40, deadline=None)
@given(name=st.text(st.characters(codec="utf-8", exclude_characters=","), min_size=1, max_size=12).filter(
    lambda s: s.strip() and not s.isidentifier()))
def test_an_unknown_agent_is_named_escaped_on_one_line(name: str) -> None:
    from fleet.plan import UnknownAgents, roster

    with pytest.raises(UnknownAgents) as e:
        roster(["ada", "basil"], [name.strip()])
    message = str(e.value)
    assert message == f"{printable(name.strip(), 80)} not in state/config.json agents"
    assert len(message.splitlines()) == 1 and "\x1b" not in message


def test_work_names_agents_with_a_newline_escaped(fleet: Fleet) -> None:
    r = run(fleet, "work", "--worker", "1", "--workers", "1", "--agents", "ada\nbasil", code=2)
    assert "--agents: ada\\x0abasil not in state/config.json agents" in r.output, r.output
    assert "ada\nbasil" not in r.output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_source_shows_gits_reason_whole(tmp_path: Path) -> None:
    knowledge_repo(tmp_path, {"notes/tomatoes.md": TOMATOES.encode()})
    url = f"git://127.0.0.1:{_closed_port()}/kb.git"
    f = fleet_with(tmp_path, "fleet", {"remotes": {"kb": url},
                                       "knowledge": {"sources": [{"remote": "kb", "path": "notes"}]}})
    r = run(f, "work", "--worker", "1", "--workers", "1", "--json")
    [warning] = [ln for ln in r.output.splitlines() if ln.startswith("fleet: warning: knowledge source")]
    assert "could not be fetched: fatal: unable to connect to 127.0.0.1: " in warning, warning
    assert "errno=Connection refused; this tick goes on without it" in warning, warning


@pytest.mark.parametrize("filters", [True, False])
def test_a_server_that_ignores_the_size_filter_is_said_once_and_the_big_file_stays_out(
        tmp_path: Path, filters: bool) -> None:
    kb = knowledge_repo(tmp_path, {"notes/tomatoes.md": TOMATOES.encode(),
                                   "notes/huge.md": b"tomatoes " * 20_000})
    if not filters:
        git(kb, "config", "--unset", "uploadpack.allowFilter")
    f = fleet_with(tmp_path, "fleet", {"remotes": {"kb": "../kb.git"},
                                       "knowledge": {"sources": [{"remote": "kb", "path": "notes"}]}})
    r = run(f, "work", "--worker", "1", "--workers", "1", "--json")
    said = [ln for ln in r.output.splitlines() if "does not filter by size" in ln]
    assert len(said) == (0 if filters else 1), r.output
    if said:
        assert said[0] == (f"fleet: warning: knowledge source 1 (remote kb, notes on main): the server does not "
                           f"filter by size, so files over {knowledge.MAX_FILE_BYTES} bytes were downloaded (they "
                           "are still never read into a prompt)")
    [read] = report_of(r.output)["knowledge"]
    assert read["files"] == 1 and read["refused"] == 1  # the big file: refused either way
    cache = f.path / ".git" / "fleet" / knowledge.CACHE / "w1.git"
    huge = git(kb, "rev-parse", "main:notes/huge.md").strip()
    missing = git(cache, "rev-list", "--objects", "--missing=print", "refs/fleet/knowledge/0").split()
    assert (f"?{huge}" in missing) is filters  # (cat-file would fetch a missing blob from the promisor)


def test_a_source_that_never_answers_waits_no_longer_than_the_workers_timeout(tmp_path: Path) -> None:
    """A knowledge source on a port that takes the connection and never answers held
    `fleet work --timeout 5` for FLEET_GIT_TIMEOUT (600 s) per source, before any turn.
    The worker's --timeout bounds it: the source is named, and the tick goes on."""
    import subprocess
    import sys
    import threading

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])  # taken, never answered
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        url = f"git://127.0.0.1:{silent.getsockname()[1]}/kb.git"
        f = fleet_with(tmp_path, "fleet", {"remotes": {"kb": url},
                                           "knowledge": {"sources": [{"remote": "kb", "path": "notes"}]}})
        p = subprocess.run([sys.executable, "-m", "fleet", "work", "--worker", "1", "--workers", "1", "--provider",
                            "offline", "--timeout", "5", "--json"], cwd=f.path, capture_output=True, text=True,
                           timeout=240)  # (FLEET_GIT_TIMEOUT's 600 s would outlast this: the bound is the worker's)
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        silent.close()
    [warning] = [ln for ln in p.stderr.splitlines() if ln.startswith("fleet: warning: knowledge source")]
    assert "did not answer within" in warning, warning
    assert p.returncode == 0 and json.loads(p.stdout)["deltas"] >= 1, p.stderr
