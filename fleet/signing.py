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
        program = git.proc("config", "--get", "gpg.ssh.program").stdout.decode().strip() or "ssh-keygen"
        p = _ssh_keygen("-Y", "sign", "-n", NAMESPACE, "-f", str(keyfile), *(["-U"] if literal else []), str(probe),
                        program=program)  # the program git signs with (a password manager's, say)
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


def _ssh_keygen(*args: str, data: bytes = b"", program: str = "ssh-keygen") -> subprocess.CompletedProcess[bytes]:
    """ssh-keygen, never waiting for a person: no terminal (a session of its
    own), nothing on stdin, no askpass program; stopped after SIGN_SECONDS."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY")}
    try:
        return subprocess.run([os.path.expanduser(program), *args], input=data, capture_output=True, env=env,
                              timeout=SIGN_SECONDS, start_new_session=True)
    except (FileNotFoundError, PermissionError):
        raise FleetError(f"{printable(program, 200)} cannot be run: git signs worker branches with it (install "
                         "OpenSSH's client, or fix git config gpg.ssh.program), or hand the deltas over with "
                         "--outbox") from None
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


# -- reading an allowed-signers file as OpenSSH does (sshsig.c) -----------------
#
# A line OpenSSH cannot parse is skipped, with a message only in ssh-keygen's
# debug output: the key it meant is simply not allowed, and every branch signed
# with it is quarantined. So fleet validate reads the file line by line.

# key type -> the fields of its public key blob after the type ("s" a string, "m" an
# mpint, "c" a certificate's rest, unchecked), and, for ECDSA, the curve it names
_KEYS: dict[str, tuple[str, str]] = {
    "ssh-ed25519": ("s", ""), "sk-ssh-ed25519@openssh.com": ("ss", ""), "ssh-rsa": ("mm", ""),
    "ssh-dss": ("mmmm", ""), "ecdsa-sha2-nistp256": ("ss", "nistp256"), "ecdsa-sha2-nistp384": ("ss", "nistp384"),
    "ecdsa-sha2-nistp521": ("ss", "nistp521"), "sk-ecdsa-sha2-nistp256@openssh.com": ("sss", "nistp256"),
}
_KEYS.update({f"{k.split('@')[0]}-cert-v01@openssh.com": ("c", "") for k in list(_KEYS)})
_POINT = {"nistp256": 65, "nistp384": 97, "nistp521": 133}  # an uncompressed point: 0x04, x, y
# each curve's prime p, constant b (a is p - 3) and order n, as openssl ecparam -param_enc explicit gives them
_CURVES = {
    "nistp256": (0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff,
                 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b,
                 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551),
    "nistp384": (int("f" * 64 + "effffffff0000000000000000ffffffff", 16),
                 int("b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
                     16),
                 int("f" * 48 + "c7634d81f4372ddf581a0db248b0a77aecec196accc52973", 16)),
    "nistp521": (2 ** 521 - 1,
                 int("51953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1b"
                     "f073573df883d2c34f1ef451fd46b503f00", 16),
                 int("1" + "f" * 64 + "a51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409", 16)),
}
_WHITE = " \t\r\n"


def signer_lines(data: bytes) -> tuple[int, list[tuple[int, str]]]:
    """How many lines of an allowed-signers file OpenSSH would read as a key
    for some principal, and (line number, why) for each it would skip. Blank
    lines and lines of remarks (#) are neither."""
    usable, bad = 0, []
    for n, raw in enumerate(data.split(b"\n"), 1):
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not line.lstrip(" \t") or line.lstrip(" \t").startswith("#"):
            continue
        why = signer_line(line)
        if why is None:
            usable += 1
        else:
            bad.append((n, why))
    return usable, bad


def signer_line(line: str) -> str | None:
    """Why OpenSSH would skip this allowed-signers line (``principals
    [options] keytype base64 [comment]``), or None if it reads a key from it."""
    principals, after = _principals(line.lstrip(" \t"))
    if principals is None:
        return "a quotation mark in the principals is not closed"
    if not principals or after is None or not after.strip(_WHITE):
        return "it names no key after the principals"
    rest = after
    first = _key(rest)
    if first is None:
        return None
    if rest.split(None, 1)[0] in _KEYS:  # a key type where options would be: the key is what is wrong
        return first
    options, rest = _options(rest)
    if options is None:
        return "a quotation mark in the options is not closed"
    if not rest:
        return f"no key comes after the principals ({printable(options, 40)!r} is not an SSH key type)"
    why = _key(rest)
    if why is not None:
        return why
    return _options_problem(options)


def _principals(s: str) -> tuple[str | None, str | None]:
    """The first word (a quoted part may hold spaces) and the rest, as
    OpenSSH's strdelimw splits them; (None, None) if a quotation is not closed."""
    at = next((i for i, c in enumerate(s) if c in _WHITE + '"'), None)
    if at is None:
        return s, None
    if s[at] == '"':
        end = s.find('"', at + 1)
        if end < 0:
            return None, None
        return s[:at] + s[at + 1:end], s[end + 1:].lstrip(_WHITE)
    return s[:at], s[at + 1:].lstrip(_WHITE)


def _options(s: str) -> tuple[str | None, str]:
    """The options (up to a blank outside quotes) and the rest, blanks skipped."""
    quoted, i = False, 0
    while i < len(s) and (quoted or s[i] not in " \t"):
        if s[i] == "\\" and s[i + 1:i + 2] == '"':
            i += 1
        elif s[i] == '"':
            quoted = not quoted
        i += 1
    if quoted:
        return None, ""
    return s[:i], s[i:].lstrip(" \t")


def _options_problem(options: str) -> str | None:
    """What OpenSSH's sigopts_parse refuses in the options: one it does not know,
    a value not quoted, a time that is no time, a clause twice, a comma last."""
    rest, seen = options, set()
    while rest:
        lower = rest.lower()
        if lower.startswith("cert-authority"):
            rest = rest[len("cert-authority"):]
        else:
            name = next((n for n in ("namespaces", "valid-after", "valid-before") if lower.startswith(n + "=")), None)
            if name is not None:
                if name in seen:
                    return f"option {name} is given twice"
                seen.add(name)
                value, rest = _dequote(rest[len(name) + 1:])
                if value is None:
                    return f"option {name} is not a quoted value ({name}=\"...\")"
                if name != "namespaces" and not _timestamp(value):
                    return f"option {name}=\"{printable(value, 40)}\" is not a time (YYYYMMDD or YYYYMMDDHHMM[SS], Z for UTC)"
        if not rest:
            break
        if rest[0] != ",":
            return f"option {printable(rest.split(',', 1)[0], 40)!r} is not one OpenSSH knows (cert-authority, " \
                   "namespaces=\"...\", valid-after=\"...\", valid-before=\"...\")"
        rest = rest[1:]
        if not rest:
            return "the options end in a comma"
    return None


def _dequote(s: str) -> tuple[str | None, str]:
    """A quoted value (``\\"`` a quotation mark in it) and the rest after it; None if it is not one."""
    if not s.startswith('"'):
        return None, s
    value, i = "", 1
    while i < len(s) and s[i] != '"':
        if s[i] == "\\" and s[i + 1:i + 2] == '"':
            i += 1
        value += s[i]
        i += 1
    return (value, s[i + 1:]) if i < len(s) else (None, s)


def _timestamp(value: str) -> bool:
    digits = value[:-1] if value.endswith(("Z", "z")) else value
    return digits.isascii() and digits.isdigit() and len(digits) in (8, 12, 14)


def _key(s: str) -> str | None:
    """Why ``<keytype> <base64>...`` is not a public key OpenSSH reads, or None."""
    kind, _, rest = s.lstrip(_WHITE).partition(" ")
    kind = kind.split("\t", 1)[0]
    rest = s.lstrip(_WHITE)[len(kind):].lstrip(_WHITE)
    if kind not in _KEYS:
        return f"{printable(kind, 40)!r} is not an SSH key type"
    text = rest.split(None, 1)[0] if rest.split(None, 1) else ""
    if not text:
        return f"no key comes after the key type {kind}"
    try:
        blob = base64.b64decode(text, validate=True)
    except ValueError:
        return f"the {kind} key is not base64"
    named, at = _string(blob, 0)
    if named != kind.encode():
        return f"the key after {kind} is not a {kind} key"
    fields, curve = _KEYS[kind]
    if fields == "c":
        return None if at < len(blob) else f"the {kind} certificate is cut short"
    parts = []
    for f in fields:
        part, at = _string(blob, at)
        if part is None:
            return f"the {kind} key is cut short"
        if f == "m" and part[:1] >= b"\x80":
            return f"the {kind} key holds a negative number"
        parts.append(part)
    if at != len(blob):
        return f"the {kind} key has bytes after its end"
    if kind.endswith("ed25519") or kind.endswith("ed25519@openssh.com"):
        return None if len(parts[0]) == 32 else f"the {kind} key is {len(parts[0])} bytes, not 32"
    if curve:
        if parts[0] != curve.encode() or len(parts[1]) != _POINT[curve] or parts[1][:1] != b"\x04" or \
                not _on_curve(curve, parts[1][1:]):
            return f"the {kind} key is not a point on {curve}"
        return None
    if kind == "ssh-rsa" and int.from_bytes(parts[1], "big").bit_length() < 1024:
        return "the ssh-rsa key is shorter than 1024 bits, which OpenSSH refuses"
    return None


def _on_curve(curve: str, xy: bytes) -> bool:
    """Whether (x, y) is a point OpenSSH takes as a public key on ``curve``
    (sshkey_ec_validate_public): on the curve (whose order is prime, so in its
    group), neither coordinate small, both below the order less one."""
    p, b, n = _CURVES[curve]
    half = len(xy) // 2
    x, y = int.from_bytes(xy[:half], "big"), int.from_bytes(xy[half:], "big")
    if x >= p or y >= p or (y * y - (x * x * x - 3 * x + b)) % p:
        return False
    return min(x.bit_length(), y.bit_length()) > n.bit_length() // 2 and max(x, y) < n - 1
