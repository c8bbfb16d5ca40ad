"""A worker's isolated place to work, and the cleanup that always runs.

Each worker keeps a private bare cache repository under the user's git dir
(``.git/fleet/workers/<worker>.git``) and, for one tick, a worktree of it with
only ``deltas/`` checked out. The user's checkout, branches and shallow state
are never touched. Cleanup (worktree removed, worktree list pruned, local
branches deleted) runs on every exit path, SIGTERM and SIGINT included, and
whatever a kill -9 left behind is removed when that worker next starts.
A run that fails (an exception, Ctrl-C) also removes what it made under
``.git/fleet`` itself (its cache, the folders above it): a failed command leaves
the repository as it found it, and what an earlier run left (a cache) is kept.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from fleet import faults
from fleet.errors import FleetError
from fleet.git import Git, process_alive, refuse_option_like
from fleet.worker import commit_files

FLEET_DIR = "fleet"
OUTBOX = "outbox"  # .git/fleet/outbox: where `fleet run`'s coalesced workers hand their deltas to its merge
INDEX_REF = "refs/fleet/index/main"  # the field index the fetch brings (fleet.fieldindex.BRANCH)
HELD = "fleet-worker.held"  # locked (flock) by the process using a worker's cache


class Terminated(BaseException):
    """SIGTERM during the agents' turns: stop them, publish what finished."""


def remote_url(repo: Git, remote: str | None) -> str:
    """A URL for ``remote`` (a name, a URL or a path); None means origin, else this repository."""
    from fleet.repo import resolve_remote

    remote = resolve_remote(repo, remote)
    if remote is None:
        return Path(repo.text("rev-parse", "--path-format=absolute", "--git-common-dir")).as_uri()
    refuse_option_like(remote, "a remote")
    if "://" in remote or remote.startswith("git@"):
        return remote
    if os.sep in remote or remote.startswith("."):
        return Path(remote).resolve().as_uri()
    url = repo.proc("config", "--get", f"remote.{remote}.url").stdout.decode().strip()
    if not url:
        raise FleetError(f"no remote named {remote!r}")
    if "://" not in url and not url.startswith("git@") and Path(url).exists():
        return Path(url).resolve().as_uri()  # file:// so that --depth is honoured
    return url


