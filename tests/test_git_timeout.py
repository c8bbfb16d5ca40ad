"""A remote that accepted the connection and never answers: every git command
fleet runs against a remote is bounded (FLEET_GIT_TIMEOUT), and says so in one
line, instead of waiting for ever.

git bounds nothing on git:// (nor on ssh): a git daemon blocked writing a log
nobody reads, or a half-open connection, keeps ``git fetch`` and ``git push``
waiting for ever, and a claimer, a holder's complete or the watchdog with them.
The remote here is a real ``git daemon`` behind a proxy on 127.0.0.1 that
forwards git's bytes both ways, except for what a test tells it to swallow.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleet.git import Git, PushResult, RefUpdate
from fleet.repo import FleetRepo
from fleet.tasks import TaskQueue
from tests.test_claim_contention import GitDaemon, _origin

BOUND = "5"  # seconds: FLEET_GIT_TIMEOUT in these tests (a remote that says nothing is stopped after it)


class Silent:
    """A TCP proxy in front of ``port``. A connection whose request names a service in
    ``mute`` is held: with ``after_request`` False nothing is forwarded at all (the
    server never hears of it); with True everything the client sends is forwarded, and
    the server's answers up to the client's second message (the ref advertisement)
    only, so the server does the push and the client never hears how it went."""

    def __init__(self, port: int, mute: set[str], *, after_request: bool) -> None:
        self.target, self.mute, self.after_request = port, mute, after_request
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        first = b""  # the git:// request, one pkt-line: "<len>git-upload-pack /name\0host=...\0" (TCP may
        while len(first) < 4 or len(first) < int(first[:4], 16):  # hand it over in parts on a busy machine)
            part = c.recv(65536)
            if not part:
                c.close()
                return
            first += part
        service = first[4:].split(b" ", 1)[0].decode(errors="replace")
        held = service in self.mute
        if held and not self.after_request:
            self.held.append(c)  # never answered, never closed (until the test ends)
            return
        s = socket.create_connection(("127.0.0.1", self.target))
        s.sendall(first)
        quiet = threading.Event()  # set once the client has spoken again: the server's answers are swallowed

        def down() -> None:
            while data := s.recv(65536):
                if not (held and quiet.is_set()):
                    c.sendall(data)
        threading.Thread(target=down, daemon=True).start()
        try:
            while data := c.recv(65536):
                quiet.set()
                s.sendall(data)
        except OSError:
            pass
        self.held.append(s)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A fleet with one task on an origin served by git daemon, a clone of it, and the daemon."""
    monkeypatch.setenv("FLEET_GIT_TIMEOUT", BOUND)
    served = tmp_path / "served"
    served.mkdir()
    daemon = GitDaemon(served)
    bare = _origin(tmp_path, served, ["w00"], 1)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-checkout", daemon.url("origin.git"), str(clone)], check=True)
    try:
        yield daemon, bare, clone
    finally:
        daemon.stop()


def _point(clone: Path, url: str) -> None:
    subprocess.run(["git", "remote", "set-url", "origin", url], cwd=clone, check=True)


def test_a_claim_from_a_remote_that_never_answers_fails_in_one_line_naming_the_bound(remote) -> None:  # type: ignore[no-untyped-def]
    daemon, _, clone = remote
    proxy = Silent(daemon.port, {"git-upload-pack", "git-receive-pack"}, after_request=False)
    try:
        _point(clone, proxy.url("origin.git"))
        r = subprocess.run([sys.executable, "-m", "fleet", "task", "claim", "-C", str(clone), "--as", "w00"],
                           capture_output=True, text=True, timeout=600)
    finally:
        proxy.close()
    assert r.returncode == 1, r
    assert r.stdout == ""
    assert r.stderr.splitlines() == [f"fleet: git fetch from origin failed: fatal: the remote did not answer within "
                                     f"{BOUND} s (stopped; FLEET_GIT_TIMEOUT sets the bound)"], r.stderr
    # nothing was claimed: the queue, as the daemon serves it, still has its one task pending
    _point(clone, daemon.url("origin.git"))
    q = TaskQueue(FleetRepo(clone))
    q.fetch()
    assert [t.status for t in q.read().tasks.values()] == ["pending"]


def _push_through(remote, mute: set[str], after_request: bool) -> tuple[PushResult, str | None, str | None, str]:  # type: ignore[no-untyped-def]
    """A push of a new commit on main through a proxy muting ``mute``: (result, the
    daemon's main after it, the old commit, the new one)."""
    daemon, bare, clone = remote
    git = Git(clone)
    old = Git(bare).text("rev-parse", "refs/heads/main")
    new = git.write_commit(old, "pushed through a proxy\n", {"x.txt": b"x"}, [])
    proxy = Silent(daemon.port, mute, after_request=after_request)
    try:
        result = git.push(proxy.url("origin.git"), [RefUpdate("refs/heads/main", new, old)])
    finally:
        proxy.close()
    return result, Git(bare).text("rev-parse", "refs/heads/main"), old, new


def test_a_push_the_remote_never_answers_is_lost_when_it_did_not_land(remote) -> None:  # type: ignore[no-untyped-def]
    result, main, old, _ = _push_through(remote, {"git-receive-pack"}, False)  # fetches and ls-remote go through
    assert result.outcome == "lost"
    assert "the remote did not answer within" in result.reason
    assert main == old


def test_a_push_that_landed_but_whose_answer_never_came_is_won(remote) -> None:  # type: ignore[no-untyped-def]
    result, main, _, new = _push_through(remote, {"git-receive-pack"}, True)
    assert main == new  # the daemon took it
    assert result.outcome == "won"


def test_a_push_to_a_remote_that_answers_nothing_at_all_is_refused_saying_nobody_knows(remote) -> None:  # type: ignore[no-untyped-def]
    result, main, old, _ = _push_through(remote, {"git-receive-pack", "git-upload-pack"}, False)
    assert result.outcome == "refused"
    assert "whether the push landed is unknown" in result.reason
    assert main == old


@pytest.mark.parametrize("value", ["soon", "inf", "-inf", "nan", "NaN", "1e400", "-1", "-0.5", "1e9", "0x10", "5s"])
def test_the_bound_must_be_a_number_of_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Words, infinities, NaN, negatives and bounds beyond a week are refused in one
    line: once, inf crashed the wait (OverflowError) and nan or -1 bound nothing."""
    monkeypatch.setenv("FLEET_GIT_TIMEOUT", value)
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True)
    from fleet.errors import FleetError
    with pytest.raises(FleetError, match=r"FLEET_GIT_TIMEOUT=.*: expected a number of seconds from 0 to"):
        Git(tmp_path / "r").proc("ls-remote", str(tmp_path / "r"))


@pytest.mark.parametrize("value", ["0", "0.5", "600", " 30 ", ""])
def test_a_bound_in_seconds_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FLEET_GIT_TIMEOUT", value)
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True)
    assert Git(tmp_path / "r").proc("ls-remote", str(tmp_path / "r")).returncode == 0
