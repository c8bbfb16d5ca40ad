"""Signed deltas: workers off GitHub sign their branch commits, the merge checks them.

With ``signing.allowed_signers`` in config, a file of main in ssh-keygen's
allowed-signers format (``<principal> <key type> <key>`` per line), every
worker branch ``fleet/t<tick>/<worker>`` must end in a commit signed (SSH
signing, as git 2.34 and later make it) by a key that file allows for the
principal ``<worker>``. The merge verifies all the branch tips in one git
process; the delta files of a branch that fails are quarantined by name,
their content unread, with the reason. The signature of the tip covers its
whole tree, so every delta file on the branch.

What it trusts: main's copy of the allowed signers (main is written by the
merge and by people's reviewed pull requests), and the keys in it. Deltas
handed to the merge through an inbox (``--inbox``: the matrix on GitHub
Actions, whose workers pass them as artifacts of the same run) are not
signed: they are trusted as the run is, by GitHub's identity of the
workflow run that made them.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from pathlib import Path

from fleet.errors import FleetError
from fleet.git import FLEET_IDENT, Git
from fleet.ids import printable

# %G?: G good, B bad, U good but of unknown validity, X/Y expired, R revoked,
# E cannot be checked, N none
_WHY = {"B": "its signature does not match its content", "N": "its commit is not signed",
        "E": "its signature cannot be checked", "X": "its signature has expired", "Y": "its key has expired",
        "R": "its key is revoked", "U": "it is signed by a key that the allowed signers do not name"}


SIGN_SECONDS = 30.0  # ssh-keygen signs a few bytes in milliseconds; a key that waits for a person never answers
NAMESPACE = "git"  # what git signs commits in, and verifies them in


def signing_key(git: Git, where: str, worker: str = "", path: str = "", allowed: bytes | None = None) -> str:
    """The SSH key this machine signs worker commits with (``git config
    user.signingkey``), checked before any turn spends a token: it must sign
    (a file that exists, no passphrase ssh-agent does not hold) and main's
    allowed signers ``allowed`` (at ``path``) must allow it for ``worker``.
    Else a one-line error saying what is wrong and what to do. A key file named
    by a relative path is made absolute (git signs in the worker's cache)."""
    key = git.proc("config", "--get", "user.signingkey").stdout.decode().strip()
    if not key:
        raise FleetError(f"{where}: signing.allowed_signers is set, so worker branches must be signed: set "
                         "git config user.signingkey to your SSH key (a file such as ~/.ssh/id_ed25519.pub, or "
                         "the key itself), whose public key main's allowed signers name for this worker; "
                         "or hand the deltas over with --outbox")
    literal = key.startswith(("ssh-", "key::", "ecdsa-", "sk-"))
    if not literal:
        key = str(Path(git.path) / os.path.expanduser(key))
    if not worker:
        return key
    shown = printable(key, 200)
    with tempfile.TemporaryDirectory(prefix="fleet-sign-") as d:
        probe = Path(d) / "probe"
        probe.write_bytes(f"fleet: may {worker} sign with this key?\n".encode())
        if literal:
            keyfile = Path(d) / "key.pub"
            keyfile.write_text(key.removeprefix("key::") + "\n")
        else:
            keyfile = Path(key)
            if not keyfile.is_file():
                what = "does not exist" if not os.path.lexists(keyfile) else (
                    "is a folder" if keyfile.is_dir() else "is not a file")
                raise FleetError(f"git config user.signingkey names {shown}, which {what}: set it to your SSH key's "
                                 "file (git config user.signingkey ~/.ssh/id_ed25519), or hand the deltas over "
                                 "with --outbox")
        p = _ssh_keygen("-Y", "sign", "-n", NAMESPACE, "-f", str(keyfile), *(["-U"] if literal else []), str(probe))
        if p.returncode != 0:
            raise FleetError(f"cannot sign with user.signingkey {shown}: {_why_unsigned(p, keyfile, literal)}")
        signature = Path(f"{probe}.sig")
        public = _signer(signature.read_bytes())
        line = f"{worker} {public}" if public else f"{worker} <the public key of {shown}>"
        if allowed is None:
            raise FleetError(f"signing.allowed_signers names {path}, which main does not have: the merge would "
                             f"quarantine this worker's branch unread (add it to main with the line '{line}')")
        signers = Path(d) / "allowed_signers"
        signers.write_bytes(allowed)
        ok = _ssh_keygen("-Y", "verify", "-f", str(signers), "-I", worker, "-n", NAMESPACE, "-s", str(signature),
                         data=probe.read_bytes())
        if ok.returncode == 0:
            return key
        found = _ssh_keygen("-Y", "find-principals", "-f", str(signers), "-s", str(signature))
        others = [printable(w, 80) for w in found.stdout.decode(errors="replace").split()] if found.returncode == 0 else []
        if others:
            raise FleetError(f"main's {path} allows the key of user.signingkey ({shown}) for {', '.join(others)}, "
                             f"not for worker {worker}: the merge would quarantine this worker's branch (run this "
                             f"worker with the key allowed for {worker}, or add the line '{line}' to {path} on main)")
        raise FleetError(f"main's {path} does not allow the key of user.signingkey ({shown}) for worker {worker}: "
                         f"the merge would quarantine this worker's branch (add the line '{line}' to {path} on "
                         "main, or set user.signingkey to the key it allows)")


def _ssh_keygen(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """ssh-keygen, never waiting for a person: no terminal (a session of its
    own), nothing on stdin, no askpass program; stopped after SIGN_SECONDS."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY")}
    try:
        return subprocess.run(["ssh-keygen", *args], input=data, capture_output=True, env=env, timeout=SIGN_SECONDS,
                              start_new_session=True)
    except FileNotFoundError:
        raise FleetError("ssh-keygen is not installed: git signs worker branches with it (install OpenSSH's "
                         "client), or hand the deltas over with --outbox") from None
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, b"", f"ssh-keygen gave no answer in {SIGN_SECONDS:g}s".encode())


def _why_unsigned(p: subprocess.CompletedProcess[bytes], keyfile: Path, literal: bool) -> str:
    """Why ssh-keygen could not sign, in fleet's words, and what to do."""
    said = p.stderr.decode(errors="replace")
    if literal:
        return ("user.signingkey holds a public key, so ssh-agent must hold its private key, and it does not "
                f"(ssh-add the key's file; ssh-keygen said: {_last(said)})")
    if "passphrase" in said or _encrypted(keyfile):
        return (f"the key has a passphrase and ssh-agent does not hold it: a worker cannot ask for it (run "
                f"ssh-add {printable(str(keyfile), 200)} first)")
    return f"ssh-keygen cannot use it as an SSH key ({_last(said)})"


def _last(said: str) -> str:
    lines = [ln.strip() for ln in said.splitlines() if ln.strip() and not ln.startswith(("Signing file", "Enter "))]
    return printable((lines[-1] if lines else "no reason given").rstrip("?"), 300)


def _encrypted(keyfile: Path) -> bool:
    """Whether an OpenSSH private key file is protected by a passphrase (its cipher is not 'none')."""
    try:
        text = keyfile.read_bytes()[:65536].decode("ascii")
        body = text.split("-----BEGIN OPENSSH PRIVATE KEY-----", 1)[1].split("-----END", 1)[0]
        blob = base64.b64decode("".join(body.split()))
    except (OSError, UnicodeDecodeError, IndexError, ValueError):
        return False
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        return False
    cipher, _ = _string(blob, len(magic))
    return cipher is not None and cipher != b"none"


def _signer(armored: bytes) -> str:
    """The public key (``<type> <base64>``) inside an SSH signature, or ''."""
    try:
        text = armored.decode("ascii")
        body = text.split("-----BEGIN SSH SIGNATURE-----", 1)[1].split("-----END", 1)[0]
        blob = base64.b64decode("".join(body.split()))
    except (UnicodeDecodeError, IndexError, ValueError):
        return ""
    if not blob.startswith(b"SSHSIG") or len(blob) < 10:
        return ""
    public, _ = _string(blob, 10)  # magic, uint32 version, string public key
    kind, _ = _string(public or b"", 0)
    if not public or not kind:
        return ""
    return f"{kind.decode(errors='replace')} {base64.b64encode(public).decode()}"


def _string(blob: bytes, at: int) -> tuple[bytes | None, int]:
    """The SSH wire string (uint32 length, bytes) at ``at``, and where the next begins; None if cut short."""
    if at + 4 > len(blob):
        return None, at
    n = int.from_bytes(blob[at:at + 4], "big")
    if at + 4 + n > len(blob):
        return None, at
    return blob[at + 4:at + 4 + n], at + 4 + n


def sign(git: Git, commit: str, key: str) -> str:
    """``commit`` again with the same tree, parents and message, signed with ``key``."""
    tree = git.text("rev-parse", f"{commit}^{{tree}}")
    parents = git.text("rev-list", "--parents", "-n", "1", commit).split()[1:]
    message = git.run("log", "-1", "--format=%B", commit)
    name, email = FLEET_IDENT
    args = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", f"user.name={name}", "-c",
            f"user.email={email}", "commit-tree", tree, f"-S{key}"]
    for parent in parents:
        args += ["-p", parent]
    p = git.proc(*args, input=message)
    if p.returncode != 0:
        said = p.stderr.decode(errors="replace")
        reason = _last(said.replace("error:", "").replace("fatal:", "")) if said.strip() else \
            f"git commit-tree exited {p.returncode}"
        raise FleetError(f"could not sign the worker's commit with user.signingkey: {reason}")
    return p.stdout.decode().strip()


def verify(git: Git, tips: dict[str, tuple[str, str]], allowed: bytes | None, name: str) -> dict[str, str]:
    """Why each worker branch's tip is not acceptable (branch -> reason); a branch
    not in the answer is signed by a key ``allowed`` names for its worker.
    ``tips``: branch -> (tip commit, worker); ``name``: the allowed signers'
    path on main, for the reasons."""
    if not tips:
        return {}
    if allowed is None:
        return {b: f"signing.allowed_signers names {name}, which main does not have: no signature can be "
                   "checked" for b in tips}
    with tempfile.NamedTemporaryFile("wb", prefix="fleet-signers-", delete=False) as f:
        f.write(allowed)
    try:
        commits = sorted({c for c, _ in tips.values()})
        p = git.proc("-c", f"gpg.ssh.allowedSignersFile={f.name}", "log", "--no-walk=unsorted",
                     "--format=%H %G? %GS", *commits)
    finally:
        os.unlink(f.name)
    seen: dict[str, tuple[str, str]] = {}
    for line in p.stdout.decode(errors="replace").splitlines():
        sha, _, rest = line.partition(" ")
        code, _, principal = rest.partition(" ")
        seen[sha] = (code, principal.strip())
    out = {}
    for branch, (commit, worker) in tips.items():
        code, principal = seen.get(commit, ("E", ""))
        if code == "G" and principal == worker:
            continue
        if code == "G":
            out[branch] = (f"its commit is signed by {printable(principal, 80)}, but the branch is worker "
                           f"{worker}'s ({name} must allow the key for {worker})")
        else:
            out[branch] = f"{_WHY.get(code, f'its signature is not good ({code})')} ({name}, signing.allowed_signers)"
    return out
