"""Every git call fleet makes goes through this module.

Git is the clock, the log, the lock and the bus, so this is where retries,
environment hygiene and git's error messages are turned into fleet's. The
merge engine never needs a working tree: it reads objects with ``cat-file``
and writes commits with ``fast-import``, so nobody's checkout is touched.
"""

from __future__ import annotations

import functools
import os
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from fleet import keys
from fleet.errors import FleetError

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
FLEET_IDENT = ("fleet", "fleet@localhost")
# ls-tree's records as three NUL-ended fields, for :meth:`Git.ls_tree` to slice
_LS_FORMAT = "--format=%(objectname)%x00%(path)%x00%(objectmode)"
_STRIP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_PREFIX")


# git commands that talk to a remote. git bounds none of them on git:// or ssh: a server that
# accepted the connection and never answers (a git daemon whose log nobody reads blocks
# writing it, a half-open connection) keeps the client waiting for ever, and with it a
# claimer, a holder's complete or the watchdog. So each runs under a bound.
NETWORK = frozenset({"fetch", "ls-remote", "push", "clone", "pull"})
DEFAULT_NETWORK_TIMEOUT = 600.0  # seconds; FLEET_GIT_TIMEOUT overrides it (0: no bound)
MAX_NETWORK_TIMEOUT = 7 * 86400.0  # a week: beyond it, a bound in name only (and past what a wait can take)


def network_timeout() -> float | None:
    """The bound, in seconds, on one git command that talks to a remote (None: none):
    ``FLEET_GIT_TIMEOUT``, or less within a :func:`network_deadline`."""
    raw = os.environ.get("FLEET_GIT_TIMEOUT", "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_NETWORK_TIMEOUT
    except ValueError:
        seconds = -1.0
    # inf, nan, 1e400 or a negative number bound nothing, or crash the wait: refused as words are
    if not 0 <= seconds <= MAX_NETWORK_TIMEOUT:
        raise FleetError(f"FLEET_GIT_TIMEOUT={raw[:40]!r}: expected a number of seconds from 0 to "
                         f"{MAX_NETWORK_TIMEOUT:.0f} (0: no bound)")
    bound = seconds if seconds > 0 else None
    if _DEADLINES:  # a command's own deadline (fleet work --timeout): a remote that does not answer eats none of it
        left = max(1.0, _DEADLINES[-1] - time.monotonic())
        bound = left if bound is None else min(bound, left)
    return bound


_DEADLINES: list[float] = []  # time.monotonic() by which network commands must end (network_deadline)


@contextmanager
def network_deadline(at: float | None) -> Iterator[None]:
    """Within the block, a git command that talks to a remote ends by ``at`` (a
    ``time.monotonic()``; None: no deadline beyond FLEET_GIT_TIMEOUT's), at least
    a second from when it starts."""
    if at is None:
        yield
        return
    _DEADLINES.append(at)
    try:
        yield
    finally:
        _DEADLINES.pop()


def no_answer(seconds: float) -> str:
    """git's words for a remote that did not answer in time, as fleet says them."""
    return (f"fatal: the remote did not answer within {seconds:g} s (stopped; FLEET_GIT_TIMEOUT sets the bound)")


def _verb(args: Sequence[str]) -> str:
    return next((a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] != "-c")), "")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STRIP}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_CONFIG_NOSYSTEM="1")
    # over http(s), a transfer that moves under 1 KB/s for a minute is stopped by git itself
    env.setdefault("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
    env.setdefault("GIT_HTTP_LOW_SPEED_TIME", "60")
    # glibc gives the heap back to the system whenever 128 KB are free at its top, and takes it
    # again at the next allocation: git fast-import, writing one tick's 17,838 documents, made
    # 71,739 brk calls, half its time on a virtual machine (2.1 s, 0.9 of it in the kernel). Kept
    # until the (short-lived) process ends, and grown 64 MB at a time, it is 1.0 s, 0.02 in the kernel.
    # Memory not touched is not resident; a value the user set stands.
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(256 << 20))
    env.setdefault("MALLOC_TOP_PAD_", str(64 << 20))
    return env


# ssh, left to itself, waits on an address that does not answer for as long as the kernel
# retries (two minutes and more) and asks at the terminal for a passphrase or a host key. For a
# remote, fleet's ssh gives up a connection after 30 s, and on a server silent for a minute, and
# never asks: the error is ssh's own one line. GIT_SSH_COMMAND, GIT_SSH or core.sshCommand, when
# the user set one, is used as set.
SSH_COMMAND = "ssh -o ConnectTimeout=30 -o BatchMode=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=4"


