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

import os
import tempfile

from fleet.errors import FleetError
from fleet.git import FLEET_IDENT, Git
from fleet.ids import printable

# %G?: G good, B bad, U good but of unknown validity, X/Y expired, R revoked,
# E cannot be checked, N none
_WHY = {"B": "its signature does not match its content", "N": "its commit is not signed",
        "E": "its signature cannot be checked", "X": "its signature has expired", "Y": "its key has expired",
        "R": "its key is revoked", "U": "it is signed by a key that the allowed signers do not name"}


def signing_key(git: Git, where: str) -> str:
    """The SSH key this machine signs worker commits with (``git config
    user.signingkey``), or a one-line error saying how to set it."""
    key = git.proc("config", "--get", "user.signingkey").stdout.decode().strip()
    if not key:
        raise FleetError(f"{where}: signing.allowed_signers is set, so worker branches must be signed: set "
                         "git config user.signingkey to your SSH key (a file such as ~/.ssh/id_ed25519.pub, or "
                         "the key itself), whose public key main's allowed signers name for this worker; "
                         "or hand the deltas over with --outbox")
    return key


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
        reason = printable(p.stderr.decode(errors="replace").strip().splitlines()[-1] if p.stderr.strip() else
                           f"git commit-tree exited {p.returncode}", 300)
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