@contextmanager
def _deferred(obey: bool) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done. With ``obey`` they
    are then delivered to the handlers in force; without, they are dropped
    (the block was the last thing to do)."""
    noted: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: noted.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if obey:
        for sig in dict.fromkeys(noted):
            signal.raise_signal(sig)


def clear_stale_locks(path: Path) -> None:
    """Remove git's own lock files (``shallow.lock``, ``packed-refs.lock``, a ref's
    ``.lock``) from the private repository ``path``. Only for a caller that holds
    the repository alone (a worker's hold, one `fleet run`): any lock there is a
    dead process's (a kill -9 mid-fetch), and would refuse every later fetch
    until removed by hand."""
    for lock in [*path.glob("*.lock"), *(path / "refs").rglob("*.lock")]:
        lock.unlink(missing_ok=True)


def make_dirs(path: Path, made: list[Path]) -> None:
    """``path.mkdir(parents=True, exist_ok=True)`` that adds to ``made`` each folder it
    made, outermost first: only a folder whose mkdir succeeded here, never one another
    process made at the same moment, so that a failed run removes only its own."""
    try:
        path.mkdir()
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_dirs(path.parent, made)
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise
        else:
            made.append(path)
    except FileExistsError:
        if not path.is_dir():
            raise
    else:
        made.append(path)


def remove_made(made: list[Path]) -> None:
    """Remove the folders of ``made`` (as :func:`make_dirs` noted them), innermost first,
    each only if it is empty now: what another process put there meanwhile stays, and
    so does the folder that holds it."""
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            pass


def private_repo(gitdir: Path, name: str, made: list[Path] | None = None) -> Path:
    """A bare repository of fleet's own under ``<gitdir>/fleet/``, made on first use;
    the folders made for it are added to ``made`` (:func:`make_dirs`)."""
    path = gitdir / FLEET_DIR / name
    if not (path / "HEAD").exists():
        make_dirs(path, made if made is not None else [])
        Git(path).run("init", "--quiet", "--bare")
    return path


def _gone(path: Path) -> Path:
    """Where :meth:`Workspace._undo` moves a private repository of its run's (``path``)
    to remove it: a name of this process's own beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.gone")


class Workspace:
    """Context manager: a cache repository and, once asked, an isolated worktree."""

    def __init__(self, gitdir: Path, worker: str) -> None:
        self.root = gitdir / FLEET_DIR
        self.cache_path = gitdir / FLEET_DIR / "workers" / f"{worker}.git"
        self.tmp = self.root / "tmp"
        self.worker = worker
        self.worktree: Path | None = None
        self._old_term: Any = None
        # SIGTERM (a runner's deadline) interrupts only the agents' turns; any
        # other step (fetch, commit, push) is short and finishes, so that what
        # the worker has is published and nothing is left half done.
        self.terminated = False
        self.interruptible = False
        self._held: int | None = None  # the open file whose lock says this process uses the cache
        # what this run made under .git/fleet, in the order it made it, each with whether it
        # is a private repository of this worker's (removed whole) or a folder (removed if
        # empty): all of it is removed again if the run fails (_undo)
        self._made: list[tuple[Path, bool]] = []

    def __enter__(self) -> Workspace:
        try:
            made: list[Path] = []
            try:
                make_dirs(self.tmp, made)
            finally:
                self._made += [(p, False) for p in made]
            self._hold()
            self._unlock_stale()
            self.recover()
        except BaseException:
            self._undo()  # nothing of a cache another run holds: this one holds none
            self._release()
            raise
        self._old_term = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def _hold(self) -> None:
        """This process alone uses the worker's cache until it is done (a lock the
        kernel drops when the process dies, however it dies); the cache is made if it
        is not there. A failed run that made the cache removes it while it still holds
        it (_undo): a lock taken on the file of a cache so removed is let go, and the
        cache made anew."""
        for _ in range(5):
            made: list[Path] = []
            try:
                private_repo(self.root.parent, f"workers/{self.worker}.git", made)
                fd = os.open(self.cache_path / HELD, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # removed by a failed run of this worker as we came: again
                continue
            finally:  # the folders above it: removed (if empty) when this run fails; the cache only once held
                self._made += [(p, False) for p in made if p != self.cache_path]
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise FleetError(f"worker {self.worker} is already working in this clone ({self.cache_path}); "
                                 "wait for it to finish") from None
            if self._still_there(fd):
                self._held = fd
                self.cache = Git(self.cache_path)
                if self.cache_path in made:
                    self._made.append((self.cache_path, True))
                self._sweep_gone()
                return
            os.close(fd)  # the lock of a cache a failed run removed meanwhile: make it again
        raise FleetError(f"worker {self.worker}'s cache {self.cache_path} was removed each time this run "
                         "made it (another run of the worker, failing at once?); run it again")

    def _still_there(self, fd: int) -> bool:
        """Whether the file ``fd`` locks is the cache's own now, not that of a cache removed meanwhile."""
        try:
            now = os.stat(self.cache_path / HELD)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def _sweep_gone(self) -> None:
        """A cache a failed run of this worker was removing when it was killed (-9)."""
        for stale in self.cache_path.parent.glob(f".{self.cache_path.name}.*.gone"):
            pid = stale.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)

    def own(self, path: Path) -> None:
        """``path``: a private repository under ``.git/fleet`` that only this worker uses, and
        only while it holds its cache (its knowledge cache), about to be made if missing.
        If this run fails, it is removed again when this run made it, with the folders
        above it that this run made (those if empty)."""
        missing: list[Path] = []
        at = path
        while at != self.root and at.parent != at and not at.exists():
            missing.append(at)
            at = at.parent
        self._made += [(p, p == path) for p in reversed(missing)]

    def _undo(self) -> None:
        """The run failed: remove what it made under .git/fleet, innermost first. A private
        repository of its own goes whole, while this run still holds the worker's cache
        (moved aside first, in one step: a run of the same worker starting meanwhile finds
        it whole or not at all); a folder goes only if it is empty (another worker's cache,
        another command's file in it: it stays). Signals wait until it is done."""
        with _deferred(obey=False):
            while self._made:
                path, whole = self._made.pop()
                if not whole:
                    remove_made([path])
                    continue
                gone = _gone(path)
                try:
                    os.replace(path, gone)
                except OSError:
                    gone = path
                shutil.rmtree(gone, ignore_errors=True)

    def _release(self) -> None:
        if self._held is not None:
            os.close(self._held)  # the cache is free for the next run
            self._held = None

    def _unlock_stale(self) -> None:
        """git's own lock files left in the cache (shallow.lock, a ref's .lock) by a
        worker killed mid-fetch: with the cache held by this process, any there is a
        dead process's. Its knowledge cache is held with it (``fleet.knowledge.fetch``)."""
        clear_stale_locks(self.cache_path)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.terminated = True
        if self.interruptible:
            raise Terminated()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            try:
                self.cleanup()
            except KeyboardInterrupt:
                # The interrupt came in the instant before cleanup could take it
                # in hand: clean up again (it is idempotent), then let whatever
                # was already happening stand: finished work stays finished.
                self.cleanup()  # returning None lets an exception already under way go on
        finally:
            try:
                if kind is not None:  # the run failed: what it made goes, before its hold does
                    self._undo()
            finally:
                if self._old_term is not None:
                    signal.signal(signal.SIGTERM, self._old_term)
                self._release()

    # -- residue ---------------------------------------------------------
    def recover(self) -> None:
        """Remove what an earlier run of this worker left if it was killed."""
        stale = list(self.tmp.glob(f"{self.worker}-*"))
        admin = self.cache_path / "worktrees"
        if not stale and not (admin.is_dir() and any(admin.iterdir())) and not self._has_branches():
            return  # the usual case: nothing to do, no git process spent
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        self.cache.proc("worktree", "prune")
        for ref in self.cache.refs("refs/heads/"):
            self.cache.proc("update-ref", "-d", ref.name)
        self.cache.drop_stale_scratch()

    def _has_branches(self) -> bool:
        heads = self.cache_path / "refs" / "heads"
        packed = self.cache_path / "packed-refs"
        return (heads.is_dir() and any(heads.rglob("*"))) or (
            packed.is_file() and b" refs/heads/" in packed.read_bytes())

    def cleanup(self) -> None:
        """Remove the worktree and anything else this worker made. An interrupt
        that arrives meanwhile (Ctrl-C, a runner's deadline) is noted, not
        obeyed: a worker that finished its tick just as the run was stopped
        must not leave half a worktree behind, and its finished work stands
        (whatever was already failing still fails)."""
        with _deferred(obey=False):
            faults.point("work.cleanup")
            if self.worktree is not None:
                self.cache.proc("worktree", "remove", "--force", str(self.worktree))
                shutil.rmtree(self.worktree, ignore_errors=True)
                self.worktree = None
            self.recover()

    # -- work ------------------------------------------------------------
    def seed(self) -> bool:
        """A new cache starts from what the repository it runs in already has, so that
        a fresh worker (on Actions, every worker: a fresh runner with a checkout of
        main) downloads only what changed since that checkout, not all of main again.

        The repository's packs are hard-linked into the cache (as ``git clone
        --local`` does: the cache keeps its links whatever later happens to the
        repository's own files) with its shallow boundary, and its tips become
        refs of the cache, which the fetch offers the remote as haves. The
        seeded fetch is checked for every object main needs; if anything is
        missing (a tip whose objects were loose), the cache is emptied and
        fetched plainly. False when there was nothing to seed from."""
        gitdir = self.root.parent
        packs = gitdir / "objects" / "pack"
        if self.cache.rev_parse("refs/fleet/main") is not None or not packs.is_dir():
            return False
        names = [p for p in packs.iterdir() if p.suffix in (".pack", ".idx") and p.stem.startswith("pack-")]
        stems = {p.stem for p in names if p.suffix == ".idx"} & {p.stem for p in names if p.suffix == ".pack"}
        if not stems:
            return False
        into = self.cache_path / "objects" / "pack"
        try:
            for stem in sorted(stems):
                for suffix in (".pack", ".idx"):  # the pack first: an index never names a pack not there
                    target = into / f"{stem}{suffix}"
                    if not target.exists():
                        os.link(packs / f"{stem}{suffix}", target)
        except OSError:  # another file system, or links refused: a plain fetch
            return False
        shallow = gitdir / "shallow"
        if shallow.is_file():
            (self.cache_path / "shallow").write_bytes(shallow.read_bytes())
        user = Git(gitdir)
        tips = {r.commit for r in user.refs("refs/") if r.name.endswith("/main") or r.name == "refs/heads/main"}
        head = user.rev_parse("HEAD")
        if head:
            tips.add(head)
        present = [t for t in sorted(tips) if self.cache.proc("cat-file", "-e", f"{t}^{{commit}}").returncode == 0]
        for i, sha in enumerate(present):
            self.cache.run("update-ref", f"refs/fleet/seed/{i}", sha)
        return bool(present)

    def _unseed(self) -> None:
        """Back to an empty cache: the seed could not stand for main."""
        for ref in self.cache.refs("refs/"):
            self.cache.proc("update-ref", "-d", ref.name)
        shutil.rmtree(self.cache_path / "objects" / "pack", ignore_errors=True)
        (self.cache_path / "objects" / "pack").mkdir(parents=True, exist_ok=True)
        (self.cache_path / "shallow").unlink(missing_ok=True)

    def fetch(self, url: str) -> tuple[str, set[int]]:
        """Shallow-fetch main, and learn which ticks this worker already delivered,
        in one round trip: the only moment this worker's view of state changes."""
        seeded = self.seed()
        p = self._fetch(url)
        if seeded and (p.returncode != 0 or self.cache.proc(
                "rev-list", "--objects", "--quiet", "refs/fleet/main").returncode != 0):
            self._unseed()  # a seed that lacked objects it claimed: start again without it
            p = self._fetch(url)
        elif seeded:
            for ref in self.cache.refs("refs/fleet/seed/"):
                self.cache.proc("update-ref", "-d", ref.name)
        if p.returncode != 0:  # said of the remote: the cache it names would be gone (a failed run's is removed)
            from fleet.repo import fetch_failed

            raise fetch_failed(url, p.stderr.decode(errors="replace") or f"exit {p.returncode}")
        sha = self.cache.rev_parse("refs/fleet/main")
        if sha is None:
            raise FleetError(f"{url}: has no main branch")
        delivered = {int(r.name.rsplit("/t", 1)[1]) for r in self.cache.refs("refs/fleet/delivered/")
                     if r.name.rsplit("/", 1)[1][1:].isdigit()}
        return sha, delivered

    def _fetch(self, url: str) -> Any:
        return self.cache.proc(
            "fetch", "--quiet", "--depth=1", "--no-tags", "--prune", url,
            "+refs/heads/main:refs/fleet/main",
            f"+refs/heads/fleet/*/{self.worker}:refs/fleet/delivered/*",
            "+refs/heads/fleet/index/*:refs/fleet/index/*",  # the field index (fleet.fieldindex), if any: a pattern, no error if none
        )

    def fetch_tasks(self, url: str) -> str | None:
        """Shallow-fetch the task queue (read only), for agents that work on tasks;
        its tip, or None when the fleet has no queue yet."""
        from fleet.tasks import BRANCH

        listed = self.cache.proc("ls-remote", "--heads", url, f"refs/heads/{BRANCH}")
        if listed.returncode == 0 and not listed.stdout.strip():
            return None  # no task was ever added: no queue, no task
        # and the claim refs (a claim lives there until the branch merges it: TaskQueue.read)
        p = self.cache.proc("fetch", "--quiet", "--depth=1", "--no-tags", "--refmap=", "--prune", url,
                            f"+refs/heads/{BRANCH}:refs/fleet/queue/{BRANCH}",
                            f"+refs/heads/{BRANCH}-claims/*:refs/fleet/queue/{BRANCH}-claims/*")
        if p.returncode != 0:
            why = p.stderr.decode(errors="replace").strip()[:300] or listed.stderr.decode(errors="replace").strip()[:300]
            raise FleetError(f"{url}: could not fetch the task queue: {why or f'git fetch exited {p.returncode}'}")
        return self.cache.rev_parse(f"refs/fleet/queue/{BRANCH}")

    def add_worktree(self, commit: str) -> Path:
        """An isolated worktree of ``commit`` in which nothing is checked out:
        the agents' delta files are all that is ever written there."""
        # An interrupt waits until git has made the worktree: a git killed half
        # way could write into the folder after cleanup removed it.
        with _deferred(obey=True):
            for _ in range(5):  # a failed run of another worker removes tmp when it is empty: made again
                self.tmp.mkdir(parents=True, exist_ok=True)
                try:
                    path = Path(tempfile.mkdtemp(prefix=f"{self.worker}-", dir=self.tmp))
                    break
                except FileNotFoundError:
                    continue
            else:
                raise FleetError(f"{self.tmp}: removed each time this run made it; run it again")
            self.worktree = path
            self.cache.run("worktree", "add", "--quiet", "--no-checkout", "--detach", str(path), commit)
        return path

    def commit(self, base: str, tick: int, files: dict[str, bytes] | None = None) -> str:
        """Commit ``files`` (path -> bytes, under deltas/), or the worktree's deltas/,
        on top of ``base``; returns the commit."""
        if files is None:
            assert self.worktree is not None
            files = {p.relative_to(self.worktree).as_posix(): p.read_bytes()
                     for p in sorted((self.worktree / "deltas").rglob("*.json"))}
        return commit_files(self.cache, base, tick, self.worker, dict(sorted(files.items())))