def _network_env(path: Path) -> dict[str, str]:
    """The environment of a git command that talks to a remote."""
    env = _env()
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env and not _ssh_configured(str(path)):
        env["GIT_SSH_COMMAND"] = SSH_COMMAND
    return env


@functools.lru_cache(maxsize=64)
def _ssh_configured(path: str) -> bool:
    p = subprocess.run(["git", "config", "--get", "core.sshCommand"], cwd=path, capture_output=True, env=_env())
    return p.returncode == 0


@dataclass(frozen=True)
class RefInfo:
    name: str
    commit: str
    tree: str


@dataclass(frozen=True)
class RefUpdate:
    """One ref a push moves: to ``new`` (None deletes it) if the remote has it
    at ``old`` (None: only if it does not exist yet)."""

    ref: str  # the full name on the remote, refs/heads/...
    new: str | None
    old: str | None


@dataclass(frozen=True)
class PushResult:
    """What a compare-and-swap push came to, and git's reason when it did not win."""

    outcome: Literal["won", "lost", "refused"]
    reason: str = ""


@dataclass(frozen=True)
class Commit:
    """A commit as its object says: for readers of history that must take any bytes."""

    sha: str
    parents: tuple[str, ...]
    author: str  # "name <email>", as git log's %an <%ae> prints it
    committed: int  # the committer's time, seconds since the epoch
    message: str  # decoded as git.decode does: a byte that is not UTF-8 kept, escaped where shown

    @classmethod
    def parse(cls, sha: str, raw: bytes) -> Commit:
        end = raw.find(b"\n\n")
        head, message = (raw[:end], raw[end + 2:]) if end >= 0 else (raw, b"")
        parents: list[str] = []
        author, committed = "", 0
        for line in head.split(b"\n"):
            key, _, value = line.partition(b" ")
            if key == b"parent":
                parents.append(value.decode("ascii", errors="replace"))
            elif key == b"author":
                author = decode(value.rsplit(b" ", 2)[0]) if value.count(b" ") >= 2 else decode(value)
            elif key == b"committer":
                stamp = value.rsplit(b" ", 2)
                committed = int(stamp[1]) if len(stamp) == 3 and stamp[1].isdigit() else 0
        return cls(sha, tuple(parents), author, committed, decode(message))


