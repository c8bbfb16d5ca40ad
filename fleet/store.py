"""Records on a side branch: one JSON file per record, changed by compare-and-swap.

A store lives on a branch beside ``main`` (the task queue on ``fleet/tasks``),
not on it: ``main`` has one writer, the merge engine, and a record must not
wait for a tick. Every change is one commit per decision, published with a
compare-and-swap on the tip it was computed from (``Git.push`` with the old
value, or ``update-ref`` with the old value when the fleet has no remote). Of
two writers that read the same tip, exactly one lands; the other re-reads,
decides again and backs off with full jitter. The branch's history is the
audit trail, each message saying who did what and why.

Records are content-addressed, so a file already parsed and checked (in this
process, or by an earlier one: ``.git/fleet/cache/<name>.json``, keyed by
blob id) is not read, parsed or checked again: a change on a store of 10,000
records reads the few files that changed since the last one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fleet import canonical, faults, keys
from fleet import config as config_mod
from fleet.config import CONFIG_PATH, Config
from fleet.errors import FleetError
from fleet.git import RefUpdate, common_dir, refused_by_rule
from fleet.ids import NAME_RULE, is_safe_id, printable, utf8
from fleet.repo import TRACKING, FleetRepo, fetch_failed

MAX_ATTEMPTS = 400  # compare-and-swap rounds before a change gives up
# A change made less than this long (seconds) after one this process landed on the
# same branch fetches first rather than push first (see BranchStore.change).
PUSH_FIRST_AFTER = 1.0
# A holder's change (complete, renew, fail, release: ``priority``) that lost a race says so on
# the remote, with a branch <branch>-waiting/<id> pointing at the commit it tries to land; other
# changes yield while one younger than this (seconds, by that commit's time) is there.
WAITING_TTL = 30.0
HOLDER, FIRST = 1, 2  # priorities: a holder's change; one that even holders yield to (the watchdog's returns)
PRIORITY_PATIENCE = 600.0  # seconds a priority change keeps trying (others: the caller's patience, 120 s)
_landed: dict[tuple[str, str], float] = {}  # (clone, branch) -> when this process last landed a change there
CACHE_FORMAT = 2


def now() -> _dt.datetime:
    """The time a change is decided at (UTC)."""
    return _dt.datetime.now(_dt.UTC)


@dataclass(frozen=True)
class Kind:
    """One kind of record: the folder its files live under, the field that names
    a record, the protocol schema that checks it and the check that parses it."""

    folder: str  # "tasks": its files are tasks/**.json
    name_field: str  # "id"
    schema: str  # schemas/<schema>.schema.json
    check: Callable[[Any, str], dict[str, Any]]  # raises FleetError naming the file and the rule


@dataclass
class Records:
    """The checked records at one commit of the branch (``tip`` None: no branch yet),
    and main's config when it was asked for."""

    tip: str | None
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> record
    config: Config | None = None
    # a store with claim refs: record name -> (the commit its claim ref is at, the record in it;
    # None when that record is quarantined)
    claims: dict[str, tuple[str, dict[str, Any] | None]] = field(default_factory=dict)
    # files (and claim refs) that are no record, each with why: left in place, not read
    quarantined: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Change:
    """What one compare-and-swap round decided: commits to make, and the answer.

    In a store with claim refs, ``claims`` names the commits that also move a
    record's claim ref (commit index -> record name; compare-and-swap from the
    value read), ``merges`` the claim commits a commit folds into the branch
    (commit index -> extra parents), and ``off_branch`` says the commits are
    each made on the tip read and pushed to their claim refs only, not chained
    onto the branch; ``drops`` the claim refs it deletes (see ``BranchStore``)."""

    commits: list[tuple[str, dict[str, Any]]]  # (message, {path: record})
    result: Any
    claims: dict[int, str] = field(default_factory=dict)
    merges: dict[int, list[str]] = field(default_factory=dict)
    off_branch: bool = False
    # claim refs the change deletes in the same atomic push (record name -> the commit it was seen at):
    # those of records whose claim the branch holds, and that no claim can ever take again
    drops: dict[str, str] = field(default_factory=dict)


def _reason(message: str, where: str) -> str:
    """A check's error without the file it names first (a quarantine line names it)."""
    return printable(message[len(where) + 2:] if message.startswith(where + ": ") else message, 500)


@cache
def _cache_version(kinds: tuple[Kind, ...]) -> str:
    """Checked files are cached under the rules that checked them: the schemas and the code."""
    from fleet import __version__
    from fleet.template import protocol_schema_dir

    h = hashlib.sha256(f"{CACHE_FORMAT}:{__version__}".encode())
    for kind in kinds:
        h.update((protocol_schema_dir() / f"{kind.schema}.schema.json").read_bytes())
    checks = {sys.modules[k.check.__module__].__file__ or "" for k in kinds}
    for module in sorted({__file__, canonical.__file__, *checks}):  # the checks themselves, not only the version
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:16]


