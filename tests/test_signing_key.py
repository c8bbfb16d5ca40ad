"""A worker of a fleet that wants signed branches checks its key before any turn
spends a token (fleet.signing.signing_key): the key must sign (a file that
exists; a passphrase needs ssh-agent, never a prompt) and main's allowed
signers must allow it for this worker's name. Real keys (ssh-keygen), real git."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Fleet
from test_signing import keypair, require_signatures

from fleet.commands.work import work
from fleet.errors import FleetError
from fleet.git import Git
from fleet.signing import SIGN_SECONDS


def _laptop(bare: Path, tmp_path: Path, key: str | None) -> Path:
    runner = tmp_path / "laptop"
    subprocess.run(["git", "clone", "--quiet", str(bare), str(runner)], check=True)
    if key is not None:
        subprocess.run(["git", "config", "user.signingkey", key], cwd=runner, check=True)
    return runner


CASES = ["missing file", "a folder", "passphrase", "not in the file", "another principal", "pattern for others",
         "valid", "valid by pattern", "valid public key file"]


@pytest.mark.parametrize("case", CASES)
def test_a_worker_refuses_before_any_turn_a_key_that_cannot_sign_for_it(
        origin_fleet: tuple[Fleet, Path], tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, bare = origin_fleet
    folder = tmp_path / "keys"
    folder.mkdir()
    mine, mine_pub = keypair(folder, "mine")
    _, other_pub = keypair(folder, "other")
    locked = folder / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)], check=True)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent: a passphrase cannot be had
    monkeypatch.setenv("SSH_ASKPASS", "/bin/false")  # were it used, it would answer nothing; it must not be
    allowed = {"not in the file": f"w1 {other_pub}\n", "another principal": f"w2,w3 {mine_pub}\nw1 {other_pub}\n",
               "pattern for others": f"w1 {other_pub}\nw*,!w1 {mine_pub}\n", "valid by pattern": f"w* {mine_pub}\n",
               }.get(case, f"w1 {mine_pub}\nw2 {other_pub}\n")
    require_signatures(Git(bare), allowed)
    key = {"missing file": str(folder / "gone"), "a folder": str(folder), "passphrase": str(locked),
           "valid public key file": f"{mine}.pub"}.get(case, str(mine))
    runner = _laptop(bare, tmp_path, key)
    expected = {
        "missing file": f"git config user.signingkey names {folder / 'gone'}, which does not exist: set it to your SSH",
        "a folder": f"git config user.signingkey names {folder}, which is a folder",
        "passphrase": "the key has a passphrase and ssh-agent does not hold it: a worker cannot ask for it (run ssh-add",
        "not in the file": "main's keys/allowed_signers does not allow the key of user.signingkey",
        "another principal": "main's keys/allowed_signers allows the key of user.signingkey",
        "pattern for others": "allows the key of user.signingkey",
    }
    started = time.monotonic()
    if case.startswith("valid"):
        r = work(runner, worker=1, workers=3, remote=str(bare))
        assert r.pushed and r.deltas > 0
        return
    with pytest.raises(FleetError) as e:
        work(runner, worker=1, workers=3, remote=str(bare))
    message = str(e.value)
    assert expected[case] in message, message
    assert "\n" not in message and not message.rstrip(")").endswith("?"), message
    # a passphrase is never waited for: a signer left waiting is stopped only at SIGN_SECONDS
    assert case != "passphrase" or time.monotonic() - started < SIGN_SECONDS
    assert Git(bare).refs("refs/heads/fleet/") == []  # nothing pushed, no turn ran
    if case == "another principal":
        assert "for w2, w3, not for worker w1" in message and f"'w1 {mine_pub.rsplit(' ', 1)[0]}'" in message
    if case == "not in the file":
        assert f"add the line 'w1 {mine_pub.rsplit(' ', 1)[0]}' to keys/allowed_signers on main" in message


def test_a_literal_key_without_an_agent_is_refused_in_fleets_words(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _, bare = origin_fleet
    folder = tmp_path / "keys"
    folder.mkdir()
    _, pub = keypair(folder, "mine")
    require_signatures(Git(bare), f"w1 {pub}\n")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    runner = _laptop(bare, tmp_path, pub)
    with pytest.raises(FleetError, match="user.signingkey holds a public key, so ssh-agent must hold its private key"):
        work(runner, worker=1, workers=3, remote=str(bare))


def test_a_relative_key_path_is_the_repositorys(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    """git would sign in the worker's cache, where a relative path names nothing: fleet makes it absolute."""
    _, bare = origin_fleet
    runner = _laptop(bare, tmp_path, None)
    (runner / ".keys").mkdir()
    _, pub = keypair(runner / ".keys", "w1")
    require_signatures(Git(bare), f"w1 {pub}\n")
    subprocess.run(["git", "config", "user.signingkey", ".keys/w1"], cwd=runner, check=True)
    assert os.getcwd() != str(runner)
    r = work(runner, worker=1, workers=3, remote=str(bare))
    assert r.pushed


def test_a_commit_that_cannot_be_signed_is_said_in_fleets_words(fleet: Fleet, tmp_path: Path) -> None:
    from fleet.signing import sign

    head = fleet.git.rev_parse("HEAD")
    assert head is not None
    with pytest.raises(FleetError) as e:
        sign(fleet.git, head, str(tmp_path / "gone"))
    message = str(e.value)
    assert message.startswith("could not sign the worker's commit with user.signingkey: ")
    assert not message.endswith("?") and "error:" not in message and "\n" not in message, message


def test_the_program_git_signs_with_is_the_one_tried(origin_fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    _, bare = origin_fleet
    folder = tmp_path / "keys"
    folder.mkdir()
    key, pub = keypair(folder, "w1")
    require_signatures(Git(bare), f"w1 {pub}\n")
    runner = _laptop(bare, tmp_path, str(key))
    subprocess.run(["git", "config", "gpg.ssh.program", str(tmp_path / "no-such-signer")], cwd=runner, check=True)
    with pytest.raises(FleetError, match="no-such-signer cannot be run: git signs worker branches with it"):
        work(runner, worker=1, workers=3, remote=str(bare))