class Git:
    """Git commands run in one repository."""

    _ls_format = True  # this git has ``ls-tree --format`` (2.36 and later): found out once a process

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    # -- running -------------------------------------------------------
    def proc(self, *args: str, input: bytes | None = None, spill: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run git; the caller reads the return code. With ``spill``, git writes
        its output to a temporary file that is read in one go: tens of megabytes
        through a pipe cost Python a third of a second of wake-ups and copies.
        A command that talks to a remote (``NETWORK``) is stopped after
        ``network_timeout()``: it then fails (exit 128) with fleet's words for it."""
        timeout, env = (network_timeout(), _network_env(self.path)) if _verb(args) in NETWORK else (None, _env())
        try:
            if not spill:
                return subprocess.run(["git", *args], cwd=self.path, input=input, capture_output=True, env=env,
                                      timeout=timeout)
            import tempfile  # here: with shutil, bz2 and lzma it is a tenth of a short command's start

            with tempfile.TemporaryFile() as out:
                p = subprocess.run(["git", *args], cwd=self.path, input=input, stdout=out, stderr=subprocess.PIPE,
                                   env=env, timeout=timeout)
                out.seek(0)
                return subprocess.CompletedProcess(p.args, p.returncode, out.read(), p.stderr)
        except subprocess.TimeoutExpired:  # (subprocess.run has killed git and waited for it)
            assert timeout is not None
            return subprocess.CompletedProcess(["git", *args], 128, b"", no_answer(timeout).encode() + b"\n")

    def run(self, *args: str, input: bytes | None = None, spill: bool = False) -> bytes:
        p = self.proc(*args, input=input, spill=spill)
        if p.returncode:
            lines = [ln.strip() for ln in p.stderr.decode(errors="replace").splitlines() if ln.strip()]
            # git's useful line is often the first ("fatal: ..."), the last only adds advice
            fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
            detail = "; ".join(fatal[:2] or lines[-2:]) or f"exit {p.returncode}"
            raise FleetError(f"git {_verb(args)} failed in {self.path}: {detail}")
        return p.stdout

    def text(self, *args: str) -> str:
        """git's output as text; a byte that is not UTF-8 (a file name, an author's
        name) is kept as a surrogate (``\udcff``), as :func:`os.fsdecode` keeps it,
        for :func:`fleet.ids.printable` to show: nothing from git stops a reader."""
        return decode(self.run(*args)).strip()

    # -- reading -------------------------------------------------------
    def rev_parse(self, rev: str) -> str | None:
        p = self.proc("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        return p.stdout.decode().strip() if p.returncode == 0 else None

    def ls_tree(self, rev: str, *prefixes: str, links: set[str] | None = None,
                gitlinks: set[str] | None = None) -> dict[str, str]:
        """Blob path -> sha under the folders ``prefixes`` (trailing slash) at ``rev``.

        A symbolic link is a blob too (mode 120000, its content the link's target):
        with ``links``, its path is also added there, so that a reader can say "is a
        symbolic link" rather than judge the target's name as the file's content.
        A submodule (a gitlink, mode 160000) is no blob and is not listed: with
        ``gitlinks``, its path is added there, so that a reader can name it."""
        if Git._ls_format:
            p = self.proc("-c", "core.quotePath=false", "ls-tree", "-r", "-z", "--full-tree", _LS_FORMAT, rev, "--",
                          *prefixes)
            out = decode(p.stdout)
            # 129: a git before 2.36, which has no --format (usage error); a path after a NUL
            # that starts with a quote: one git quoted (a tab, a newline, a quote or a
            # backslash in a name), which git 2.39's --format does even with -z
            if p.returncode == 129:
                Git._ls_format = False
            elif not p.returncode and '\0"' not in out and not out.startswith('"'):
                # sha, path and mode, each ended by a NUL: a world of 86,000 files is three
                # slices and a dict built in C; only links and submodules take a loop
                parts = out.split("\0")
                modes = parts[2::3]
                entries = dict(zip(parts[1::3], parts[0::3], strict=False))
                if "120000" in modes or "160000" in modes:
                    for path, mode in zip(parts[1::3], modes, strict=False):
                        if mode == "160000":
                            del entries[path]
                            if gitlinks is not None:
                                gitlinks.add(path)
                        elif mode == "120000" and links is not None:
                            links.add(path)
                return entries
        out = decode(self.run("ls-tree", "-r", "-z", "--full-tree", rev, "--", *prefixes))  # a name may not be UTF-8
        entries = {}
        # one decode and str operations: a world of 86,000 files is 86,000 records
        for rec in out.split("\0"):
            meta, _, path = rec.partition("\t")
            if meta[7:12] == "blob ":  # "<6-digit mode> blob <sha>"
                entries[path] = meta[12:]
                if links is not None and meta[:6] == "120000":
                    links.add(path)
            elif gitlinks is not None and meta[:6] == "160000":
                gitlinks.add(path)
        return entries

    def special_entries(self, rev: str, *paths: str) -> dict[str, str]:
        """Path -> mode of the entries under ``paths`` (folders with a trailing
        slash, or files) at ``rev`` that are not regular files: a symbolic link
        (120000) or a submodule (160000), which :meth:`ls_tree` leaves out or
        lists as a blob."""
        out = self.run("ls-tree", "-r", "-z", "--full-tree", rev, "--", *paths)
        found: dict[str, str] = {}
        for rec in out.split(b"\0"):
            if rec[:6] in (b"120000", b"160000"):
                meta, _, path = rec.partition(b"\t")
                found[os.fsdecode(path)] = meta[:6].decode()
        return found

    def cat_blobs(self, shas: list[str]) -> dict[str, bytes]:
        """Read many blobs with one ``cat-file --batch`` process."""
        if not shas:
            return {}
        unique = list(dict.fromkeys(shas))
        out = self.run("cat-file", "--batch", input=("\n".join(unique) + "\n").encode(), spill=len(unique) > 1000)
        blobs: dict[str, bytes] = {}
        pos = 0
        for sha in unique:
            nl = out.index(b"\n", pos)
            header = out[pos:nl].split(b" ")
            if len(header) < 3 or header[1] == b"missing":
                raise FleetError(f"git object {sha} is missing from {self.path}")
            size = int(header[2])
            blobs[sha] = out[nl + 1 : nl + 1 + size]
            pos = nl + 1 + size + 1
        return blobs

    def cat_maybe(self, names: list[str]) -> dict[str, bytes | None]:
        """Read many objects (``rev:path`` names too) with one ``cat-file --batch``;
        None for a name that does not exist."""
        unique = list(dict.fromkeys(names))
        if not unique:
            return {}
        out = self.run("cat-file", "--batch", input=("\n".join(unique) + "\n").encode())
        found: dict[str, bytes | None] = {}
        pos = 0
        for name in unique:
            nl = out.index(b"\n", pos)
            header = out[pos:nl].split(b" ")
            if len(header) < 3:  # "<name> missing" (or ambiguous), and no content
                found[name] = None
                pos = nl + 1
                continue
            size = int(header[2])
            found[name] = out[nl + 1 : nl + 1 + size]
            pos = nl + 1 + size + 1
        return found

    def cat_file(self) -> CatFile:
        """A long-running ``cat-file --batch`` for many small reads (close it)."""
        return CatFile(self)

    @contextmanager
    def stream(self, *args: str) -> Iterator[IO[bytes]]:
        """Run git and read its output as it comes; leaving the block early stops git
        (a walk of history that found what it wanted reads no further)."""
        p = subprocess.Popen(["git", *args], cwd=self.path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env=_env())
        assert p.stdout is not None
        try:
            yield p.stdout
        finally:
            if p.poll() is None:
                p.kill()
            p.stdout.close()
            p.wait()

    def blob_head(self, sha: str, n: int) -> bytes:
        """The first ``n`` bytes of a blob, without reading the rest."""
        p = subprocess.Popen(["git", "cat-file", "blob", sha], cwd=self.path, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=_env())
        try:
            assert p.stdout is not None
            return p.stdout.read(n)
        finally:
            p.kill()
            p.wait()

    def show(self, rev: str, path: str) -> bytes | None:
        p = self.proc("cat-file", "blob", f"{rev}:{path}")
        return p.stdout if p.returncode == 0 else None

    def refs(self, pattern: str) -> list[RefInfo]:
        out = self.text("for-each-ref", "--format=%(refname) %(objectname) %(tree)", pattern)
        return [RefInfo(*line.split(" ")) for line in out.splitlines() if line]

    def sizes(self, shas: list[str]) -> dict[str, int]:
        """The size of each object, with one ``cat-file --batch-check`` process,
        so that nothing is read whole before its size is known."""
        if not shas:
            return {}
        unique = list(dict.fromkeys(shas))
        out = self.run("cat-file", "--batch-check", input=("\n".join(unique) + "\n").encode())
        sizes: dict[str, int] = {}
        for sha, line in zip(unique, out.decode().splitlines(), strict=True):
            header = line.split(" ")
            if len(header) < 3 or header[1] == "missing":
                raise FleetError(f"git object {sha} is missing from {self.path}")
            sizes[sha] = int(header[2])
        return sizes

    def added_files(self, pairs: list[tuple[str, str]], prefix: str) -> list[list[tuple[str, str, str]]]:
        """For each (old tree, new tree): the (path, object, mode) added or changed
        under prefix. The mode tells a file (100644, 100755) from a symbolic link
        (120000) or a submodule (160000); a path that is not UTF-8 keeps its bytes
        as surrogates (``os.fsdecode``).

        One ``diff-tree --stdin`` process answers for any number of refs.
        """
        if not pairs:
            return []
        data = "".join(f"{a} {b}\n" for a, b in pairs).encode()
        out = self.run("diff-tree", "--stdin", "-r", "-z", "--no-renames", "--", prefix, input=data)
        result: list[list[tuple[str, str, str]]] = []
        index = {f"{a} {b}": i for i, (a, b) in enumerate(pairs)}
        per: dict[int, list[tuple[str, str, str]]] = {i: [] for i in range(len(pairs))}
        current = -1
        fields = out.split(b"\0")
        i = 0
        while i < len(fields):
            f = fields[i]
            if not f:
                i += 1
                continue
            if f.startswith(b":"):
                parts = f[1:].split(b" ")
                status, path = parts[4], os.fsdecode(fields[i + 1])
                if status in (b"A", b"M", b"T"):
                    per[current].append((path, parts[3].decode(), parts[1].decode()))
                i += 2
            else:  # the echoed "<tree> <tree>" line, ending in a newline
                line, _, rest = f.partition(b"\n")
                current = index[line.decode()]
                fields[i] = rest
        for i in range(len(pairs)):
            result.append(per[i])
        return result

    def changed(self, old: str, new: str, prefixes: list[str]) -> list[tuple[str, str, str]]:
        """(old blob or zeros, new blob or zeros, path) for blobs that differ."""
        out = self.run("diff-tree", "-r", "-z", "--no-renames", old, new, "--", *prefixes)
        fields = out.split(b"\0")
        rows = []
        for i in range(0, len(fields) - 1, 2):
            if not fields[i].startswith(b":"):
                continue
            parts = fields[i][1:].split(b" ")
            rows.append((parts[2].decode(), parts[3].decode(), os.fsdecode(fields[i + 1])))
        return rows

    def changed_many(self, pairs: list[tuple[str, str]],
                     prefixes: list[str]) -> list[list[tuple[str, str, str]]]:
        """``changed`` for many (old tree, new tree) pairs with one ``diff-tree
        --stdin`` process: for each pair, (old blob or zeros, new blob or zeros,
        path) of the blobs under ``prefixes`` that differ."""
        unique = list(dict.fromkeys(pairs))
        if not unique:
            return [[] for _ in pairs]
        data = "".join(f"{a} {b}\n" for a, b in unique).encode()
        out = self.run("diff-tree", "--stdin", "-r", "-z", "--no-renames", "--", *prefixes, input=data)
        index = {f"{a} {b}": i for i, (a, b) in enumerate(unique)}
        per: list[list[tuple[str, str, str]]] = [[] for _ in unique]
        fields = out.split(b"\0")
        current, i = -1, 0
        while i < len(fields):
            f = fields[i]
            if not f:
                i += 1
            elif f.startswith(b":"):
                parts = f[1:].split(b" ")
                per[current].append((parts[2].decode(), parts[3].decode(), os.fsdecode(fields[i + 1])))
                i += 2
            else:  # the echoed "<tree> <tree>" line, ending in a newline
                line, _, rest = f.partition(b"\n")
                current = index[line.decode()]
                fields[i] = rest
        return [per[index[f"{a} {b}"]] for a, b in pairs]

    def changed_modes(self, old: str, new: str, prefixes: list[str]) -> list[tuple[str, str, str, str]]:
        """:meth:`changed` with the new mode first: (new mode, old blob or zeros,
        new blob or zeros, path), so one ``diff-tree`` serves both questions."""
        fields = os.fsdecode(self.run("diff-tree", "-r", "-z", "--no-renames", old, new, "--", *prefixes)).split("\0")
        rows = []
        for i in range(0, len(fields) - 1, 2):
            if fields[i][:1] == ":":  # ":<old mode> <new mode> <old blob> <new blob> <status>"
                _, mode, was, now, _ = fields[i].split(" ")
                rows.append((mode, was, now, fields[i + 1]))
        return rows

    def commits(self, *rev_list: str) -> list[Commit]:
        """The commits ``git rev-list ARGS`` names (revisions, ``--first-parent``,
        ``--reverse``, ``-- paths``...), each read from its object by size: its
        parents, author, commit time and message, whatever bytes a person's push put
        in them (a NUL, a record separator: no separator in a format could split them)."""
        shas = self.text("rev-list", *rev_list).split()
        objects = self.cat_blobs(shas)
        return [Commit.parse(sha, objects[sha]) for sha in shas]

    def first_parent_log(self, rev: str, *, exclude: str | None = None,
                         limit: int | None = None) -> list[tuple[str, str | None, str]]:
        """(commit, first parent, message) from the root to ``rev``, oldest first;
        only those after ``exclude``, or only the newest ``limit``, if given (:meth:`commits`)."""
        args = ["--first-parent", "--reverse", *([f"--max-count={limit}"] if limit is not None else []),
                rev, *([f"^{exclude}"] if exclude else [])]
        return [(c.sha, c.parents[0] if c.parents else None, c.message) for c in self.commits(*args)]

    def fetch_refs(self, remote: str, *refspecs: str, prune: bool = False) -> str | None:
        """Fetch into fleet's own tracking refs only (``--refmap=``); None on
        success, else git's stderr. A fetch that loses a ref lock to another
        fleet process in this clone is a race, retried, not an error; so,
        once, is a fetch the remote did not answer in time (a fetch changes
        nothing there, so trying again is safe)."""
        refuse_option_like(remote, "a remote")
        args = ["fetch", "--quiet", "--no-tags", "--refmap=", *(["--prune"] if prune else []), remote, *refspecs]
        unanswered = 0
        for attempt in range(20):
            p = self.proc(*args)
            if p.returncode == 0:
                return None
            err = p.stderr.decode(errors="replace") or f"exit {p.returncode}"
            if "the remote did not answer within" in err and unanswered == 0:
                unanswered += 1
                continue
            if "cannot lock ref" not in err and "unable to update local ref" not in err:
                return err
            time.sleep(random.uniform(0.01, 0.05 * (attempt + 1)))
        return err

    def commit_tree(self, rev: str) -> str:
        return self.text("rev-parse", f"{rev}^{{tree}}")

    # -- writing -------------------------------------------------------
    def write_commit(
        self,
        parent: str | None,
        message: str,
        writes: dict[str, bytes],
        deletes: list[str],
        when: int | None = None,
        keep_scratch: bool = False,
        merges: Sequence[str] = (),
    ) -> str:
        """A commit of ``parent``'s tree with files written and removed; returns its sha.
        ``merges``: more parents (their trees are not merged: the files given say it all).

        Uses ``fast-import`` on a scratch ref, so no index or working tree is
        involved and tens of thousands of files cost one process.
        """
        name, email = FLEET_IDENT
        stamp = f"{int(when if when is not None else time.time())} +0000"
        scratch = self.scratch_ref()
        known = keys.values()  # the last net: no key reaches a commit, whatever a record holds
        msg = keys.redact(message, known).encode("utf-8", errors="backslashreplace")
        chunks = [
            f"commit {scratch}\nmark :1\ncommitter {name} <{email}> {stamp}\ndata {len(msg)}\n".encode(),
            msg,
            b"\n",
        ]
        if parent:
            chunks.append(f"from {parent}\n".encode())
        chunks += [f"merge {m}\n".encode() for m in merges]
        for path in [*deletes, *writes]:
            if "\n" in path or path.startswith('"'):  # fast-import would read it as another command
                raise FleetError(f"refusing to write the path {path!r}: fleet writes only safe names")
        for path in deletes:
            chunks.append(f"D {path}\n".encode())
        for path in sorted(writes):
            data = keys.redact_bytes(writes[path], known)
            chunks.append(f"M 100644 inline {path}\ndata {len(data)}\n".encode())
            chunks.append(data)
            chunks.append(b"\n")
        chunks.append(b"get-mark :1\ndone\n")
        out = self.run("fast-import", "--quiet", "--done", "--force", input=b"".join(chunks))
        sha = out.decode().strip().splitlines()[-1]
        if not keep_scratch:  # else the caller drops it (see scratch_ref) in a ref update it makes anyway
            self.proc("update-ref", "-d", scratch)
        return sha

    @staticmethod
    def scratch_ref() -> str:
        """The ref ``write_commit`` uses in this process."""
        return f"refs/fleet/scratch/{os.getpid()}"

    def ref_tips(self, *refs: str) -> dict[str, str]:
        """The commits of those of ``refs`` that exist, with one process."""
        out = self.text("for-each-ref", "--format=%(refname) %(objectname)", *refs)
        tips = dict(line.split(" ") for line in out.splitlines() if line)
        return {r: tips[r] for r in refs if r in tips}

    def drop_stale_scratch(self) -> None:
        """Scratch refs of fast-import runs whose process died (kill -9)."""
        for ref in self.refs("refs/fleet/scratch/"):
            pid = ref.name.rsplit("/", 1)[1]
            if pid.isdigit() and not process_alive(int(pid)):
                self.proc("update-ref", "-d", ref.name, ref.commit)

    def update_ref(self, ref: str, new: str, old: str | None) -> bool:
        """Compare-and-swap a local ref; False if it was not at ``old``."""
        p = self.proc("update-ref", ref, new, old or "0" * 40)
        return p.returncode == 0

    def gc_auto(self) -> None:
        self.proc("gc", "--auto", "--quiet")

    # -- publishing ------------------------------------------------------
    def push(self, remote: str, updates: Sequence[RefUpdate], *, atomic: bool = False,
             while_running: Callable[[], None] | None = None) -> PushResult:
        """Compare-and-swap refs on ``remote``: each of ``updates`` moves only if
        the remote has it at its expected old value. The only push fleet makes.

        Won: every ref moved. Lost: someone moved a ref first (re-read and try
        again). Refused: a hook, a protected branch, a name clash or the network
        said no, and retrying the same change cannot help; ``reason`` is git's.
        ``atomic``: all refs move or none does. ``while_running`` is called once
        the push has started and before it is waited for (a crash test dies there).
        """
        refuse_option_like(remote, "a remote")
        args = ["push", "--porcelain", *(["--atomic"] if atomic else [])]
        args += [f"--force-with-lease={u.ref}:{u.old or ''}" for u in updates]
        args += [remote, *(f"{u.new or ''}:{u.ref}" for u in updates)]
        push = subprocess.Popen(["git", *args], cwd=self.path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_network_env(self.path))
        if while_running is not None:
            while_running()
        timeout = network_timeout()
        try:
            out, err = push.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            push.kill()
            push.communicate()
            assert timeout is not None
            return self._unanswered(remote, updates, timeout)
        if push.returncode == 0:
            # "=": the remote had the ref at our new value already, whatever the lease said (git
            # checks no lease for a ref it need not move). Another writer made the same commit
            # first (a merge is deterministic: the same deltas in the same second): it won, not us.
            # A ref pushed at its own old value is a lease that moves nothing (an atomic push's
            # check that main is still where it was): its "=" is the lease holding, not a loss.
            moving = {u.ref for u in updates if u.new != u.old}
            if any(line.startswith("=\t") and line.split("\t")[1].rpartition(":")[2] in moving
                   for line in out.decode(errors="replace").splitlines()):
                return PushResult("lost", "the remote had this commit already: another writer published it")
            return PushResult("won")
        text = (out + err).decode(errors="replace")
        reason = git_reason(text, f"exit {push.returncode}")
        if _lost_race(text, lambda: self._moved(remote, updates)):
            return PushResult("lost", reason)
        return PushResult("refused", reason)

    def _unanswered(self, remote: str, updates: Sequence[RefUpdate], timeout: float) -> PushResult:
        """What a push the remote did not answer in time came to, asked of the remote
        (one ``ls-remote``, under the same bound): won if every ref is at its new
        value; else lost, so that the caller fetches and decides again. (A push the
        remote applies only later is one a compare-and-swap that comes after loses to,
        as it would a push of a writer killed mid-push.) Refused if the remote does
        not answer that either: nobody can say, and the caller says so."""
        p = self.proc("ls-remote", remote, *(u.ref for u in updates))
        if p.returncode:
            return PushResult("refused", f"{no_answer(timeout)}; whether the push landed is unknown until "
                                         "the remote answers a fetch")
        tips = {name: sha for sha, _, name in (line.partition("\t") for line in p.stdout.decode().splitlines())}
        if all(tips.get(u.ref) == u.new for u in updates):
            return PushResult("won")
        return PushResult("lost", no_answer(timeout))

    def _moved(self, remote: str, updates: Sequence[RefUpdate]) -> bool:
        """Whether any of the refs is no longer where the push expected it (one round trip)."""
        out = self.proc("ls-remote", remote, *(u.ref for u in updates)).stdout.decode()
        tips = {name: sha for sha, _, name in (line.partition("\t") for line in out.splitlines())}
        return any(tips.get(u.ref) != u.old for u in updates)


def decode(data: bytes) -> str:
    """Bytes from git as text: UTF-8, and any byte that is not kept as a surrogate
    (``os.fsdecode``'s rule), so that a file name or a message in another
    encoding is named, escaped, rather than stopping the reader."""
    return data.decode("utf-8", "surrogateescape")


def refuse_option_like(value: str, what: str) -> None:
    """A remote handed to git as a word of its command line: one that starts with
    ``-`` would be read as an option (``--upload-pack=<a command>`` runs it)."""
    if value.startswith("-"):
        raise FleetError(f"{what} {value[:80]!r} starts with '-', which git would read as an option; "
                         "name a remote, a URL or a path (./-name for a folder named so)")


_RACE = re.compile(r"\[rejected\]|stale info|non-fast-forward|fetch first")
_MAYBE = re.compile(
    r"\[remote rejected\] \((?:cannot lock ref|failed to update ref|incorrect old value|"
    r"reference already exists|atomic (?:push|transaction) failed)"
)


def _lost_race(push_output: str, moved: Callable[[], bool]) -> bool:
    """Whether a rejected push lost a compare-and-swap (someone moved the ref
    first: re-read and try again), rather than being refused for good (a
    hook, a protected branch, a ruleset, a name clash: retrying cannot help).

    The remote's "failed to update ref" and "cannot lock ref" are said for a
    race and for a permanent failure alike; then ``moved()`` asks the remote
    whether the ref really moved."""
    if _RACE.search(push_output):
        return True
    return bool(_MAYBE.search(push_output)) and moved()


def git_reason(stderr: str, fallback: str) -> str:
    """git's useful line: the first fatal/error line (the last only adds advice)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    refused = [ln for ln in lines if ln.startswith("!")]
    # an atomic push marks every other ref "atomic push failure": the cause is the one that is not
    causes = [ln for ln in refused if "atomic push fail" not in ln] or refused
    bad = causes or [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    first = (bad or lines[-1:] or [fallback])[0]
    if first.startswith("!") and first.count("\t") >= 2:  # push --porcelain: "!<TAB>src:dst<TAB>[remote rejected] (why)"
        first = f"{first.split(chr(9))[1].split(':')[-1]} {first.split(chr(9))[-1]}"
    said = [ln.removeprefix("remote:").strip() for ln in lines if ln.startswith("remote:") and ln[7:].strip()]
    # over ssh, git's "Could not read from remote repository" hides why: ssh's own lines say it
    ssh = [ln for ln in lines if ln.startswith(_SSH_SAYS)]
    return (first + (f" (the remote said: {'; '.join(said)[:300]})" if said else "")
            + (f" ({'; '.join(ssh)[:300]})" if ssh and not said else ""))


_SSH_SAYS = ("ssh:", "Permission denied", "Host key verification failed", "Connection closed by",
             "Connection timed out", "kex_exchange_identification", "Timeout, server")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def toplevel(path: Path | str) -> Path:
    """The repository's top folder (the git dir itself for a bare repository)."""
    if not Path(path).is_dir():
        raise FleetError(f"{path}: no such directory")
    both = subprocess.run(["git", "rev-parse", "--is-bare-repository", "--show-toplevel"], cwd=path,
                          capture_output=True, env=_env())
    lines = both.stdout.decode().splitlines()
    if both.returncode == 0 and len(lines) == 2 and lines[0] == "false":  # the common case, one process
        return Path(lines[1])
    bare = subprocess.run(["git", "rev-parse", "--is-bare-repository"], cwd=path, capture_output=True, env=_env())
    if bare.returncode == 0 and bare.stdout.strip() == b"true":
        return Path(path).resolve()
    p = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, env=_env())
    if p.returncode:
        raise FleetError(f"{path}: not inside a git repository (run `fleet init DIR` to make a fleet)")
    return Path(p.stdout.decode().strip())


def common_dir(path: Path | str) -> Path:
    """The repository's git directory shared by all its worktrees."""
    p = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                       cwd=path, capture_output=True, env=_env())
    if p.returncode:
        raise FleetError(f"{path}: not inside a git repository")
    return Path(p.stdout.decode().strip())


