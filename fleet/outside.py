"""Commits on main that the merge engine did not make: inputs, never silent.

Main has one writer, the merge engine; each of its commits names its tick
(:func:`fleet.ledger.tick_of`). Every other first-parent commit after genesis
is a person's: a config or schema change, seeded documents, a merged conflict
pull request, a hand edit. Replay takes such a commit as an input as it is,
and ``fleet replay``, ``fleet log`` and ``fleet status`` name it, with its
author and the files under ``state/`` and ``schemas/`` it changed.

Commits made before the fleet's first tick (its clock, ``state/fleet.json``,
still at tick 0) are not such inputs: they are the world's design, the
genesis the first tick starts from, checked whole by the first ``fleet run``
(:func:`before_first_tick`). A fleet started in a repository with months of
history is not told that every one of those commits went around it.

Some files only the merge engine can write truthfully: the clock and totals
(``state/fleet.json``), the ledger, the quarantine and the held conflicts. A
person's change to them is never a legitimate input and is refused: ``fleet
run`` does not adopt it, ``fleet replay --check`` fails on it and ``fleet
status`` says so. What counts is what such changes leave behind for the next
tick: the person's commits between two tick commits are judged together, so
a change reverted before the next tick is named but no longer refused (history
cannot be rewritten, and a check that can never pass again helps nobody).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import canonical
from fleet.checks import check_in, touches_world, world_problems
from fleet.config import CONFIG_PATH, FLEET_PATH
from fleet.errors import FleetError
from fleet.git import Git, RefUpdate
from fleet.ids import printable, utf8
from fleet.ledger import tick_of
from fleet.repo import TRACKING
from fleet.state import CONFLICT_DIR, LEDGER_DIR, QUARANTINE_DIR, GitSnapshot

WATCHED = ["state/", "schemas/"]
ZERO = "0" * 40

# The merge engine's own files, and why a person may not write them.
_ENGINE_ONLY = (
    (FLEET_PATH, "the clock and totals are written only by the merge engine"),
    (LEDGER_DIR + "/", "the ledger is written only by the merge engine"),
    (QUARANTINE_DIR + "/", "the quarantine is written only by the merge engine"),
    (CONFLICT_DIR + "/", "held conflicts are written only by the merge engine; "
                         "decide one with state/resolutions/<conflict id>.json"),
)


_ENGINE_PREFIXES = tuple(prefix for prefix, _ in _ENGINE_ONLY)
FORGED = ("only the merge engine makes tick commits, and main's clock (state/fleet.json) does not bear this "
          "one out: it is a person's commit")


NOT_UTF8 = "its name is not UTF-8 (shown escaped); names under state/ and schemas/ are UTF-8 text: rename or remove it"


def utf8_name(path: str) -> bool:
    """Whether ``path`` (as :func:`fleet.git.decode` gives it) was UTF-8 in git."""
    return utf8(path)


def claims_tick(message: str) -> bool:
    """Whether a commit message says it is a tick commit: a ``Fleet-Tick`` trailer,
    or a Fleet-Tick line anywhere (one written twice is no trailer to
    :func:`tick_of`, yet ``git log`` shows the commit as a tick's)."""
    return tick_of(message) is not None or any(line.lower().startswith("fleet-tick:")
                                               for line in message.splitlines())


def tick_commits(git: Git, rows: Iterable[tuple[str, str | None, str]]) -> dict[str, int]:
    """Commit -> tick, for the rows (commit, first parent, message) that are the
    merge engine's tick commits.

    A trailer is text anyone can write: a commit counts as tick N only if its
    clock (``state/fleet.json``) is at tick N and its parent's at N - 1, as
    every tick commit leaves them. A commit whose message claims a tick that
    its clock does not bear out is a person's commit (and refused: see
    :func:`scan`). One ``cat-file`` for all the rows."""
    claims = {c: (p, t) for c, p, body in rows if p is not None and (t := tick_of(body)) is not None}
    if not claims:
        return {}
    names = list(dict.fromkeys(f"{x}:{FLEET_PATH}" for c, (p, _) in claims.items() for x in (c, p)))
    blobs = git.cat_maybe(names)
    clocks: dict[str, int | None] = {}

    def clock(sha: str) -> int | None:
        if sha not in clocks:
            clocks[sha] = _clock(blobs.get(f"{sha}:{FLEET_PATH}"))
        return clocks[sha]

    return {c: t for c, (p, t) in claims.items() if clock(c) == t and clock(p) == t - 1}


def _clock(data: bytes | None) -> int | None:
    """The tick ``state/fleet.json``'s bytes say, or None if they say none."""
    if data is None:
        return None
    try:
        doc = canonical.parse(data)
    except canonical.JSONProblem:
        return None
    tick = doc.get("tick") if isinstance(doc, dict) else None
    return tick if isinstance(tick, int) and not isinstance(tick, bool) else None


def refusal(path: str) -> str | None:
    """Why a person's change to ``path`` is refused, or None if it may be an input."""
    for prefix, why in _ENGINE_ONLY:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return why
    return None


@dataclass
class Change:
    how: str  # added | modified | deleted
    path: str
    refused: str | None = None  # the rule, when the change is refused
    fixed: str | None = None  # the rule it broke, when the file was invalid and is valid again at the tip

    def __str__(self) -> str:
        return f"{self.how} {self.path}" + (f" (refused: {self.refused})" if self.refused else "") + (
            f" ({'reverted' if self.how == 'says' else 'invalid, fixed'} since: {self.fixed})" if self.fixed else "")


@dataclass
class OutsideCommit:
    """A first-parent commit of main not made by the merge engine."""

    commit: str
    author: str
    date: str
    subject: str
    changes: list[Change] = field(default_factory=list)
    setup: bool = False  # made before the fleet's first tick (:func:`before_first_tick`)

    @property
    def refused(self) -> list[Change]:
        return [c for c in self.changes if c.refused]

    def summary(self, most: int = 10) -> str:
        """One line: the commit, its author and what it changed."""
        shown = ", ".join(str(c) for c in self.changes[:most])
        more = f", and {len(self.changes) - most} more" if len(self.changes) > most else ""
        return f"commit {self.commit[:12]} by {self.author} ({self.date}, {self.subject!r}): {shown}{more}"

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "author": self.author, "date": self.date, "subject": self.subject,
                "changes": [c.__dict__.copy() for c in self.changes],
                "refused": [f"{c.path}: {c.refused}" for c in self.refused]}


