"""Signed deltas (fleet/signing.py): workers off GitHub sign their branch commits
with an SSH key; the merge verifies every branch tip against main's allowed
signers and quarantines, unread, the deltas of a branch whose signer, worker or
folder do not match. Real keys (ssh-keygen), real signatures, real git."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Fleet, run

from fleet import canonical
from fleet.commands.merge import merge
from fleet.commands.work import work
from fleet.delta import Op
from fleet.errors import FleetError
from fleet.git import Git
from fleet.signing import sign

SIGNERS = "keys/allowed_signers"


def keypair(where: Path, name: str) -> tuple[Path, str]:
    """A new ed25519 key: (private key file, public key line)."""
    key = where / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, (where / f"{name}.pub").read_text().strip()


def require_signatures(git: Git, allowed: str) -> None:
    """Main with signing.allowed_signers in config and the file beside it, as a merged PR makes it."""
    head = git.rev_parse("refs/heads/main")
    raw = json.loads(git.show(head, "state/config.json"))
    raw["signing"] = {"allowed_signers": SIGNERS}
    commit = git.write_commit(head, "require signed worker branches\n",
                              {"state/config.json": canonical.dumps(raw), SIGNERS: allowed.encode()}, [])
    git.run("update-ref", "refs/heads/main", commit)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: keypair(folder, name) for name in ("w1", "w2", "stranger", "nobody")}


def test_a_worker_signs_its_branch_and_the_merge_applies_it(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                            keys: dict[str, tuple[Path, str]]) -> None:
    fleet, bare = origin_fleet
    require_signatures(Git(bare), f"w1 {keys['w1'][1]}\n")
    runner = tmp_path / "laptop"
    subprocess.run(["git", "clone", "--quiet", str(bare), str(runner)], check=True)
    with pytest.raises(FleetError, match="signing.allowed_signers is set, so worker branches must be signed"):
        work(runner, worker=1, workers=3, remote=str(bare))  # refused before any turn, nothing pushed
    assert Git(bare).refs("refs/heads/fleet/") == []
    subprocess.run(["git", "config", "user.signingkey", str(keys["w1"][0])], cwd=runner, check=True)
    r = work(runner, worker=1, workers=3, remote=str(bare))
    assert r.pushed and r.deltas > 0
    tip = Git(bare).rev_parse(f"refs/heads/{r.branch}")
    shown = subprocess.run(["git", "-c", f"gpg.ssh.allowedSignersFile={tmp_path / 'a'}", "cat-file", "commit", tip],
                           cwd=bare, capture_output=True, text=True, check=True).stdout
    assert "-----BEGIN SSH SIGNATURE-----" in shown
    m = merge(fleet.path, tick=1)
    assert m.applied == r.deltas - r.errors and m.quarantined == []


def test_the_merge_quarantines_what_is_not_signed_by_the_branchs_worker(origin_fleet: tuple[Fleet, Path],
                                                                        keys: dict[str, tuple[Path, str]]) -> None:
    """Four worker branches: unsigned; signed by a key no one allowed; signed by w2's key on
    w1's branch; and signed by w3's own key with a file in another worker's folder."""
    fleet, bare = origin_fleet
    require_signatures(Git(bare), f"w1 {keys['w1'][1]}\nw2 {keys['w2'][1]}\nw3 {keys['stranger'][1]}\n")
    fleet.git.run("fetch", "--quiet", "origin")
    fleet.git.run("reset", "--quiet", "--hard", "origin/main")
    git = fleet.git

    def branch(worker: str, key: Path | None, extra: dict[str, bytes] | None = None) -> None:
        body = fleet.delta("ada", Op("incr", "agents", "ada", ("karma",), 1), worker=worker, stream=f"s-{worker}")
        fleet.push(body)
        ref = f"refs/heads/fleet/t1/{worker}"
        tip = git.rev_parse(ref)
        if extra:
            tip = git.write_commit(tip, "more\n", extra, [])
        if key is not None:
            tip = sign(git, tip, str(key))
        git.run("update-ref", ref, tip)
        git.run("push", "--quiet", str(bare), f"{ref}:{ref}")
        git.run("update-ref", "-d", ref)

    branch("w4", None)
    branch("w5", keys["nobody"][0])
    branch("w1", keys["w2"][0])
    sneaky = fleet.delta("basil", Op("incr", "agents", "basil", ("karma",), 5), worker="w2", stream="s9")
    branch("w3", keys["stranger"][0], {f"deltas/w2/s9/{sneaky['id']}.json": canonical.dumps(sneaky)})
    m = merge(fleet.path, tick=1)
    reasons = {q["path"]: q["reason"] for q in m.quarantined}
    assert m.applied == 1  # w3's own delta, signed by the key allowed for w3
    assert len(reasons) == 4, reasons
    by_worker = {p.split("/")[1]: r for p, r in reasons.items() if p.split("/")[1] != "w2"}
    assert "worker branch fleet/t1/w4: its commit is not signed" in by_worker["w4"]
    assert "signed by a key that the allowed signers do not name" in by_worker["w5"]
    assert "signed by w2, but the branch is worker w1's" in by_worker["w1"]
    [(path, why)] = [(p, r) for p, r in reasons.items() if p.startswith("deltas/w2/")]
    assert "is not in deltas/w3/, on worker w3's signed branch fleet/t1/w3" in why
    assert json.loads(Git(bare).show("refs/heads/main", "state/agents/basil.json"))["karma"] == \
        json.loads(fleet.read("state/agents/basil.json"))["karma"]  # the smuggled increment never applied


