"""A fleet repository and the remote whose ``main`` the merge engine owns.

With a remote (``origin`` by default), main and the worker branches are
fetched into ``refs/fleet/origin/*`` and main is published with a push that
only succeeds as a fast-forward: a compare-and-swap on the ref, so two merges
at once cannot both win. Without a remote, the local ``refs/heads/main`` is
the target and ``update-ref`` with the old value is the compare-and-swap.
The user's own branches and working tree are not touched, except that a
local-only fleet whose checkout is on main is fast-forwarded like ``git pull``.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import orjson

from fleet import faults
from fleet.config import Config
from fleet.delta import DELTA_DIR, Arrival
from fleet.errors import FleetError
from fleet.fieldindex import BRANCH as INDEX_BRANCH
from fleet.git import (
    EMPTY_TREE,
    Git,
    RefInfo,
    RefUpdate,
    common_dir,
    git_reason,
    refuse_option_like,
    refused_by_rule,
    toplevel,
)
from fleet.ids import printable
from fleet.state import GitSnapshot

WORKER_BRANCH = re.compile(r"^fleet/t(\d+)/([A-Za-z0-9][A-Za-z0-9_.-]*)$")
TRACKING = "refs/fleet/origin/"
_WARNED: set[str] = set()  # warnings this process gave once (FleetRepo.config_despite)


def worker_branch(tick: int, worker: str) -> str:
    """The branch a worker pushes its deltas of one tick to."""
    return f"fleet/t{tick}/{worker}"


@dataclass(frozen=True)
class Source:
    """A worker branch holding deltas: its name on the target and where we read it."""

    branch: str  # fleet/t<tick>/<worker>
    ref: RefInfo  # the local ref we read (tracking ref with a remote)


EMBEDDED = "embedded"  # the value of fleet.remote for the origin fleet run creates in .git/fleet/


def embedded_origin(path: Path) -> Path:
    """The bare origin `fleet run` makes for a fleet with no remote of its own."""
    return common_dir(path) / "fleet" / "origin.git"


def resolve_remote(git: Git, remote: str | None) -> str | None:
    """Where the fleet's main lives: ``--remote``, else git config ``fleet.remote``
    (set by ``fleet run`` for the origin it creates), else ``origin``, else None
    (this repository itself)."""
    # one process for both: the remotes (by their url) and fleet.remote
    if remote is not None:
        refuse_option_like(remote, "--remote")
    found = git.proc("config", "-z", "--get-regexp", r"^(remote\..*\.url|fleet\.remote)$").stdout.decode()
    pairs = [rec.partition("\n") for rec in found.split("\0") if rec]
    remotes = [k[len("remote."):-len(".url")] for k, _, _ in pairs if k.startswith("remote.")]
    if remote is None:
        remote = next((v for k, _, v in pairs if k == "fleet.remote"), "").strip() or None
        if remote == EMBEDDED:  # fleet run's own origin, found anew each time: copies and moves keep working
            return embedded_origin(git.path).as_uri()
        if remote is not None:
            refuse_option_like(remote, "git config fleet.remote")
    if remote is None:
        return "origin" if "origin" in remotes else None
    if remote not in remotes and "/" not in remote and ":" not in remote:
        raise FleetError(f"no remote named {remote!r} in {git.path} (remotes: {', '.join(remotes) or 'none'})")
    return remote


def missing_origin(remote: str) -> str | None:
    """What to do when ``remote`` is the embedded origin (``.git/fleet/origin.git``)
    and it is gone, or None: it is the fleet's origin, not a cache, and only `fleet
    run` makes it again (commands/run.py: from ``refs/fleet/origin/*``, this clone's
    last view of it, when that is here; else from your main, at the first tick)."""
    if not remote.startswith("file://"):
        return None
    origin = Path(url2pathname(urlparse(remote).path))
    if origin.name != "origin.git" or origin.parent.name != "fleet" or (origin / "HEAD").exists():
        return None
    if Git(origin.parent.parent).rev_parse(TRACKING + "main") is not None:
        how = f"rebuilds it from this clone's last view of it ({TRACKING}*; what it held beyond that is lost)"
    else:
        how = "makes it anew from your main (this clone holds no view of the old one: the fleet goes on from your main's tick)"
    return f"the fleet's built-in origin {origin} is missing; `fleet run` {how}"


def fetch_failed(remote: str, err: str) -> FleetError:
    """A failed fetch of main (and more) from ``remote`` as one line; an empty
    remote is named as one, not with git's "couldn't find remote ref", and a
    deleted embedded origin with how to make it again."""
    missing = missing_origin(remote)
    if missing:
        return FleetError(missing)
    if "couldn't find remote ref refs/heads/main" in err:
        return FleetError(f"remote {remote} has no main branch: it is empty or holds no fleet (push a "
                          "fleet's main there first: `git push <remote> main`)")
    return FleetError(f"git fetch from {remote} failed: {git_reason(err, 'no reason given')}")


class FleetRepo:
    def __init__(self, path: Path | str, remote: str | None = None) -> None:
        self.path = toplevel(path)
        self.git = Git(self.path)
        self.remote = resolve_remote(self.git, remote)
        self.git.drop_stale_scratch()

    # -- where main is ---------------------------------------------------
    @property
    def main_ref(self) -> str:
        return TRACKING + "main" if self.remote else "refs/heads/main"

    def fetch(self) -> None:
        """Fetch main and the worker branches: the one moment state changes here."""
        if not self.remote:
            return
        err = self.git.fetch_refs(self.remote, f"+refs/heads/main:{TRACKING}main",
                                  f"+refs/heads/fleet/*:{TRACKING}fleet/*", prune=True)
        if err is not None:
            raise fetch_failed(self.remote, err)

    def main(self) -> str:
        sha = self.git.rev_parse(self.main_ref)
        if sha is None:
            where = f"remote {self.remote}" if self.remote else str(self.path)
            raise FleetError(f"{where} has no main branch; is this a fleet repository? (`fleet init DIR` makes one)")
        return sha

    def snapshot(self, rev: str | None = None) -> GitSnapshot:
        return GitSnapshot(self.git, rev or self.main())

    def config(self, head: str | None = None) -> Config:
        """The config fleet works under at main's ``head`` (default: main): main's own,
        or, while a person's change that fleet refuses on main breaks it, that of the
        last tick commit (:meth:`config_despite`)."""
        head = head or self.main()
        try:
            return self.snapshot(head).config
        except FleetError as e:
            return self.config_despite(head, e)

    def config_despite(self, head: str, broken: FleetError) -> Config:
        """The config of main's last tick commit, when ``broken`` (main's own config at
        ``head`` cannot be read) comes of a person's change that fleet refuses on main
        (fleet.outside.main_refusal): the queue, the bus and the history go on under
        the config the engine last worked with, as `fleet status` shows it, and say so
        once on stderr. Otherwise ``broken`` is raised: a fleet whose own tick left a
        bad config, or none at all, is no fleet to go on with."""
        from fleet.outside import main_refusal  # (it imports this module)

        refused = main_refusal(self.git, head)
        if refused is None or refused.base == head:
            raise broken
        try:
            cfg = self.snapshot(refused.base).config
        except FleetError:
            raise broken from None
        line = refused.line(f"this works under the config of the last tick commit, {refused.base[:12]}")
        if line not in _WARNED:
            _WARNED.add(line)
            sys.stderr.write(f"fleet: warning: {line}\n")
        return cfg

    def sources(self) -> list[Source]:
        prefix = TRACKING + "fleet/" if self.remote else "refs/heads/fleet/"
        out = []
        for ref in self.git.refs(prefix):
            branch = "fleet/" + ref.name[len(prefix):]
            if WORKER_BRANCH.match(branch):
                out.append(Source(branch, ref))
        return out

    # -- publishing ------------------------------------------------------
    @property
    def index_ref(self) -> str:
        """Where the field index of main (fleet.fieldindex) is read here."""
        return TRACKING + INDEX_BRANCH if self.remote else f"refs/heads/{INDEX_BRANCH}"

    def publish(self, new: str, old: str, merged: list[Source] = (),
                index: tuple[str, str | None] | None = None) -> bool:
        """Make ``new`` main if main is still ``old``, and delete the merged worker
        branches, in one atomic step. False if another merge won, or a worker
        pushed to a merged branch meanwhile (the next attempt takes it in).

        ``index``: (the field index of ``new``, the index commit it replaces, or
        None if there is none), moved in the same atomic step: main and its
        index are published together or not at all."""
        if self.remote:
            updates = [RefUpdate("refs/heads/main", new, old)]
            if index is not None:
                updates.append(RefUpdate(f"refs/heads/{INDEX_BRANCH}", index[0], index[1]))
            updates += [RefUpdate(f"refs/heads/{s.branch}", None, s.ref.commit) for s in merged]
            result = self.git.push(self.remote, updates, atomic=True,
                                   while_running=lambda: faults.point("merge.during-push"))
            if result.outcome == "won":
                self._forget(merged)
                self.git.update_ref(self.main_ref, new, old)
                if index is not None:
                    self.git.update_ref(self.index_ref, index[0], index[1])
                return True
            if result.outcome == "lost":
                return False
            hint = (" (main must accept pushes from the merge; see the README on branch protection)"
                    if refused_by_rule(result.reason) else "")
            raise FleetError(f"push to {self.remote} refused: {result.reason}{hint}")
        head = self.git.proc("symbolic-ref", "--quiet", "HEAD").stdout.decode().strip()
        bare = self.git.text("rev-parse", "--is-bare-repository") == "true"
        if head == "refs/heads/main" and not bare:
            # A local fleet whose checkout is on main: move it like `git pull`.
            if self.git.rev_parse("HEAD") != old:
                return False
            # its index first: one that describes a main that did not come to be is read by nobody
            if index is not None and not self.git.update_ref(self.index_ref, index[0], index[1]):
                return False
            p = self.git.proc("merge", "--ff-only", "--quiet", new)
            if p.returncode:
                raise FleetError(
                    f"{self.path}: could not bring your checkout of main to the merged tick "
                    f"({p.stderr.decode(errors='replace').strip().splitlines()[-1] if p.stderr.strip() else 'git merge failed'}); "
                    "main is written only by fleet merge: commit elsewhere or stash your changes"
                )
            self.delete_sources(merged)
            return True
        lines = [f"update refs/heads/main {new} {old}"] + [f"delete {s.ref.name} {s.ref.commit}" for s in merged]
        if index is not None:
            lines.append(f"update {self.index_ref} {index[0]} {index[1] or '0' * 40}")
        p = self.git.proc("update-ref", "--stdin", input=("\n".join(["start", *lines, "prepare", "commit"]) + "\n").encode())
        return p.returncode == 0

    def delete_sources(self, sources: list[Source]) -> None:
        """Delete merged worker branches, each only if nobody pushed to it since."""
        if not sources:
            return
        if self.remote:
            # a branch that moved keeps its new deltas for the next merge, whatever the push says
            self.git.push(self.remote, [RefUpdate(f"refs/heads/{s.branch}", None, s.ref.commit) for s in sources])
            self._forget(sources)
        else:
            lines = [f"delete {s.ref.name} {s.ref.commit}" for s in sources]
            self.git.proc("update-ref", "--stdin", input=("\n".join(lines) + "\n").encode())

    def _forget(self, sources: list[Source]) -> None:
        """Drop our tracking refs of deleted remote branches."""
        if sources:
            lines = [f"delete {s.ref.name} {s.ref.commit}" for s in sources]
            self.git.proc("update-ref", "--stdin", input=("\n".join(lines) + "\n").encode())

    def arrivals(self, sources: list[Source], max_bytes: int, signers: tuple[str, bytes | None] | None = None
                 ) -> list[Arrival]:
        """Every delta file on the given worker branches (three git processes in all).

        Only regular files are read, and only up to ``max_bytes``: a symbolic
        link or a submodule in a worker's tree is refused by its name, and a
        file over the limit by its size, its content never read. With
        ``signers`` (the allowed signers' path on main and its content), a
        branch whose tip is not signed by a key allowed for its worker has
        every file refused, unread, with the reason (``fleet.signing``)."""
        unsigned: dict[str, str] = {}
        if signers is not None:
            from fleet.signing import verify

            tips = {s.branch: (s.ref.commit, _branch_worker(s.branch)) for s in sources}
            unsigned = verify(self.git, tips, signers[1], signers[0])
        pairs = [(EMPTY_TREE, s.ref.tree) for s in sources]
        listed = self.git.added_files(pairs, DELTA_DIR + "/")
        files = [sha for entries in listed for _, sha, mode in entries if mode in REGULAR_MODES]
        sizes = self.git.sizes(files)
        blobs = self.git.cat_blobs([sha for sha in files if sizes[sha] <= max_bytes])
        out = []
        for s, entries in zip(sources, listed, strict=True):
            for path, sha, mode in entries:
                source = f"refs/heads/{s.branch}"
                worker = _branch_worker(s.branch)
                if s.branch in unsigned:
                    out.append(Arrival(source, path, b"", refused=f"worker branch {s.branch}: {unsigned[s.branch]}"))
                elif signers is not None and not path.startswith(f"{DELTA_DIR}/{worker}/"):
                    out.append(Arrival(source, path, b"", refused=f"is not in {DELTA_DIR}/{worker}/, on worker "
                                                                  f"{worker}'s signed branch {s.branch}"))
                elif mode not in REGULAR_MODES:
                    kind = TREE_MODES.get(mode, f"an entry of mode {mode}")
                    out.append(Arrival(source, path, b"", refused=f"is {kind}, not a file; only regular files are read"))
                elif sha not in blobs:  # its head is kept in the record, as for an inbox file
                    out.append(Arrival(source, path, self.git.blob_head(sha, max_bytes),
                                       refused=_too_big(sizes[sha], max_bytes), size=sizes[sha]))
                else:
                    out.append(Arrival(source, path, blobs[sha]))
        return out


def _branch_worker(branch: str) -> str:
    m = WORKER_BRANCH.match(branch)
    return m.group(2) if m else ""


REGULAR_MODES = ("100644", "100755")
TREE_MODES = {"120000": "a symbolic link", "160000": "a submodule (gitlink)", "040000": "a folder"}


def _too_big(size: int, limit: int) -> str:
    return f"delta is {size} bytes, over limits.max_delta_bytes ({limit})"


MAX_INBOX_DEPTH = 32  # folders below the inbox; a worker's outbox needs three


def inbox_arrivals(folder: Path, max_bytes: int, repo: Path | None = None,
                   said: str | None = None) -> list[tuple[Arrival, Path]]:
    """Delta files handed over as a folder (a workflow artifact, a coalesced push).

    Every entry is decided, none is followed: a regular file of the delta
    layout (``[deltas/]<worker>/<stream>/<id>.json``) is read, up to
    ``max_bytes``, without following a link even if one is swapped in after
    the listing. Anything else (a symbolic link, a hard link, a FIFO, a
    device, a socket, a folder named like a delta, one that cannot be read)
    is refused by its name, its content never read. A regular file outside
    the layout (``notes.txt``, ``top.json``) is no delta at all: marked
    ``foreign``, it is neither quarantined nor removed (a folder given by
    mistake loses nothing), and the merge names it.
    Folders are walked, never through a link, so nothing outside ``folder`` is
    read. A folder that holds a git repository, or holds ``repo`` or the home
    folder, is no inbox: the merge refuses it before anything is read, since
    it removes what it decided."""
    if not folder.is_dir():
        raise FleetError(f"{folder}: inbox folder does not exist")
    here = folder.resolve()
    for precious, what in ((repo, "the fleet repository"), (Path.home(), "your home folder")):
        if precious is not None and (here == precious.resolve() or here in precious.resolve().parents):
            raise FleetError(f"--inbox {folder}: holds {what}; an inbox is a folder of delta files only "
                             "(the merge removes what it decides)")
    if repo is not None:
        # a folder of the repository (state/, .git, a source folder) is no inbox either: the
        # merge would take its files out; but for `fleet run`'s own outbox (.git/fleet/outbox)
        own = is_own_outbox(here)
        for inside in (_work_tree(repo), repo.resolve()):
            if inside is not None and inside in here.parents and not own:
                raise FleetError(f"--inbox {folder}: is inside the repository ({inside}); an inbox is a folder "
                                 "of delta files of its own, outside it (the merge removes what it decides)")
    out: list[tuple[Arrival, Path]] = []
    source = str(folder)
    for e in inbox_entries(folder):
        if e.refused is not None:
            out.append((Arrival(source, e.rel, b"", refused=e.refused, foreign=e.foreign), e.path))
            continue
        read = read_regular(str(e.path), max_bytes)
        if isinstance(read, bytes):
            out.append((Arrival(source, e.rel, read), e.path))
        elif isinstance(read, tuple):  # over the limit: refused, its head kept in the record
            out.append((Arrival(source, e.rel, read[0], refused=_too_big(read[1], max_bytes), size=read[1]), e.path))
        elif read is not None:
            out.append((Arrival(source, e.rel, b"", refused=read), e.path))
    out.sort(key=lambda ap: ap[0].path)
    out = [(replace(a, path=in_layout(a.path)), p) for a, p in out]
    files = [a for a, _ in out if not a.foreign]
    if files and not any(names_itself(a) for a in files):
        # A folder given by mistake (a source tree, a copy of state/, a folder of links) has
        # entries of the layout's shape, but none is a delta: the merge would quarantine each,
        # publish its head and remove it. A worker's outbox holds at least one file that names
        # itself; links, FIFOs and the like beside one are refused by name, unread.
        first = files[0]
        raise FleetError(f"{said or f'--inbox {folder}'}: none of its {len(files)} file(s) in the delta layout is a delta "
                         f"(first: {printable(first.path, 120)}: not a JSON object whose id is its file name and "
                         "worker its folder); not an inbox, nothing read into the merge or removed")
    return out


def names_itself(a: Arrival) -> bool:
    """Whether an inbox file is a delta by the least a worker writes: a JSON object whose
    ``id`` is its file's name and ``worker`` its worker folder (deltas/<worker>/.../<id>.json).
    Whether it passes the delta's rules is the merge's to decide."""
    if a.refused is not None:
        return False
    parts = a.path.split("/")
    if len(parts) < 4 or not parts[-1].endswith(".json"):
        return False
    try:
        d = orjson.loads(a.data)
    except orjson.JSONDecodeError:
        return False
    return type(d) is dict and d.get("id") == parts[-1][:-5] and d.get("worker") == parts[1]


@dataclass(frozen=True)
class InboxEntry:
    """One entry of an inbox as the merge decides it, before any file is read: ``refused``
    says why it is not read (None: a delta file to read), ``foreign`` that it is no delta at all."""

    rel: str  # its path below the inbox
    path: Path
    refused: str | None = None
    foreign: bool = False


def inbox_entries(folder: Path) -> list[InboxEntry]:
    """Every entry under the inbox ``folder``, decided by its kind and name alone, none
    followed: the one rule both ``fleet merge --inbox`` (inbox_arrivals) and ``fleet
    validate INBOX`` apply, so that validate names whatever the merge would quarantine.
    A folder holding a git repository is no inbox (FleetError)."""
    out: list[InboxEntry] = []

    def refuse(rel: str, entry: Path, why: str, foreign: bool = False) -> None:
        out.append(InboxEntry(rel, entry, why, foreign))

    stack: list[tuple[Path, str, int]] = [(folder, "", 0)]
    while stack:
        at, rel_here, depth = stack.pop()
        try:
            entries = sorted(os.scandir(at), key=lambda e: e.name)
        except OSError as err:
            refuse(rel_here or ".", at, f"folder cannot be listed: {err.strerror}")
            continue
        if any(e.name == ".git" for e in entries):
            raise FleetError(f"--inbox {folder}: {at} holds a git repository (.git); an inbox is a folder of "
                             "delta files only (the merge removes what it decides)")
        for e in entries:
            rel = f"{rel_here}/{e.name}" if rel_here else e.name
            path = Path(e.path)
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since the listing: nothing to decide
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = printable(os.readlink(e.path), 200)
                except OSError:
                    target = "?"
                refuse(rel, path, f"is a symbolic link (to {target}); only regular files in the inbox are read")
            elif stat.S_ISDIR(st.st_mode):
                if e.name.endswith(".json"):
                    refuse(rel, path, "is a folder named like a delta file, not a file")
                if depth + 1 >= MAX_INBOX_DEPTH:
                    refuse(rel, path, f"folders nest deeper than {MAX_INBOX_DEPTH} levels; not walked")
                else:
                    stack.append((path, rel, depth + 1))
            elif not stat.S_ISREG(st.st_mode):
                refuse(rel, path, f"is {kind_of(st.st_mode)}, not a file; only regular files in the inbox are read")
            elif not e.name.endswith(".json"):
                refuse(rel, path, "is not a delta file (a delta file's name ends in .json)", foreign=True)
            elif len(in_layout(rel).split("/")) < 4:
                refuse(rel, path, f"is not in a worker's folder ({DELTA_DIR}/<worker>/<stream>/<id>.json); not read",
                       foreign=True)
            elif st.st_nlink > 1:
                refuse(rel, path, f"has {st.st_nlink} hard links: a file linked from elsewhere is not read")
            else:
                out.append(InboxEntry(rel, path))
    return out


def _work_tree(repo: Path) -> Path | None:
    """The working tree of the repository at ``repo`` (a clone's top folder, or the
    one whose .git holds it), or None for a bare repository of its own."""
    p = Git(repo).proc("rev-parse", "--show-toplevel")
    if p.returncode == 0 and p.stdout.strip():
        return Path(p.stdout.decode().strip()).resolve()
    for up in repo.resolve().parents:  # fleet's private caches live under <top>/.git/fleet/
        if up.name == ".git":
            return up.parent
    return None


def is_own_outbox(folder: Path) -> bool:
    """Whether ``folder`` is `fleet run`'s own outbox, ``<git dir>/fleet/outbox``: the one
    folder inside a repository a worker hands deltas to and a merge takes them from."""
    return folder.name == "outbox" and folder.parent.name == "fleet" and (folder.parent.parent / "HEAD").is_file()


def in_layout(rel: str) -> str:
    """An inbox path as a worker branch names it: under deltas/."""
    return rel if rel.startswith(DELTA_DIR + "/") else f"{DELTA_DIR}/{rel}"


def kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "something other than a file"


def read_regular(path: str, max_bytes: int) -> bytes | tuple[bytes, int] | str | None:
    """The bytes of a regular file; (its first ``max_bytes``, its size) if it is
    bigger; or why it cannot be read (None: it is gone)."""
    try:
        # O_NOFOLLOW and O_NONBLOCK: a link or a FIFO swapped in since the listing
        # is neither followed nor waited on.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        try:  # a socket cannot be opened at all: say what it is
            mode = os.lstat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            return f"is {kind_of(mode)}, not a file; only regular files in the inbox are read"
        return f"cannot be read: {e.strerror}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return f"is {kind_of(st.st_mode)}, not a file; only regular files in the inbox are read"
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            return data[:max_bytes], max(st.st_size, len(data))
        return data
    except OSError as e:
        return f"cannot be read: {e.strerror}"
    finally:
        os.close(fd)