Rows = list[tuple[str, str, str, str]]  # Git.changed_modes: (new mode, old blob, new blob, path)


def changes(git: Git, parent: str, commit: str, rows: Rows | None = None) -> list[Change]:
    """What ``commit`` changed under state/ and schemas/, from its first parent
    (``rows``: that diff, when the caller has it)."""
    if rows is None:
        rows = git.changed_modes(parent, commit, WATCHED)
    return [Change("added" if old == ZERO else "deleted" if new == ZERO else "modified", path)
            for _, old, new, path in rows]


def describe(git: Git, commit: str, parent: str, rows: Rows | None = None) -> OutsideCommit:
    """A person's commit: who, when, what it says and what it changed."""
    # `git log`, not `git show -s`: show computes the diff it then hides (0.8 s for a commit seeding 86k files)
    author, date, subject = git.text("log", "--no-walk", "--format=%an <%ae>%x00%aI%x00%s", commit).split("\0", 2)
    return OutsideCommit(commit, author, date, subject, changes(git, parent, commit, rows))


def scan(git: Git, history: Iterable[tuple[str, str | None, str]]) -> list[OutsideCommit]:
    """The commits of ``history`` (first-parent rows, oldest first, as
    :meth:`Git.first_parent_log` gives them) that the merge engine did not
    make and that changed state or schemas, with refused changes marked.

    The root commit is genesis, the starting state, and is not listed; nor
    is a commit before the fleet's first tick (:func:`before_first_tick`)
    unless it left something fleet refuses (or refused until fixed).
    """
    history = list(history)
    ticks = tick_commits(git, history)  # a trailer the clock does not bear out makes no tick commit
    bodies = {commit: body for commit, _, body in history}
    found: list[OutsideCommit] = []
    setup: bool | None = None  # in the commits before the first tick; None: not asked yet
    run: list[OutsideCommit] = []  # a person's commits since the last tick commit
    base: str | None = None
    diffs: dict[tuple[str, str], Rows] = {}  # (parent, commit) -> its diff, read once

    def judge() -> None:
        if run and base is not None:
            left = refused_left(git, base, run[-1].commit, diffs.get((base, run[-1].commit)))
            if run[0].setup:  # the world's design may lay down the engine's files: the first tick starts on them
                left = {path: why for path, why in left.items() if not path.startswith(_ENGINE_PREFIXES)}
            for path, why in left.items():
                touched = [c for oc in run for c in oc.changes if c.path == path]
                for c in touched:
                    c.refused = why
                if not touched:  # valid before, invalid under the run's new config or schemas
                    last = next((oc for oc in reversed(run) if oc.changes), run[-1])
                    last.changes.append(Change("left invalid", path, why))
        for i, oc in enumerate(run):  # a message that claims a tick: refused until a later commit reverts it
            if claims_tick(bodies[oc.commit]):
                tick = tick_of(bodies[oc.commit])
                said = f"Fleet-Tick: {tick}" if tick is not None else "a Fleet-Tick line"
                undone = any(f"This reverts commit {oc.commit}" in bodies[later.commit] for later in run[i + 1:])
                oc.changes.insert(0, Change("says", said, None if undone else FORGED, FORGED if undone else None))
        run.clear()

    tip = None
    for commit, parent, body in history:
        tip = commit
        if parent is None or commit in ticks:
            judge()
            setup = setup if parent is None else False
            continue
        if setup is None:
            setup = before_first_tick(git, parent)
        if not run:
            base = parent
        rows = diffs[(parent, commit)] = git.changed_modes(parent, commit, WATCHED)
        oc = describe(git, commit, parent, rows)
        oc.setup = bool(setup)
        run.append(oc)
        if oc.changes or claims_tick(body):
            found.append(oc)
    judge()
    # An invalid file that a later commit fixed is named, not refused for ever: the
    # merge refused to touch it meanwhile, so it spoiled nothing. A change to the
    # engine's own files stays refused: later ticks built on it.
    invalid = {c.path for oc in found for c in oc.refused if not refusal(c.path) and c.how != "says"}
    if invalid and tip is not None:
        snap = GitSnapshot(git, tip)
        present = set(snap.paths()) | set(git.special_entries(tip, "state/", "schemas/"))  # a gitlink is no blob
        still = problems(snap, [p for p in invalid if p in present])
        for oc in found:
            for c in oc.refused:
                if c.path in invalid and c.path not in still:
                    c.refused, c.fixed = None, c.refused
    # the world's design is named only where it broke a rule (refused, or fixed since)
    return [oc for oc in found if not oc.setup or any(c.refused or c.fixed for c in oc.changes)]