def test_an_allowed_signers_file_missing_from_main_quarantines_every_branch(origin_fleet: tuple[Fleet, Path],
                                                                            keys: dict[str, tuple[Path, str]]) -> None:
    fleet, bare = origin_fleet
    git = Git(bare)
    require_signatures(git, f"w1 {keys['w1'][1]}\n")
    head = git.rev_parse("refs/heads/main")
    git.run("update-ref", "refs/heads/main", git.write_commit(head, "oops\n", {}, [SIGNERS]))
    fleet.git.run("fetch", "--quiet", "origin")
    fleet.git.run("reset", "--quiet", "--hard", "origin/main")
    fleet.push(fleet.delta("ada", Op("incr", "agents", "ada", ("karma",), 1)))
    fleet.git.run("push", "--quiet", str(bare), "refs/heads/fleet/t1/w1:refs/heads/fleet/t1/w1")
    fleet.git.run("update-ref", "-d", "refs/heads/fleet/t1/w1")
    m = merge(fleet.path, tick=1)
    [q] = m.quarantined
    assert f"signing.allowed_signers names {SIGNERS}, which main does not have" in q["reason"]


def test_inbox_deltas_are_the_runs_own_and_need_no_signature(origin_fleet: tuple[Fleet, Path], tmp_path: Path,
                                                             keys: dict[str, tuple[Path, str]]) -> None:
    fleet, bare = origin_fleet
    require_signatures(Git(bare), f"w1 {keys['w1'][1]}\n")
    runner = tmp_path / "runner"
    subprocess.run(["git", "clone", "--quiet", str(bare), str(runner)], check=True)
    outbox = tmp_path / "outbox"
    r = work(runner, worker=1, workers=3, remote=str(bare), outbox=outbox)  # no key: the matrix hands files over
    m = merge(runner, tick=1, inbox=(outbox,), remote=str(bare))
    assert m.applied == r.deltas - r.errors and m.quarantined == []
    assert run(Fleet(runner), "validate").exit_code == 0


# -- validate: signing.allowed_signers names a file that allows a key ------------------
#
# A config naming a file main does not have passed validate; then every branch of
# every tick was quarantined unread.

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_SEGMENT = st.text(st.sampled_from("abcxyzABZ019_-."), min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and not s.startswith("."))


def _signing_problems(path: str, content: bytes | None) -> list[str]:
    from fleet.config import parse
    from fleet.world import signers_problems

    files = {p.relative_to(REPO).as_posix(): p.read_bytes()
             for sub in ("state", "schemas") for p in (REPO / sub).rglob("*.json") if p.is_file()}
    raw = json.loads(files["state/config.json"])
    raw["signing"] = {"allowed_signers": path}
    files["state/config.json"] = canonical.dumps(raw)
    if content is not None:
        files[path] = content
    return [f"{file}: {message}" for file, message in signers_problems(parse(files["state/config.json"]), files.get)]


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(_SEGMENT, min_size=1, max_size=3), lines=st.lists(st.sampled_from(
    ["", "   ", "# a comment", "  # indented comment", "w1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFfNUCLvFzA7inp59htrzpn9h8fLUZWJAEswrx4WrCZd"]), max_size=4))
def test_a_signers_file_that_is_missing_or_allows_no_key_is_refused_naming_the_config_key_and_the_path(
        parts: list[str], lines: list[str]) -> None:
    path = "/".join(parts)
    missing = _signing_problems(path, None)
    assert missing == [f"state/config.json: signing.allowed_signers: names {path}, which does not exist: every "
                       "worker branch would be quarantined unread (add the file, in ssh-keygen's allowed-signers "
                       "format)"]
    found = _signing_problems(path, "\n".join(lines).encode())
    allows = any(line.startswith("w1 ") for line in lines)
    assert (found == []) is allows, found
    if not allows:
        assert found[0].startswith(f"state/config.json: signing.allowed_signers: names {path}, which allows no key")


def test_validate_refuses_a_signers_file_the_fleet_lacks(fleet: Fleet) -> None:
    raw = json.loads(fleet.read("state/config.json"))
    raw["signing"] = {"allowed_signers": "keys/nope"}
    (fleet.path / "state" / "config.json").write_bytes(canonical.dumps(raw))
    subprocess.run(["git", "-c", "user.name=P", "-c", "user.email=p@x", "commit", "-qam", "signing"], cwd=fleet.path,
                   check=True)
    r = run(fleet, "validate", code=1)
    assert ("state/config.json: signing.allowed_signers: names keys/nope, which does not exist: every worker branch "
            "would be quarantined unread") in r.output
    (fleet.path / "keys").mkdir()
    (fleet.path / "keys" / "nope").write_text("# nobody yet\n")
    assert "signing.allowed_signers: names keys/nope, which allows no key" in run(fleet, "validate", code=1).output
    (fleet.path / "keys" / "nope").write_text("w1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFfNUCLvFzA7inp59htrzpn9h8fLUZWJAEswrx4WrCZd\n")
    run(fleet, "validate")
