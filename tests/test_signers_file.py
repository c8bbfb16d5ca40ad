"""An allowed-signers file is read as OpenSSH reads it (fleet.signing.signer_lines):
a line counts only if ssh-keygen would take a key from it. The oracle is
ssh-keygen itself: `ssh-keygen -l` for the key, `ssh-keygen -Y find-principals`
for a whole line, over generated lines."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.signing import signer_line, signer_lines

KINDS = {"ed25519": [], "ecdsa": ["-b", "256"], "rsa": ["-b", "1024"]}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("signers")
    out = {}
    for kind, extra in KINDS.items():
        key = folder / kind
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", kind, "-f", str(key)], check=True)
        out[kind] = (key, (folder / f"{kind}.pub").read_text().split(" ", 2)[0] + " " +
                     (folder / f"{kind}.pub").read_text().split(" ", 2)[1])
    (folder / "probe").write_bytes(b"probe\n")
    for kind in KINDS:
        subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", str(folder / kind), str(folder / "probe")],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        (folder / "probe.sig").rename(folder / f"{kind}.sig")
    return out


def _mutate(pub: str, how: str, at: int) -> str:
    kind, text = pub.split(" ")
    blob = base64.b64decode(text)
    if how == "truncate-text":
        return f"{kind} {text[:at % len(text)]}"
    if how == "truncate-blob":
        return f"{kind} {base64.b64encode(blob[:at % len(blob)]).decode()}"
    if how == "append":
        return f"{kind} {base64.b64encode(blob + bytes([at % 256]) * (1 + at % 3)).decode()}"
    if how == "char":
        i = at % len(text)
        return f"{kind} {text[:i]}{'!@A/_-='[at % 7]}{text[i + 1:]}"
    if how == "other-type":
        others = [k for k in ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384") if k != kind]
        return f"{others[at % len(others)]} {text}"
    if how == "flip":
        i = at % len(blob)
        return f"{kind} {base64.b64encode(blob[:i] + bytes([blob[i] ^ (1 << (at % 8))]) + blob[i + 1:]).decode()}"
    return pub


HOW = st.sampled_from(["same", "truncate-text", "truncate-blob", "append", "char", "other-type", "flip"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(KINDS)), how=HOW, at=st.integers(0, 10_000))
def test_a_key_counts_exactly_when_ssh_keygen_reads_it(keys: dict[str, tuple[Path, str]], tmp_path: Path, kind: str,
                                                       how: str, at: int) -> None:
    key = _mutate(keys[kind][1], how, at)
    f = tmp_path / "one.pub"
    f.write_text(key + "\n")
    openssh = subprocess.run(["ssh-keygen", "-l", "-f", str(f)], capture_output=True).returncode == 0
    ours = signer_line(f"w1 {key}")
    assert (ours is None) is openssh, (key, ours)


PRINCIPALS = st.sampled_from(["w1", "w1,w2", "w*", '"w1"', '"w1 w2"', '"w1', "w1\t", ""])
OPTIONS = st.sampled_from(["", 'namespaces="git"', 'namespaces="git,file"', 'valid-after="20200101"',
                           'valid-after="202001011200Z"', 'valid-after="2020"', "bogus", 'bogus="x"', 'namespaces="git',
                           'namespaces=git', 'namespaces="git",valid-after="20200101"', 'namespaces="a\\"b"',
                           ',namespaces="git"', 'namespaces="git",', 'NAMESPACES="git"', 'namespaces="a",namespaces="b"',
                           'valid-before="29991231"', 'namespaces="git"x'])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(KINDS)), principals=PRINCIPALS, options=OPTIONS, how=HOW, at=st.integers(0, 10_000),
       comment=st.sampled_from(["", " a comment", "\tw2"]))
def test_a_line_counts_exactly_when_ssh_keygen_finds_a_principal_in_it(
        keys: dict[str, tuple[Path, str]], tmp_path: Path, kind: str, principals: str, options: str, how: str,
        at: int, comment: str) -> None:
    key = _mutate(keys[kind][1], how, at)
    line = " ".join(p for p in (principals, options, key) if p) + comment
    f = tmp_path / "allowed"
    f.write_text(f"# people\n\n{line}\n")
    sig = keys[kind][0].with_suffix(".sig")
    found = subprocess.run(["ssh-keygen", "-Y", "find-principals", "-f", str(f), "-s", str(sig)], capture_output=True)
    usable, bad = signer_lines(f.read_bytes())
    if found.returncode == 0:  # ssh-keygen took the line (and the key is the signer's)
        assert (usable, bad) == (1, []), line
    elif how == "same":  # the key is the signer's: ssh-keygen skipped the line
        assert usable == 0 and [n for n, _ in bad] == [3], line


@pytest.mark.parametrize("line", ["w1 ssh-ed25519 notbase64!!", "junk only", "w1", "w1 ssh-ed25519",
                                  "w1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample", 'w1 bogus="x" ssh-ed25519 AAAA'])
def test_lines_that_allow_no_key_are_named(line: str) -> None:
    usable, [(n, why)] = signer_lines(f"# a comment\n{line}\n".encode())
    assert usable == 0 and n == 2 and why and "\n" not in why


# -- fleet validate refuses a file that allows no key, names the lines OpenSSH skips ------

import json  # noqa: E402

from conftest import Fleet, run  # noqa: E402

from fleet import canonical  # noqa: E402
from fleet.config import parse  # noqa: E402
from fleet.world import signers_problems  # noqa: E402

GOOD = "w1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFfNUCLvFzA7inp59htrzpn9h8fLUZWJAEswrx4WrCZd"
BAD = ["w1 ssh-ed25519 notbase64!!", "junk only", "w2", "w1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
       "w1 ssh-rsa " + GOOD.split()[2], 'w1 bogus="x" ' + GOOD.split(" ", 1)[1], '"w1 ' + GOOD.split(" ", 1)[1]]
QUIET = ["", "  ", "# a comment", "\t# indented"]


def _config(path: str = "keys/allowed_signers") -> bytes:
    raw = json.loads((Path(__file__).resolve().parents[1] / "state" / "config.json").read_bytes())
    raw["signing"] = {"allowed_signers": path}
    return canonical.dumps(raw)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.sampled_from([GOOD, *BAD, *QUIET]), max_size=6))
def test_validate_counts_only_lines_openssh_reads_and_names_the_others(lines: list[str]) -> None:
    path = "keys/allowed_signers"
    found = signers_problems(parse(_config(path)), {path: "\n".join(lines).encode()}.get)
    good = lines.count(GOOD)
    bad = [n for n, line in enumerate(lines, 1) if line in BAD]
    refused = [m for f, m in found if f == "state/config.json"]
    assert bool(refused) is (good == 0), found
    if refused:
        assert refused == [f"signing.allowed_signers: names {path}, which allows no key: every worker branch would "
                           "be quarantined unread (one line a worker: '<worker> <key type> <key>')"]
    named = [m for f, m in found if f == path]
    assert [int(m.split(":")[0].removeprefix("line ")) for m in named] == bad
    assert all("OpenSSH skips it" in m and "\n" not in m for m in named)


def _commit(fleet: Fleet) -> None:
    subprocess.run(["git", "add", "-A"], cwd=fleet.path, check=True)
    subprocess.run(["git", "-c", "user.name=P", "-c", "user.email=p@x", "commit", "-qm", "signing"], cwd=fleet.path,
                   check=True)


def test_validate_refuses_the_walkthroughs_file_and_says_what_a_link_or_folder_is(fleet: Fleet) -> None:
    (fleet.path / "state" / "config.json").write_bytes(_config())
    keys = fleet.path / "keys"
    keys.mkdir()
    (keys / "allowed_signers").write_text("w1 ssh-ed25519 notbase64!!\njunk only\n")
    _commit(fleet)
    out = run(fleet, "validate", code=1).output
    assert "signing.allowed_signers: names keys/allowed_signers, which allows no key" in out
    assert "keys/allowed_signers: line 1: OpenSSH skips it, so the key it meant is not allowed: the ssh-ed25519 key " \
           "is not base64" in out
    assert "keys/allowed_signers: line 2: OpenSSH skips it" in out
    (keys / "allowed_signers").write_text(f"{GOOD}\njunk only\n")  # one good line: the bad one is still named
    out = run(fleet, "validate", code=1).output
    assert "allows no key" not in out and "keys/allowed_signers: line 2: OpenSSH skips it" in out
    (keys / "allowed_signers").write_text(f"# the workers\n{GOOD}\n")
    run(fleet, "validate")
    (keys / "real").write_text(f"{GOOD}\n")
    (keys / "allowed_signers").unlink()
    (keys / "allowed_signers").symlink_to("real")
    out = run(fleet, "validate", code=1).output
    assert "names keys/allowed_signers, which is a symbolic link, not a regular file" in out, out
    (keys / "allowed_signers").unlink()
    (keys / "allowed_signers").mkdir()
    out = run(fleet, "validate", code=1).output
    assert "names keys/allowed_signers, which is a folder, not a regular file" in out, out