def before_first_tick(git: Git, commit: str) -> bool:
    """Whether ``commit`` is before the fleet's first tick: its clock
    (``state/fleet.json``) is missing or at tick 0. A person's commit on top of
    such a commit is part of the world's design, not an input to a tick."""
    data = git.show(commit, FLEET_PATH)
    if data is None:
        return True
    try:
        doc = canonical.parse(data)
    except canonical.JSONProblem:
        return False  # a clock no one can read is named where it is refused, not hidden as setup
    return isinstance(doc, dict) and doc.get("tick") == 0


def refused_left(git: Git, base: str, tip: str, rows: Rows | None = None) -> dict[str, str]:
    """Path -> rule, for what a person's commits ``base..tip`` leave behind that
    fleet refuses: a change to a file only the merge engine writes, and any
    state file or schema that ``fleet validate`` rejects at ``tip``
    (``rows``: the diff of ``base..tip``, when the caller has it)."""
    if (base, tip) in _LEFT:  # status judges the last run twice (its window, and main_refusal)
        return dict(_LEFT[(base, tip)])
    if rows is None:
        rows = git.changed_modes(base, tip, WATCHED)
    changed = {p: new for _, _, new, p in rows}
    # startswith over one tuple first: a seeding commit of 86,000 documents asks this of each
    out = {p: why for p in changed if p.startswith(_ENGINE_PREFIXES) and (why := refusal(p))}
    for mode, _, new, path in rows:
        if mode in ("120000", "160000"):  # a symbolic link or a submodule, added or changed into one
            out.setdefault(path, special_entry(mode))
        elif new != ZERO and not utf8_name(path):
            out.setdefault(path, NOT_UTF8)
    snap = GitSnapshot(git, tip)
    if CONFIG_PATH in changed or any(p.startswith("schemas/") for p in changed):
        paths = None  # the rules changed: every document is judged by the new ones
    else:
        paths = [p for p, new in changed.items() if new != ZERO]
    for path, why in problems(snap, paths).items():
        out.setdefault(path, why)
    if len(_LEFT) >= 64:
        _LEFT.clear()
    _LEFT[(base, tip)] = dict(out)
    return out