class CatFile:
    """One ``git cat-file --batch-command`` kept running for many reads, each a few
    blobs: a reader that wants one document at a time (a worker's view of
    main) pays one process, not one a read. Requests go in chunks smaller
    than a pipe's buffer, so writing never waits on git's output."""

    CHUNK = 512  # 50 bytes a request: 25 KB, under any pipe buffer

    def __init__(self, git: Git) -> None:
        self.path = git.path
        self._p: subprocess.Popen[bytes] | None = None

    def read(self, shas: Sequence[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(shas))
        out: dict[str, bytes] = {}
        if not unique:
            return out
        if self._p is None:
            # --buffer: git writes its output in blocks, not an object at a time, until each "flush"
            self._p = subprocess.Popen(["git", "cat-file", "--batch-command", "--buffer"], cwd=self.path, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(),
                                       bufsize=1 << 16)
        p = self._p
        assert p.stdin is not None and p.stdout is not None
        for i in range(0, len(unique), self.CHUNK):
            chunk = unique[i : i + self.CHUNK]
            try:
                p.stdin.write("".join(f"contents {sha}\n" for sha in chunk).encode() + b"flush\n")
                p.stdin.flush()
            except BrokenPipeError:
                self.close()
                raise FleetError(f"git cat-file stopped in {self.path}") from None
            for sha in chunk:
                header = p.stdout.readline().split(b" ")
                if len(header) < 3 or header[1] == b"missing":
                    self.close()
                    raise FleetError(f"git object {sha} is missing from {self.path}")
                size = int(header[2])
                out[sha] = p.stdout.read(size)
                p.stdout.read(1)  # the newline after the content
        return out

    def close(self) -> None:
        p, self._p = self._p, None
        if p is None:
            return
        for f in (p.stdin, p.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


_REFUSED_BY_RULE = ("[remote rejected]", "protected branch", "pre-receive hook", "hook declined", "permission",
                    "denied", "403", "not allowed", "forbidden")


def refused_by_rule(reason: str) -> bool:
    """Whether a push failed because the remote's rules refused it (branch
    protection, a hook, no permission), so that a hint about branch protection
    helps; not a remote that is no repository, a bad name, or a dropped connection."""
    said = reason.lower()
    return any(k in said for k in _REFUSED_BY_RULE)