class BranchStore:
    """The records on one branch of a fleet repository and its remote."""

    # Decide on the view last seen and lease main in the push (see change). A store whose
    # branch lives on another remote than main (the message bus) cannot lease main there.
    push_first = True
    # A file on the branch that is no record (not JSON, refused by its check, a symbolic link,
    # a submodule) is quarantined, as the message bus quarantines a bad lane file: left in
    # place, named in Records.quarantined with why, and not read; the other records are
    # read as ever. False: such a file is an error (a store whose check says so itself).
    quarantine = False

    def __init__(self, repo: FleetRepo, branch: str, kinds: Sequence[Kind], *, what: str, cache: str,
                 fault: str, claim_path: Callable[[str], str] | None = None,
                 claim_above: Callable[[dict[str, Any], dict[str, Any] | None], bool] | None = None) -> None:
        """``what`` names the store in messages ("task queue"); ``cache`` names its
        cache file; ``fault`` prefixes its crash points (``<fault>.after-commit``,
        ``<fault>.during-push``). ``claim_path`` (a record's name -> its path) gives
        the store claim refs: a record may also be changed off the branch, by a
        compare-and-swap of its own ref ``<branch>-claims/<name>`` (see ``claim_ref``);
        ``claim_above(claim's record, the branch's or None)`` says whether a claim is
        newer than the branch's record (the task queue: a higher fence)."""
        self.repo = repo
        self.git = repo.git
        self.branch = branch
        self.kinds = tuple(kinds)
        self.what = what
        self.cache_name = cache
        self.fault = fault
        self._checked: dict[str, Any] | None = None  # "<folder>:<blob sha>" -> checked record
        self._scratch = False  # this process's scratch ref (write_commit) is still there
        self.claim_path = claim_path
        self.claim_above = claim_above
        self._claims_view: dict[str, str] = {}
        # in this process: the files of the last tip read, and main's config at the last commit read
        self._entries: tuple[str, dict[str, str], list[tuple[str, str]]] | None = None
        self._configs: dict[str, Config] = {}
        self._read_keys: list[str] = []  # the cache keys of the records the last read found

    # Claim refs. A change of one record that many writers make at once on different
    # records (a claim) need not wait for the branch: it is a commit on the tip its
    # writer read, pushed to refs/heads/<branch>-claims/<name> by compare-and-swap on
    # the value that writer saw there. Writers of different records push different refs,
    # which the remote takes in parallel; two writers of one record race as on the branch.
    # The record in a claim ref is newer than the branch's when the kind says so (the task
    # queue: a higher fence); the next change of that record on the branch merges the claim
    # commit in, so the branch's history keeps every claim.
    #
    # Cleanup: a branch change deletes the claim refs of the records it leaves for good
    # (the task queue: done, or failed for good) whose claims the branch holds, in the
    # same atomic push, compare-and-swap on the value read. A writer whose view is older
    # could then create that ref again from "no ref" and land: so a claim that creates its
    # ref leases the branch at the tip it decided on in its own push (the push lands only if
    # no change, cleanup or other, came between), or, in the rounds after a fetched one that
    # lost so, is checked after it lands (``_created_hold``). If the branch is still the tip the
    # claim was decided on, no cleanup came between; else the branch's record as it is now
    # must still be below the claim (``claim_above``). A claim that fails the check is taken
    # back (its ref deleted, compare-and-swap on the claim itself) and decided again, never
    # answered: readers never took it as a claim either, the branch's record being as new.
    def claim_ref(self, name: str) -> str:
        """The claim ref of record ``name`` on the remote."""
        return f"refs/heads/{self.branch}-claims/{name}"

    @property
    def claims_seen(self) -> str:
        """Where this clone keeps the claim refs as last fetched (or the refs themselves, with no remote)."""
        return f"{TRACKING}{self.branch}-claims/" if self.repo.remote else f"refs/heads/{self.branch}-claims/"

    @property
    def ref(self) -> str:
        """Where this clone keeps the branch as last fetched (or the branch itself, with no remote)."""
        return TRACKING + self.branch if self.repo.remote else f"refs/heads/{self.branch}"

    @property
    def waiting(self) -> str:
        """Where this clone keeps, as last fetched, the waiting marks of holders that lost a race."""
        return f"{TRACKING}{self.branch}-waiting/"

    # -- synchronising -----------------------------------------------------
    def fetch(self, main: bool = True) -> None:
        """Fetch the branch (and main, for the config): the moment state changes here.

        Only fleet's own tracking refs are written (``--refmap=``), and a fetch
        that loses a ref lock to another fleet process in this clone is
        retried: two changes from one clone are a race, not an error."""
        remote = self.repo.remote
        if not remote:
            return
        own = f"+refs/heads/{self.branch}:{self.ref}"
        specs = [f"+refs/heads/main:{TRACKING}main", own] if main else [own]
        # the waiting marks come with every fetch (a glob: none is no error), and go when they go
        waiting = f"+refs/heads/{self.branch}-waiting/*:{self.waiting}*"
        if self.claim_path is not None:  # and the claim refs
            specs.append(f"+refs/heads/{self.branch}-claims/*:{self.claims_seen}*")
        err = self.git.fetch_refs(remote, *specs, waiting, prune=True)
        if err is not None and "couldn't find remote ref" in err and self.branch in err:  # nothing was ever written
            self.git.proc("update-ref", "-d", self.ref)
            err = self.git.fetch_refs(remote, specs[0]) if main else None
        if err is not None:
            raise fetch_failed(remote, err)

    def claim_tips(self, prefix: str | None = None) -> dict[str, str]:
        """The claim refs as last fetched (or as found under ``prefix``): record name -> commit."""
        if self.claim_path is None:
            return {}
        prefix = prefix or self.claims_seen
        out = self.git.text("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        return {name[len(prefix):]: sha for name, _, sha in (line.partition(" ") for line in out.splitlines())}

    def read(self, tip: str | None = None, *, config_of: str | None = None,
             claims: dict[str, str] | None = None) -> Records:
        """The records at ``tip`` (default: the branch as last fetched). With
        ``config_of`` (a main commit), its config is read in the same git
        process as the record files. ``claims``: the claim refs to read
        (name -> commit; default: as last fetched, when ``tip`` is not given)."""
        if claims is None:
            claims = self.claim_tips() if tip is None else {}
        if tip is None:
            tip = self.git.rev_parse(self.ref)
        if tip and self._entries is not None and self._entries[0] == tip:
            entries, odd = self._entries[1:]  # a commit's files never change (claims off the branch leave it be)
        else:
            links: set[str] = set()
            gitlinks: set[str] = set()
            unnamed: list[str] = []
            folders = [k.folder + "/" for k in self.kinds]
            try:
                entries = self.git.ls_tree(tip, *folders, **({"links": links, "gitlinks": gitlinks}
                                                             if self.quarantine else {})) if tip else {}
            except UnicodeDecodeError:  # a file name that is not UTF-8
                if not self.quarantine or not tip:
                    raise
                entries = self._listing(tip, folders, links, gitlinks, unnamed)
            for p in [p for p in entries if not utf8(p)]:
                if not self.quarantine:  # (git's bytes kept as surrogates: fleet.git.decode)
                    raise FleetError(f"{self.branch}:{printable(p, 200)}: its name is not UTF-8")
                del entries[p]
                unnamed.append(printable(p, 200))
            odd = [(p, "its name is not UTF-8; a record is named by its id") for p in unnamed]
            odd += [(p, "is a symbolic link; a record is a regular file (git mode 100644)") for p in sorted(links)]
            odd += [(p, "is a submodule (a gitlink); a record is a regular file (git mode 100644)") for p in sorted(gitlinks)]
            if odd:
                entries = {p: sha for p, sha in entries.items() if p not in links}
            self._entries = (tip, entries, odd) if tip else None
        quarantined = [(f"{self.branch}:{p}", why) for p, why in odd]
        checked = self._cache()
        # the cache key is the kind's folder and the blob id: the path's first component
        keys = {path: f"{path[:path.index('/')]}:{sha}" for path, sha in entries.items()}
        wanted = [entries[p] for p, k in keys.items() if k not in checked]
        # a claim ref's record is cached by its commit (a commit never changes)
        claim_keys = {name: f"claim:{sha}" for name, sha in claims.items()}
        claim_names = {}
        for name, key in list(claim_keys.items()):
            if key not in checked and self.claim_path is not None:
                if not is_safe_id(name):
                    why = f"a claim ref is named by its record's id, which is a name ({NAME_RULE}; delete that ref)"
                    if not self.quarantine:
                        raise FleetError(f"{self.claim_ref(name)}: {why}")
                    quarantined.append((printable(self.claim_ref(name), 200), why))
                    del claim_keys[name]
                    continue
                claim_names[name] = f"{claims[name]}:{self.claim_path(name)}"
        wanted += list(claim_names.values())
        config_name = f"{config_of}:{CONFIG_PATH}" if config_of and config_of not in self._configs else None
        got = self.git.cat_maybe(wanted + ([config_name] if config_name else []))
        bad_claims: dict[str, str] = {}  # record name -> why its claim ref is quarantined
        for name, blob_name in claim_names.items():
            if got[blob_name] is None:
                why = f"its commit has no {blob_name.partition(':')[2]} (a claim ref holds its record)"
                if not self.quarantine:
                    raise FleetError(f"{self.claim_ref(name)}: {why}")
                bad_claims[name] = why
                got.pop(blob_name)
        config_data = got.pop(config_name) if config_name else None
        if config_name and config_data is None:
            assert config_of is not None
            missing = FleetError(f"{CONFIG_PATH}: missing on main; is this a fleet repository? "
                                 "(`fleet init DIR` makes one)")
            self._configs = {config_of: self.repo.config_despite(config_of, missing)}  # a person deleted it?
            config_name = None
        gone = next((n for n, b in got.items() if b is None), None)
        if gone is not None:
            raise FleetError(f"git object {gone} is missing from {self.git.path}")
        blobs: dict[str, bytes] = {n: b for n, b in got.items() if b is not None}
        if config_of and config_data is not None:
            try:
                cfg = config_mod.parse(config_data)  # main's, at that commit
            except FleetError as e:  # a person's change fleet refuses broke it: the last tick's, and a warning
                cfg = self.repo.config_despite(config_of, e)
            self._configs = {config_of: cfg}
        records = Records(tip, config=self._configs[config_of] if config_of else None)
        if wanted:
            kinds = {k.folder: k for k in self.kinds}
            for path, key in list(keys.items()):
                if key not in checked:
                    where = f"{self.branch}:{path}"
                    try:
                        checked[key] = kinds[key.partition(":")[0]].check(canonical.load(blobs[entries[path]], where),
                                                                          where)
                    except FleetError as e:
                        if not self.quarantine:
                            raise
                        quarantined.append((where, _reason(str(e), where)))
                        del keys[path]
        records.docs = {path: checked[key] for path, key in keys.items()}
        kinds = {k.folder: k for k in self.kinds}
        for name, blob_name in claim_names.items():
            path = blob_name.partition(":")[2]
            where = f"{self.claim_ref(name)}:{path}"
            try:
                if name in bad_claims:
                    raise FleetError(f"{where}: {bad_claims[name]}")
                doc = kinds[path[:path.index("/")]].check(canonical.load(blobs[blob_name], where), where)
                field_ = kinds[path[:path.index("/")]].name_field
                if doc.get(field_) != name:
                    raise FleetError(f"{where}: the claim ref of {name!r} holds the record of "
                                     f"{printable(str(doc.get(field_)), 60)!r} (a claim ref holds its own record)")
            except FleetError as e:
                if not self.quarantine:
                    raise
                quarantined.append((where, _reason(str(e), where)))
                continue
            checked[claim_keys[name]] = doc
        # a quarantined claim ref stays in view (a claim moves it by compare-and-swap from where it is)
        records.claims = {name: (claims[name], checked.get(key)) for name, key in claim_keys.items()}
        records.quarantined = quarantined
        self._read_keys = [*keys.values(), *claim_keys.values()]
        if wanted:
            self._save_cache({k: checked[k] for k in self._read_keys if k in checked})
        return records

    def _listing(self, tip: str, folders: list[str], links: set[str], gitlinks: set[str],
                 unnamed: list[str]) -> dict[str, str]:
        """``Git.ls_tree`` for a tree holding a name that is not UTF-8: such names go to
        ``unnamed`` (escaped), the rest as ``ls_tree`` lists them."""
        entries: dict[str, str] = {}
        for rec in self.git.run("ls-tree", "-r", "-z", "--full-tree", tip, "--", *folders).split(b"\0"):
            meta, _, raw = rec.partition(b"\t")
            try:
                path = raw.decode()
            except UnicodeDecodeError:
                unnamed.append(printable(raw.decode(errors="surrogateescape"), 200))
                continue
            if meta[7:12] == b"blob ":
                entries[path] = meta[12:].decode()
                if meta[:6] == b"120000":
                    links.add(path)
            elif meta[:6] == b"160000":
                gitlinks.add(path)
        return entries

    # -- the local cache of checked files ----------------------------------
    def _cache_file(self) -> Path:
        git_dir = self.git.path / ".git"
        base = git_dir if git_dir.is_dir() else common_dir(self.git.path)
        return base / "fleet" / "cache" / f"{self.cache_name}.json"

    def _cache(self) -> dict[str, Any]:
        if self._checked is None:
            self._checked = {}
            try:
                data = orjson.loads(self._cache_file().read_bytes())
                docs = data.get("docs") if isinstance(data, dict) and data.get("version") == _cache_version(self.kinds) else None
                names = {k.folder: k.name_field for k in self.kinds}
                if isinstance(docs, dict) and all(isinstance(d, dict) and (key.startswith("claim:") or isinstance(
                        d.get(names[key.partition(":")[0]]), str)) for key, d in docs.items()):
                    self._checked = docs
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no cache, or one from another version: read everything
        return self._checked

    def _save_cache(self, docs: dict[str, Any]) -> None:
        path = self._cache_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a name of this process and thread's own (not tempfile: its import costs every claim ~2 ms)
            tmp = path.with_name(f".{self.cache_name}-{os.getpid()}-{threading.get_ident()}")
            try:
                tmp.write_bytes(orjson.dumps({"version": _cache_version(self.kinds), "docs": docs}))
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, path)  # atomic: a reader sees the old cache or the new one
        except OSError:
            pass  # a cache that cannot be written costs speed, never correctness

    # -- changing ----------------------------------------------------------
    def _seen(self, ref: str) -> str:
        """Where this clone keeps the remote's ``ref`` (the branch or a claim ref) as last seen."""
        claims = f"refs/heads/{self.branch}-claims/"
        return self.claims_seen + ref[len(claims):] if ref.startswith(claims) else self.ref

    def publish(self, new: str | None, old: str | None, *, main: str | None = None,
                claims: Sequence[RefUpdate] = (), branch_at: str | None = None) -> bool:
        """Move the branch from ``old`` to ``new`` (None: leave it) and the claim
        refs ``claims`` from their old values to their new ones, all or none, if
        nobody moved any of them meanwhile (and drop this process's scratch ref in
        the same ref update). With ``main``, only if the remote's main is still
        that commit too: an atomic push whose lease on main moves nothing (git
        sends no update for it). ``branch_at`` (with ``new`` None, on a remote): only
        if the branch is still that commit too, leased in the same way."""
        remote = self.repo.remote
        scratch = f"delete {self.git.scratch_ref()}\n"
        moves = [RefUpdate(f"refs/heads/{self.branch}", new, old)] if new is not None else []
        moves += claims
        if not remote:
            lines = "".join(f"update {u.ref} {u.new} {u.old or '0' * 40}\n" if u.new else f"delete {u.ref} {u.old}\n"
                            for u in moves)
            won = self.git.proc("update-ref", "--stdin",
                                input=f"start\n{lines}{scratch}prepare\ncommit\n".encode()).returncode == 0
            self._scratch = not won
            return won
        updates = list(moves)
        if main is not None:
            updates.append(RefUpdate("refs/heads/main", main, main))
        if branch_at is not None and new is None:
            updates.append(RefUpdate(f"refs/heads/{self.branch}", branch_at, branch_at))
        result = self.git.push(remote, updates, atomic=len(updates) > 1,
                               while_running=lambda: faults.point(f"{self.fault}.during-push"))
        if result.outcome == "won":
            seen = "".join(f"update {self._seen(u.ref)} {u.new}\n" if u.new else f"delete {self._seen(u.ref)}\n"
                           for u in moves)
            self.git.proc("update-ref", "--stdin", input=f"{seen}{scratch}".encode())
            self._scratch = False
            return True
        if result.outcome == "lost":
            return False
        if (main is not None or branch_at is not None) and "--atomic" in result.reason and len(moves) == 1:
            # a server without atomic pushes: fetch instead; the rounds after a fetched one lease nothing
            return False
        hint = (f" (the {self.what} needs {self.branch} writable; see the README on branch protection)"
                if refused_by_rule(result.reason) else "")
        raise FleetError(f"push of {self.branch} to {remote} refused: {result.reason}{hint}")

    def _created_hold(self, decided_on: str | None, claims: Sequence[RefUpdate]) -> bool:
        """After a push landed: whether the claims in it that created their claim refs
        still hold (see ``claim_ref``). When one does not, every claim ref the push moved
        is set back to where it was (compare-and-swap on the claim: whoever moved it since
        decided on it), and False."""
        prefix = f"refs/heads/{self.branch}-claims/"
        created = {u.ref[len(prefix):]: u.new for u in claims if u.old is None and u.new and u.ref.startswith(prefix)}
        if not created or self.claim_above is None:
            return True
        remote = self.repo.remote
        branch = f"refs/heads/{self.branch}"
        if decided_on is not None and (
                # a push's lease that moves nothing: the remote's answer, without a fetch
                self.git.push(remote, [RefUpdate(branch, decided_on, decided_on)]).outcome == "won" if remote
                else self.git.rev_parse(branch) == decided_on):
            return True  # the branch has not moved since: no cleanup came between
        now_tip = self.git.rev_parse(branch)
        if remote:
            self.fetch(main=False)
            now_tip = self.git.rev_parse(self.ref)
        assert self.claim_path is not None
        names = {name: f"{now_tip}:{self.claim_path(name)}" for name in created}
        got = self.git.cat_maybe(list(names.values())) if now_tip else {}
        cache = self._cache()
        ok = True
        for name, made in created.items():
            blob = got.get(names[name])
            where = f"{self.branch}:{self.claim_path(name)}"
            branch_doc = canonical.load(blob, where) if blob is not None else None
            claim_doc = cache.get(f"claim:{made}")
            ok = ok and claim_doc is not None and self.claim_above(claim_doc, branch_doc)
        if ok:
            return True
        back = [RefUpdate(u.ref, u.old, u.new) for u in claims if u.new and u.ref.startswith(prefix)]
        if remote:
            self.git.push(remote, back, atomic=len(back) > 1)
        else:
            lines = "".join(f"update {u.ref} {u.new} {u.old}\n" if u.new else f"delete {u.ref} {u.old}\n" for u in back)
            self.git.proc("update-ref", "--stdin", input=f"start\n{lines}prepare\ncommit\n".encode())
        return False

    def _view(self) -> tuple[str | None, str | None, int]:
        """As last fetched, in one git process: the branch's tip, main's, and the
        highest priority of a change waiting to land (marks younger than WAITING_TTL; 0: none)."""
        claims = [self.claims_seen] if self.claim_path is not None else []
        out = self.git.text("for-each-ref", "--format=%(refname) %(objectname) %(committerdate:unix)",
                            self.repo.main_ref, self.ref, self.waiting, *claims)
        tips, waiting, young = {}, 0, time.time() - WAITING_TTL  # waiting: the highest priority of a young mark
        self._claims_view = {}  # the claim refs seen, read with the records (see change)
        for line in out.splitlines():
            name, sha, when = line.split(" ")
            if name.startswith(self.waiting):
                if int(when or 0) >= young:
                    waiting = max(waiting, FIRST if name[len(self.waiting):].startswith("first-") else HOLDER)
            elif claims and name.startswith(claims[0]):
                self._claims_view[name[len(claims[0]):]] = sha
            else:
                tips[name] = sha
        return tips.get(self.ref), tips.get(self.repo.main_ref), waiting

    def _fetched_view(self, main: bool = True) -> tuple[str | None, str, int]:
        """Fetch (main too, or not), then ``_view`` (main() says why main is missing)."""
        self.fetch(main=main)
        tip, main_tip, waiting = self._view()
        return tip, main_tip or self.repo.main(), waiting

    def _mark_waiting(self, mark: tuple[str, str | None, float] | None, new: str,
                      level: int = HOLDER) -> tuple[str, str | None, float] | None:
        """Say on the remote that this change waits to land ``new`` (a branch
        <branch>-waiting/<id> at it), or say it again when the mark is half its
        WAITING_TTL old. Best effort: a remote that refuses the mark leaves the change
        racing as any other. ``mark``: (ref, the commit it is at, when it was set)."""
        if mark is not None and time.monotonic() - mark[2] < WAITING_TTL / 2:
            return mark
        remote = self.repo.remote
        assert remote
        kind = "first-" if level >= FIRST else ""  # a mark that holders yield to as well
        ref = mark[0] if mark else f"refs/heads/{self.branch}-waiting/{kind}{os.urandom(6).hex()}"
        result = self.git.push(remote, [RefUpdate(ref, new, mark[1] if mark else None)])
        if result.outcome == "won":
            return ref, new, time.monotonic()
        return mark

    def _unmark(self, mark: tuple[str, str | None, float] | None) -> None:
        """Take a waiting mark back, and with it those this clone last fetched that
        are older than WAITING_TTL (their holders died: everyone ignores them, and
        this clears them away). Best effort, one push; each ref on its own."""
        if mark is None or mark[1] is None or not self.repo.remote:
            return
        drop = [RefUpdate(mark[0], None, mark[1])]
        out = self.git.proc("for-each-ref", "--format=%(refname) %(objectname) %(committerdate:unix)",
                            self.waiting).stdout.decode()
        old = time.time() - WAITING_TTL
        for line in out.splitlines():
            name, sha, when = line.split(" ")
            ref = f"refs/heads/{self.branch}-waiting/{name[len(self.waiting):]}"
            if int(when or 0) < old and ref != mark[0]:
                drop.append(RefUpdate(ref, None, sha))
        try:
            self.git.push(self.repo.remote, drop)
        except FleetError:
            pass

    def _commit(self, records: Records, ch: Change) -> tuple[str | None, list[RefUpdate]]:
        """The commits of ``ch``: the branch's new tip (None: off the branch) and the
        claim refs to move, each from the value ``records`` saw."""
        new = records.tip
        claims = []
        for i, (message, docs) in enumerate(ch.commits):
            # a record's text comes from outside: no key reaches the branch
            writes = {path: keys.redact_bytes(canonical.dumps(doc)) for path, doc in docs.items()}
            made = self.git.write_commit(records.tip if ch.off_branch else new, keys.redact(message), writes, [],
                                         keep_scratch=True, merges=ch.merges.get(i, ()))
            self._scratch = True
            if not ch.off_branch:
                new = made
            if i in ch.claims:
                seen = records.claims.get(ch.claims[i])
                claims.append(RefUpdate(self.claim_ref(ch.claims[i]), made, seen[0] if seen else None))
                path = next(iter(writes))
                # the next read knows this claim's record without reading or checking it (if it lands):
                # it is this writer's own, made from a checked record (a check would load the schema library)
                self._cache()[f"claim:{made}"] = canonical.load(writes[path], f"{self.claim_ref(ch.claims[i])}:{path}")
        assert ch.off_branch or new is not None
        if not ch.off_branch:
            claims += [RefUpdate(self.claim_ref(name), None, old) for name, old in ch.drops.items()]
        return (None if ch.off_branch else new), claims

    def change(self, decide: Callable[[Records, Config, _dt.datetime], Change], *,
               dry_run: bool = False, patience: float | None = None, fetched: bool = False,
               priority: int = 0, eager: bool = False) -> tuple[Change, bool]:
        """Decide, commit, push; on a lost race, fetch, re-read and decide again.

        ``decide`` sees a fresh read each round, so a writer that lost decides
        on what won. Returns the change and whether anything was pushed.

        Push first: when this clone has seen main and the branch before, the
        first round decides on them as last seen, without a fetch, and its
        push checks both (the branch's tip, and an atomic lease on main that
        moves nothing). If either has moved, git refuses the push before any
        object is sent, and the change is decided again after a fetch. Only a
        push that lands is taken from a view not fetched: any other answer
        (nothing to do, an error, no commit) is decided again on a fetch. A
        claimer whose own last change is still the tip so claims with one
        push and no fetch; one whose view is old pays a refused push.
        Push first serves a change made after a pause (a command, an
        agent's complete after its work), not a loop: a process that landed a
        change on this branch less than PUSH_FIRST_AFTER ago fetches first.
        Otherwise a writer changing back to back would keep winning, its
        round a fetch shorter than everyone else's, and starve the others
        (measured: one of five claimers did 114 of 120 tasks, two did none).

        Priority: a holder's change (``priority``: complete, renew, fail,
        release) must not lose every race to claimers for its patience. When
        one loses a race on a fetched view, it sets a waiting mark on the remote (a branch
        ``<branch>-waiting/<id>`` at the commit it tries to land) and retries
        with no backoff; every change without priority that sees a mark
        younger than WAITING_TTL in its fetch yields (pushes nothing, waits a
        little, fetches again) until the mark is gone. So once a mark is up,
        each other writer lands at most the one change it decided before it
        could see it before the holder lands. The mark goes when the
        change has landed (or given up); a holder killed meanwhile leaves
        one that everyone ignores once it is WAITING_TTL old. A priority
        change's patience is PRIORITY_PATIENCE. ``priority`` FIRST (the
        watchdog's returns) goes before holders too: a holder's change yields to
        its mark as a claim yields to a holder's. Holders change back to back
        (a claimer completes what it just claimed) and never back off, so a
        change whose round is longer than the gap between theirs (the
        watchdog's: it reads and decides on the whole queue) could otherwise
        lose every race for its whole patience.

        A round costs one fetch, one ls-tree, one cat-file (the record files
        and the config together), one fast-import, one push and one ref
        update: a change must stay cheap when many writers race.
        ``fetched``: the caller has just fetched main and the branch.
        ``eager``: push first even back to back, when the change turns out to be
        off the branch (claims on claim refs: a writer that changes back to back
        there starves nobody, each claim ref having its own race); a change on
        the branch decided on such a view is decided again after a fetch.
        """
        if patience is None:
            patience = PRIORITY_PATIENCE if priority else 120.0
        landed_key = (str(self.git.path), self.branch)
        paused = time.monotonic() - _landed.get(landed_key, -PUSH_FIRST_AFTER) >= PUSH_FIRST_AFTER
        back_to_back = not paused and eager  # push first only if the change is off the branch
        remote = self.repo.remote
        tip: str | None
        main: str | None
        if fetched or dry_run or not remote or not (paused or back_to_back) or not self.push_first:
            unfetched = False
        else:
            tip, main, waiting = self._view()
            # the first round decides on the view this clone last saw (if it saw one, and no holder waited)
            unfetched = tip is not None and main is not None and waiting <= priority
        waiting = 0
        if unfetched:
            pass
        elif not fetched and remote:
            tip, main, waiting = self._fetched_view()
        else:
            tip, main, waiting = self._view()
            main = main or self.repo.main()
        cfg: Config | None = None
        start = time.monotonic()
        lost = 0  # races lost to other writers, for the backoff
        attempts = 0
        mark: tuple[str, str | None, float] | None = None  # this change's waiting mark on the remote
        lease_branch = bool(remote)  # a claim creating its ref leases the branch in its push (see below)
        why = "kept moving (too many writers at once)"
        try:
            while attempts < MAX_ATTEMPTS:
                attempts += 1
                try:
                    records = self.read(tip, config_of=None if cfg else main, claims=dict(self._claims_view))
                    cfg = cfg or records.config
                    assert cfg is not None
                    ch = decide(records, cfg, now())
                except FleetError:
                    if not unfetched:
                        raise
                    ch = None
                if unfetched and (ch is None or not ch.commits or (back_to_back and not ch.off_branch)):
                    # an answer that is not a landed push is given on a fetched view only
                    (tip, main, waiting), cfg, unfetched = self._fetched_view(), None, False
                    continue
                assert ch is not None
                if not ch.commits or dry_run:
                    return ch, False
                if waiting > priority and not ch.off_branch:
                    # a holder waits to land its change on the branch: push nothing there, let it land
                    # first (a change off the branch, on claim refs only, is no race of the holder's)
                    attempts -= 1
                    if time.monotonic() - start > patience:
                        why = "had a change of higher priority waiting to land all that time"
                        break
                    time.sleep(random.uniform(0.02, 0.1))
                    tip, _, waiting = self._fetched_view(main=False)
                    continue
                new, claims = self._commit(records, ch)
                faults.point(f"{self.fault}.after-commit")
                # (a store without claim refs may override publish without them: the message bus does)
                extra: dict[str, Any] = {"claims": claims} if claims else {}
                # A claim that creates its claim ref leases the branch at the tip it decided on,
                # in its atomic push (beside main's lease, push first): if it lands, no cleanup
                # came between, and the check after landing (one more round trip) is not needed.
                # If the branch moved, the push is refused whole and the round decided again on
                # a fetch. Once a fetched round lost so, the rounds after it lease nothing and
                # are checked after they land: claims do not keep racing every change of the
                # branch (a claim off the branch races only its own record otherwise).
                leased = (lease_branch or unfetched) and new is None and records.tip is not None and \
                    self.claim_above is not None and any(u.old is None and u.new for u in claims)
                if leased:
                    extra["branch_at"] = records.tip
                if self.publish(new, records.tip, main=main if unfetched else None, **extra):
                    # (a change on the branch landed on the tip it read: no cleanup came between)
                    if new is not None or leased or self._created_hold(records.tip, claims):
                        _landed[landed_key] = time.monotonic()
                        if claims:  # the next process knows this claim's record without reading and checking it
                            cache = self._cache()
                            mine = [f"claim:{u.new}" for u in claims if u.new]
                            self._save_cache({k: cache[k] for k in [*self._read_keys, *mine] if k in cache})
                        return ch, True
                    # a claim whose ref a cleanup had deleted: taken back, and decided again on a fetch
                    (tip, main, waiting), cfg, unfetched = self._fetched_view(), None, False
                    lost += 1
                    continue
                if leased and not unfetched:
                    lease_branch = False  # (a fetched round that lost with its lease: see above)
                if priority and remote and not unfetched and new is not None:  # lost a race (an old view only lost to the past)
                    mark = self._mark_waiting(mark, new, priority)
                if time.monotonic() - start > patience:
                    break
                if unfetched:  # the view was old, not contended: fetch and go again at once
                    (tip, main, waiting), cfg, unfetched = self._fetched_view(), None, False
                    continue
                # lost the race: back off (full jitter, doubling to a 2 s cap) and re-read; the
                # losers must not keep the winner's machine busy with doomed attempts. A holder
                # does not back off: the others yield to its mark. Nor does a claim off the
                # branch: it lost its record to one other writer, not the branch to all of them.
                quick = priority or ch.off_branch
                time.sleep(random.uniform(0, 0.02 if quick else min(2.0, 0.05 * 2 ** min(lost, 6))))
                lost += 1
                tip, _, waiting = self._fetched_view(main=False)
        finally:
            if self._scratch:  # a lost race or an error left this process's scratch ref behind
                self.git.proc("update-ref", "-d", self.git.scratch_ref())
                self._scratch = False
            self._unmark(mark)
        raise FleetError(f"gave up after {attempts} attempts: the {self.what} on {remote or 'this repository'} "
                         f"{why}; try again")