_LEFT: dict[tuple[str, str], dict[str, str]] = {}  # refused_left by (base, tip): commits never change


def recent(git: Git, head: str, ticks: int) -> list[OutsideCommit]:
    """:func:`scan` of main's history back to the last ``ticks`` tick commits."""
    limit = 4 * (ticks + 1) + 16
    while True:
        rows = git.first_parent_log(head, limit=limit)
        verified = tick_commits(git, rows)
        if len(verified) > ticks or len(rows) < limit or rows[0][1] is None:
            break
        limit *= 2
    # Start at the oldest tick commit wanted, so a run of a person's commits is judged whole.
    starts = [i for i, (commit, _, _) in enumerate(rows) if commit in verified]
    if len(starts) > ticks:
        rows = rows[starts[len(starts) - ticks - 1]:]
    return scan(git, rows)


def check_adoption(git: Git, base: str, tip: str) -> None:
    """Refuse a person's commits ``base..tip`` (one line naming the file, the
    rule and the commit) unless fleet may make ``tip`` the fleet's main.

    Refused: a commit that claims to be a tick commit (only the merge engine
    makes those), and whatever :func:`refused_left` finds.
    """
    rows = git.first_parent_log(tip, exclude=base)
    for commit, _, body in rows:
        tick = tick_of(body)
        # a Fleet-Tick line anywhere is refused, not only a well-formed trailer: one written twice is no
        # trailer to tick_of, yet `git log` shows the commit as a tick's
        forged = tick is not None or any(line.lower().startswith("fleet-tick:") for line in body.splitlines())
        if forged:
            said = f"merged tick {tick}" if tick is not None else "is a tick commit"
            raise FleetError(f"commit {commit[:12]} says it {said} (a Fleet-Tick line), but only the "
                             "merge engine makes tick commits; not adopted: drop it from your main")
    for oc in scan(git, [(base, None, ""), *rows]):
        bad = oc.refused
        if bad:
            more = f" (and {len(bad) - 1} more; `fleet validate` lists problems on disk)" if len(bad) > 1 else ""
            raise FleetError(f"{bad[0].path}: {bad[0].refused}{more}; not adopted as the fleet's main: your commit "
                             f"{oc.commit[:12]} ({oc.subject!r}): fix it and run again")


@dataclass
class Refused:
    """The newest change fleet refuses among the person's commits on main since
    its last tick commit (``base``): nothing is built on such a main."""

    commit: str
    author: str
    subject: str
    change: Change
    base: str  # the last tick commit before it: the engine's last word
    more: int  # other files (or claims) refused in the same commits

    def line(self, outcome: str) -> str:
        """One line: the file, the rule, the commit, ``outcome``, and how to undo it."""
        c, sha = self.change, self.commit[:12]
        who = f"commit {sha} by {printable(self.author, 120)} ({printable(self.subject, 120)!r})"
        more = f" ({self.more} more refused change(s) there: `fleet status` lists them)" if self.more else ""
        if c.how == "says":
            return (f"{who} on main says '{c.path}', but {c.refused}{more}; {outcome}: undo it with "
                    f"`git revert {sha}` pushed to main (for a commit that changed no file: "
                    f"`git commit --allow-empty -m 'This reverts commit {self.commit}.'`)")
        how = "left invalid" if c.how == "left invalid" else f"{c.how} outside the merge engine"
        return (f"{printable(c.path, 200)}: {c.refused}{more}; {how} by {who} on main; {outcome}: "
                f"undo it with `git revert {sha}` pushed to main")

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "author": self.author, "subject": self.subject, "how": self.change.how,
                "path": self.change.path, "rule": self.change.refused, "base": self.base, "more": self.more}


def since_last_tick(git: Git, head: str) -> tuple[str | None, list[tuple[str, str | None, str]]]:
    """(main's newest tick commit, the first-parent rows after it, oldest first);
    (None, every row) when main has no tick commit yet (the world's setup)."""
    limit = 16
    while True:
        rows = git.first_parent_log(head, limit=limit)
        ticks = tick_commits(git, rows)
        last = next((i for i in range(len(rows) - 1, -1, -1) if rows[i][0] in ticks), None)
        if last is not None:
            return rows[last][0], rows[last + 1:]
        if len(rows) < limit or rows[0][1] is None:
            return None, rows
        limit *= 4


def main_refusal(git: Git, head: str) -> Refused | None:
    """What fleet refuses among the person's commits on main (``head``) since its
    last tick commit, as :func:`scan` judges them; None when main may be built on.

    This is the same judgement a local main gets before it is adopted
    (:func:`check_adoption`), for a main that moved on the remote, where fleet
    cannot refuse a push: the merge and ``fleet run`` stop on it instead, and
    nothing is written. Commits before the first tick are the world's design
    (the first ``fleet run`` checks it whole) and are not judged here."""
    if head in _JUDGED:  # a commit's history never changes: `fleet run` asks before a tick and its merge again
        return _JUDGED[head]
    base, run = since_last_tick(git, head)
    found = scan(git, [(base, None, ""), *run]) if base is not None and run else []
    refused = [(oc, c) for oc in reversed(found) for c in oc.changes if c.refused]
    verdict = None
    if refused and base is not None:
        oc, c = refused[0]
        others = {(x.how == "says", x.path if x.how != "says" else y.commit) for y, x in refused} - {
            (c.how == "says", c.path if c.how != "says" else oc.commit)}
        verdict = Refused(oc.commit, oc.author, oc.subject, c, base, len(others))
    if len(_JUDGED) >= 64:
        _JUDGED.clear()
    _JUDGED[head] = verdict
    return verdict


_JUDGED: dict[str, Refused | None] = {}  # main_refusal's verdicts in this process, by main's commit


def check_state(snap: GitSnapshot, outcome: str) -> None:
    """Raise, naming the file and the rule, unless every state file and schema
    of ``snap`` passes ``fleet validate``'s checks."""
    found = problems(snap, None)
    if found:
        path, why = next(iter(found.items()))
        more = f" (and {len(found) - 1} more; `fleet validate` lists them)" if len(found) > 1 else ""
        raise FleetError(f"{path}: {why}{more}; {outcome}: fix that and commit again")


def problems(snap: GitSnapshot, paths: list[str] | None) -> dict[str, str]:
    """Path -> what ``fleet validate`` says of it, for the state files and
    schemas of ``snap`` (only ``paths``, if given) that it rejects."""
    # A link or a submodule is refused as what it is, never read as a document
    # (a link's blob is its target's name: "malformed JSON" would hide the rule).
    few = paths is not None and len(paths) <= 256  # named on the command line; more: one listing, filtered
    listed = snap.git.special_entries(snap.commit, *(paths if few and paths else ["state/", "schemas/"])) \
        if paths != [] else {}
    special = {path: special_entry(mode) for path, mode in listed.items() if paths is None or few or path in paths}
    if CONFIG_PATH in special:
        return {CONFIG_PATH: special[CONFIG_PATH]}
    for path in snap.paths() if paths is None else paths:  # never read as a document: named by the rule it breaks
        if not utf8_name(path):
            special.setdefault(path, NOT_UTF8)
    wanted = sorted(p for p in (snap.paths() if paths is None else paths) if _checked_file(p) and p not in special)
    try:
        snap.config  # noqa: B018  (a config that does not parse names itself)
    except FleetError as e:
        return {CONFIG_PATH: str(e).removeprefix(CONFIG_PATH + ": ")}
    out = dict(special)
    for path, data in snap.read_many(wanted).items():
        problem = check_in(snap, path, data or b"")
        if problem:
            out[path] = problem
    if paths is None or touches_world(paths):
        for path, problem in world_problems(snap.config, snap.read):
            out.setdefault(path, problem)
    return out


def special_entry(mode: str) -> str:
    """The rule a tree entry that is not a regular file breaks."""
    kind = "a symbolic link" if mode == "120000" else "a submodule (gitlink)"
    return f"is {kind}; state/ and schemas/ hold regular files only"


def _checked_file(path: str) -> bool:
    """The files ``fleet validate`` checks: everything under state/, schemas/*.json."""
    parts = path.split("/")
    return parts[0] == "state" or (parts[0] == "schemas" and len(parts) == 2 and path.endswith(".json"))


def bring_in_local_main(root: Path | str, url: str, fleet_main: str) -> str | None:
    """Commits a person made on their own main (a config or schema change)
    since the embedded origin was seeded: the fleet's main must not ignore them.

    The fleet's state is in ``refs/fleet/origin/main`` of this repository. If
    your main is behind it, nothing is to do. If it is ahead (you committed on
    top of the fleet's main), your commits are checked (``fleet.outside``:
    valid state, nothing that only the merge engine may write) and become the
    fleet's main, as a merged pull request would; the next tick works under
    them; a commit that fails the check is named and nothing is adopted. If
    the two diverged, nothing is moved and the message says how to put yours
    on top.
    """
    git = Git(root)
    local = git.rev_parse("refs/heads/main")
    if local is None or local == fleet_main:
        return None
    git.run("fetch", "--quiet", "--no-tags", "--refmap=", url, f"+refs/heads/main:{TRACKING}main")
    ancestor = lambda a, b: git.proc("merge-base", "--is-ancestor", a, b).returncode == 0  # noqa: E731
    if ancestor(local, fleet_main):
        return None  # the usual case: the fleet has merged ticks since; your main has nothing new
    ours = int(git.text("rev-list", "--count", f"{fleet_main}..{local}"))
    if git.proc("merge-base", local, fleet_main).returncode != 0:
        raise FleetError(f"your main and the fleet's main ({TRACKING}main, from {url}) share no history: "
                         "one of them is another repository's; check `git log -1 refs/fleet/origin/main`")
    if not ancestor(fleet_main, local):
        theirs = int(git.text("rev-list", "--count", f"{local}..{fleet_main}"))
        raise FleetError(
            f"your main has {ours} commit(s) the fleet's main lacks, and the fleet has {theirs} commit(s) "
            f"(merged ticks) since: put yours on top with `git rebase {TRACKING}main main`, then run again "
            f"(the fleet's state is {TRACKING}main; `git log {TRACKING}main` shows its ticks)")
    check_adoption(git, fleet_main, local)  # nothing unchecked becomes the fleet's main
    result = git.push(url, [RefUpdate("refs/heads/main", local, fleet_main)])
    if result.outcome != "won":
        raise FleetError(f"could not hand your main to the fleet: {result.reason}")
    git.proc("update-ref", f"{TRACKING}main", local)
    return f"your main's {ours} new commit(s) are now the fleet's main; the next tick works under them"


def unpushed_local_main(root: Path | str, url: str, fleet_main: str) -> str | None:
    """With a remote of your own, commits on your main that change state/ or
    schemas/ and that the fleet's main lacks are not the fleet's until you push
    them: what to tell you of them, or None. (With the embedded origin, `fleet
    run` brings them in itself: :func:`bring_in_local_main`.)"""
    git = Git(root)
    local = git.rev_parse("refs/heads/main")
    if local is None or local == fleet_main:
        return None
    if git.proc("cat-file", "-e", f"{fleet_main}^{{commit}}").returncode != 0:  # the run's merges work elsewhere
        git.fetch_refs(url, f"+refs/heads/main:{TRACKING}main")
    if git.proc("merge-base", "--is-ancestor", local, fleet_main).returncode == 0:
        return None
    if git.proc("merge-base", local, fleet_main).returncode != 0:
        return None  # no shared history: not this fleet's main (the remote's own checks say so)
    changed = git.proc("rev-list", "--count", f"{fleet_main}..{local}", "--", "state", "schemas")
    count = int(changed.stdout.decode().strip() or 0) if changed.returncode == 0 else 0
    if not count:
        return None
    return (f"note: your main has {count} commit(s) changing state/ or schemas/ that the fleet's main on its "
            f"remote lacks: the fleet runs the remote's main, not them; push them (git push <remote> main, on top "
            f"of {TRACKING}main) to make them the fleet's")


def adopt_local_main(path: Path | str, remote: str | None) -> str | None:
    """`fleet merge` in your repository, whose fleet lives in the embedded origin
    that `fleet run` made: your commits on main (a decision in
    ``state/resolutions/``, a config change) become the fleet's main first, as
    `fleet run` would make them, so that this merge applies them and says so,
    instead of finding nothing to do. None when there is nothing to bring in."""
    from fleet.git import toplevel
    from fleet.repo import EMBEDDED, embedded_origin

    if remote is not None:
        return None
    root = toplevel(path)
    git = Git(root)
    if git.proc("config", "--get", "fleet.remote").stdout.decode().strip() != EMBEDDED:
        return None
    url = embedded_origin(root).as_uri()
    if git.fetch_refs(url, f"+refs/heads/main:{TRACKING}main") is not None:
        return None  # the merge's own fetch says what is wrong
    fleet_main = git.rev_parse(f"{TRACKING}main")
    return bring_in_local_main(root, url, fleet_main) if fleet_main else None
