"""GitHub, where people decide: conflict pull requests, and issues for escalated tasks.

For each held conflict the merge opens one pull request, on its own branch
``fleet/conflict/<id>``, whose one change is a resolution file with a default
choice (the latest candidate) that the reviewer can edit. A hidden marker in
the body (``<!-- fleet-conflict-id: <id> -->``) lets every later run find and
update its own pull request instead of opening another. Merging it puts the
decision on main, which the next merge applies (fleet.resolve); closing it
without merging applies the documented fallback, keeping the value from
before the conflict.

GitHub's budgets are respected: one labelled-issues listing finds every
conflict pull request; writes are spaced (80 content-creating requests a
minute at most); PyGithub's retry waits out 403/429 secondary limits as
``retry-after`` says; a run stops opening pull requests when its request
budget or the hour's remaining quota runs low, and says how many wait.
Settings come from ``GITHUB_API_URL``, ``GITHUB_REPOSITORY`` and
``GITHUB_TOKEN`` (or ``GH_TOKEN``), as every GitHub Action expects.

A task that failed ``tasks.max_failures`` times is escalated; with
``tasks.escalate: "issue"`` the watchdog keeps one issue per escalated task
(:class:`TaskIssues`), found again by its marker (``<!-- fleet-task: <id>
-->``), reopened when the task escalates again and closed once it is reopened
or done. Only the watchdog's and the merge's jobs hold the token; no job that
runs a model does.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet import canonical, keys
from fleet.errors import FleetError, UsageError
from fleet.git import RefUpdate
from fleet.ids import printable
from fleet.records import MISSING, Conflict
from fleet.repo import FleetRepo
from fleet.resolve import RESOLUTION_DIR, fallback
from fleet.state import CONFLICT_DIR, Snapshot

if TYPE_CHECKING:
    from fleet.tasks import Task

LABEL = "fleet-conflict"
LABEL_COLOR = "d93f0b"
BRANCH_PREFIX = "fleet/conflict/"
# A field that is contested again after a decision gets the same conflict id;
# the tick it was opened in tells the episodes (and their pull requests) apart.
MARKER = "<!-- fleet-conflict-id: {key} -->"
_MARKER = re.compile(r"<!-- fleet-conflict-id: (c-[0-9a-f]+-t[0-9]+) -->")


def episode(c: Conflict) -> str:
    """The key of one conflict episode: its id and the tick it was opened."""
    return f"{c.id}-t{c.opened_tick}"
RESERVE = 50  # requests left in the hour below which a run opens nothing more
TASK_LABEL = "fleet-task"
TASK_LABEL_COLOR = "b60205"
TASK_MARKER = "<!-- fleet-task: {id} -->\n<!-- fleet-escalation: {at} -->"
_TASK_MARKER = re.compile(r"<!-- fleet-task: ([A-Za-z0-9][A-Za-z0-9_.-]{0,127}) -->")
_TASK_EPISODE = re.compile(r"<!-- fleet-escalation: ([0-9T:.Z+-]{1,40}) -->")


@dataclass
class GitHubSettings:
    api_url: str
    repository: str
    token: str
    seconds_between_writes: float = 0.75  # 80 content-creating requests a minute
    max_requests: int = 200  # per run; GITHUB_TOKEN has 1,000 an hour per repository

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, what: str = "--github") -> GitHubSettings:
        env = dict(os.environ if env is None else env)
        token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
        repository = env.get("GITHUB_REPOSITORY")
        if not token or not repository:
            raise UsageError(f"{what} needs GITHUB_REPOSITORY (owner/name) and GITHUB_TOKEN or GH_TOKEN")
        keys.register(token)
        return cls(env.get("GITHUB_API_URL", "https://api.github.com"), repository, token,
                   float(env.get("FLEET_GITHUB_WRITE_SPACING", cls.seconds_between_writes)))


@dataclass
class PRReport:
    opened: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)  # open, but nothing is left to decide
    requests: int = 0

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class _Client:
    """One repository through PyGithub: counted calls, waits for secondary rate
    limits, a request budget per run."""

    def __init__(self, settings: GitHubSettings) -> None:
        from github import Auth, Github, GithubRetry

        self.settings = settings
        self.gh = Github(
            base_url=settings.api_url.rstrip("/"),
            auth=Auth.Token(settings.token),
            retry=GithubRetry(total=6, secondary_rate_wait=60, max_rate_limit_wait=300),
            seconds_between_requests=None,
            seconds_between_writes=settings.seconds_between_writes,
            per_page=100,
        )
        self.requests = 0
        self._repo: Any = None

    @property
    def repo(self) -> Any:
        if self._repo is None:
            self._repo = self._call(self.gh.get_repo, self.settings.repository)
        return self._repo

    def _labelled(self, label: str) -> list[Any]:
        """Every issue and pull request with ``label``, open or closed: one listing a run."""
        issues = self._call(lambda: list(self.repo.get_issues(state="all", labels=[label])))
        self.requests += len(issues) // 100  # the listing's further pages
        return issues

    def _ensure_label(self, name: str, color: str, description: str) -> None:
        if self._call(self.repo.get_label, name, absent_on=(404,)) is None:
            self._call(self.repo.create_label, name, color, description)

    def _budget_left(self) -> bool:
        remaining, _limit = self.gh.rate_limiting
        return self.requests + 4 <= self.settings.max_requests and (remaining < 0 or remaining > RESERVE)

    def _call(self, fn: Any, *args: Any, absent_on: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """One API call, counted. Secondary rate limits (403/429 with
        retry-after) are waited out here too, since PyGithub's retry does not
        cover PATCH. A status in ``absent_on`` returns None instead of failing."""
        from github import GithubException
        from requests.exceptions import RetryError

        for attempt in range(1, 5):
            self.requests += 1
            try:
                return fn(*args, **kwargs)
            except GithubException as e:
                if e.status in absent_on:
                    return None
                wait = _retry_after(e)
                if wait is not None and attempt < 4:
                    time.sleep(min(wait, 300))
                    continue
                message = e.data.get("message") if isinstance(e.data, dict) else e.data
                raise FleetError(f"GitHub {self.settings.api_url} answered {e.status}: "
                                 f"{keys.redact(str(message))}") from None
            except RetryError as e:
                raise FleetError(f"GitHub {self.settings.api_url} kept failing after retries: "
                                 f"{keys.redact(str(e))[:300]}") from None
            except OSError as e:
                raise FleetError(f"GitHub {self.settings.api_url} unreachable: {keys.redact(str(e))}") from None
        raise AssertionError("unreachable")  # pragma: no cover


class ConflictPRs(_Client):
    """The conflict pull requests of one repository."""

    def __init__(self, settings: GitHubSettings) -> None:
        super().__init__(settings)
        self._by_conflict: dict[str, Any] | None = None

    # -- reading ---------------------------------------------------------
    def pulls(self) -> dict[str, Any]:
        """Conflict episode -> its pull request (as an issue), newest first wins."""
        if self._by_conflict is None:
            found: dict[str, Any] = {}
            for issue in self._labelled(LABEL):
                m = _MARKER.search(issue.body or "")
                if m and issue.pull_request is not None:
                    found.setdefault(m.group(1), issue)
            self._by_conflict = found
        return self._by_conflict

    def fallbacks(self, snap: Snapshot) -> list[dict[str, Any]]:
        """Fallback decisions for held conflicts whose pull request was closed unmerged."""
        out = []
        for c in _conflicts(snap).values():
            issue = self.pulls().get(episode(c))
            cid = c.id
            if issue is None or issue.state != "closed":
                continue
            pr = self._call(self.repo.get_pull, issue.number)
            if not pr.merged:
                out.append(fallback(cid, f"pull request #{issue.number} was closed without merging: "
                                         "the value from before the conflict stays"))
        return out

    # -- writing ---------------------------------------------------------
    def sync(self, fleet: FleetRepo, snap: Snapshot, head: str) -> PRReport:
        """Open or update one pull request per held conflict on main."""
        report = PRReport()
        conflicts = _conflicts(snap)
        pending = set(snap.under(RESOLUTION_DIR))
        labelled = False
        for cid, c in sorted(conflicts.items()):
            if f"{RESOLUTION_DIR}/{cid}.json" in pending:
                continue  # decided on main already; the next merge applies it
            issue = self.pulls().get(episode(c))
            body = _body(c)
            if issue is not None and issue.state == "open":
                # A new candidate joined: the default the reviewer merges unedited moves with it (issue 14).
                refreshed = _refresh_default(fleet, BRANCH_PREFIX + episode(c), c)
                if (issue.body or "").strip() != body.strip() or refreshed:
                    self._call(issue.edit, body=body)  # a PATCH: PyGithub does not retry it, _call does
                    report.updated.append({"conflict": cid, "number": issue.number})
                else:
                    report.unchanged.append(issue.number)
                continue
            if issue is not None:
                continue  # closed: merged (its decision is on main) or handled by the fallback
            if not self._budget_left():
                report.deferred.append(cid)
                continue
            if not labelled:
                self._ensure_label(LABEL, LABEL_COLOR, "A held conflict of fleet, waiting for a person")
                labelled = True
            branch = BRANCH_PREFIX + episode(c)
            _push_branch(fleet, head, branch, c)
            pr = self._create_pull(_title(c), body, branch)
            self._call(pr.add_to_labels, LABEL)
            report.opened.append({"conflict": cid, "number": pr.number, "branch": branch})
        self._close_settled(conflicts, report)
        report.requests = self.requests
        return report

    def _close_settled(self, conflicts: dict[str, Conflict], report: PRReport) -> None:
        """Close the open pull requests whose conflict episode is no longer held on
        main: decided there another way (``fleet resolve``, a person's commit, a
        revert) while its pull request waited. Left open, a reviewer could still
        merge it and decide again a conflict that is over."""
        held = {episode(c) for c in conflicts.values()}
        for key, issue in sorted(self.pulls().items()):
            if issue.state != "open" or key in held:
                continue
            if not self._budget_left():
                break
            note = (f"\n\n**Closed by fleet**: conflict `{key.rsplit('-t', 1)[0]}` is no longer held on main "
                    "(it was decided there another way); nothing is left to decide here.\n")
            self._call(issue.edit, state="closed", body=(issue.body or "").rstrip() + note)
            report.closed.append({"conflict": key.rsplit("-t", 1)[0], "number": issue.number})

    def _create_pull(self, title: str, body: str, branch: str) -> Any:
        """Open the pull request; if a retried POST already made it (a 5xx after
        GitHub acted), GitHub answers 422 and the one that exists is used."""
        found = self._call(self.repo.create_pull, title=title, body=body, head=branch, base="main",
                           absent_on=(422,))
        if found is not None:
            return found
        owner = self.settings.repository.split("/")[0]
        existing = self._call(lambda: list(self.repo.get_pulls(state="open", head=f"{owner}:{branch}")))
        if not existing:
            raise FleetError(f"GitHub refused the pull request for {branch} (422) and none exists")
        return existing[0]


def _conflicts(snap: Snapshot) -> dict[str, Conflict]:
    return {p.rsplit("/", 1)[1][:-5]: Conflict.parse(d or b"", p)
            for p, d in snap.read_many(snap.under(CONFLICT_DIR)).items()}


def _retry_after(e: Any) -> float | None:
    """Seconds a 403/429 secondary rate limit asks us to wait, if it is one."""
    if e.status not in (403, 429):
        return None
    headers = {k.lower(): v for k, v in (e.headers or {}).items()}
    if "retry-after" in headers:
        try:
            return float(headers["retry-after"])
        except ValueError:
            return 60.0
    message = str(e.data.get("message", "") if isinstance(e.data, dict) else e.data).lower()
    return 60.0 if "secondary rate limit" in message else None


def _default_choice(c: Conflict) -> dict[str, Any]:
    valued = [x for x in c.candidates if "value" in x]
    if valued:  # the latest candidate: what last-writer-wins would have picked
        return {"choose": valued[-1]["delta"]}
    return {"choose": "base"}


DEFAULT_BY = "the reviewer of this pull request"


def _refresh_default(fleet: FleetRepo, branch: str, c: Conflict) -> bool:
    """Point the resolution file on the pull request's branch at the latest
    candidate again, if fleet wrote it and nobody edited it since: a reviewer
    who merges it unedited gets the value the README promises, never an older
    one. A branch a person committed to is theirs and is left alone. True if
    the branch moved."""
    from fleet.git import FLEET_IDENT
    from fleet.repo import TRACKING

    ref = (TRACKING if fleet.remote else "refs/heads/") + branch
    tip = fleet.git.rev_parse(ref)
    if tip is None:
        return False
    path = f"{RESOLUTION_DIR}/{c.id}.json"
    author = fleet.git.text("log", "-1", "--format=%an <%ae>", tip)
    try:
        current = canonical.load(fleet.git.show(tip, path) or b"", path)
    except FleetError:
        return False  # edited into something else: the reviewer's to fix
    if author != f"{FLEET_IDENT[0]} <{FLEET_IDENT[1]}>" or not isinstance(current, dict) \
            or set(current) != {"conflict", "choose", "by"} or current.get("by") != DEFAULT_BY:
        return False
    decision = {"conflict": c.id, **_default_choice(c), "by": DEFAULT_BY}
    if current == decision:
        return False
    commit = fleet.git.write_commit(tip, f"fleet: the default is the latest candidate of {c.id}\n",
                                    {path: canonical.dumps(decision)}, [])
    result = fleet.git.push(fleet.remote or ".", [RefUpdate(f"refs/heads/{branch}", commit, tip)])
    if result.outcome == "refused":
        raise FleetError(f"push of {branch} failed: {result.reason}")
    return result.outcome == "won"


def _push_branch(fleet: FleetRepo, head: str, branch: str, c: Conflict) -> None:
    """A branch off main whose one change is the resolution file with the default choice."""
    decision = {"conflict": c.id, **_default_choice(c), "by": DEFAULT_BY}
    commit = fleet.git.write_commit(head, f"fleet: decide {c.collection}/{c.doc} {printable('.'.join(c.path))}\n",
                                    {f"{RESOLUTION_DIR}/{c.id}.json": canonical.dumps(decision)}, [])
    target = fleet.remote or "."
    result = fleet.git.push(target, [RefUpdate(f"refs/heads/{branch}", commit, None)])
    if result.outcome == "refused":  # lost: an earlier run's branch stays as it is
        raise FleetError(f"push of {branch} failed: {result.reason}")


def _title(c: Conflict) -> str:
    return f"fleet: decide {c.where}"


def _cell(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = text if len(text) <= 200 else text[:197] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _body(c: Conflict) -> str:
    rows = ["| choose | agent | worker | tick | utc | value |", "| --- | --- | --- | --- | --- | --- |"]
    for x in c.candidates:
        value = _cell(x["value"]) if "value" in x else _cell(x.get("ops"))
        rows.append(f"| `{x['delta']}` | {x['agent']} | {x['worker']} | {x['tick']} | {x['utc']} | {value} |")
    before = _cell(c.base) if c.base is not MISSING else "(absent)"
    path = f"{RESOLUTION_DIR}/{c.id}.json"
    text = "\n".join([
        MARKER.format(key=episode(c)),
        f"## Held conflict on `{c.collection}/{c.doc}`, field `{'.'.join(c.path)}`",
        "",
        f"Competing changes since tick {c.opened_tick}; policy `{c.policy}` could not decide "
        f"({c.reason or ''}). The field keeps its value until you decide: {before}.",
        "",
        *rows,
        "",
        f"**To decide**, edit `{path}` on this branch: set `\"choose\"` to a delta from the table, "
        "to `\"base\"` to keep the value from before the conflict, or replace it with `\"value\": ...`. "
        "Then merge this pull request: the next `fleet merge` applies the decision. "
        "**Closing it without merging** keeps the value from before the conflict (the fallback).",
    ])
    return keys.redact(text) + "\n"


# -- issues for escalated tasks ---------------------------------------------------
@dataclass
class IssueReport:
    opened: list[dict[str, Any]] = field(default_factory=list)
    updated: list[dict[str, Any]] = field(default_factory=list)
    reopened: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    requests: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.opened or self.updated or self.reopened or self.closed)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class TaskIssues(_Client):
    """One issue per escalated task of the queue (``tasks.escalate: "issue"``)."""

    def issues(self) -> dict[str, Any]:
        """Task id -> its issue (by the marker in the body), the newest first."""
        found: dict[str, Any] = {}
        for issue in self._labelled(TASK_LABEL):
            m = _TASK_MARKER.search(issue.body or "")
            if m and issue.pull_request is None:
                found.setdefault(m.group(1), issue)
        return found

    def sync(self, tasks: dict[str, Task]) -> IssueReport:
        """Open an issue for each escalated task that has none; update one whose
        task changed; reopen one whose task escalated again after it was closed
        (the escalation's time is in the body: a person closing it while the
        task stays failed is left alone); close the open ones whose task was
        reopened, done or removed."""
        report = IssueReport()
        found = self.issues()
        labelled = False
        for tid, t in sorted(tasks.items()):
            if not t.escalated:
                continue
            title, body = _task_title(t), _task_body(t)
            issue = found.get(tid)
            if issue is not None and issue.state == "open":
                if (issue.body or "").strip() != body.strip() or issue.title != title:
                    self._call(issue.edit, title=title, body=body)
                    report.updated.append({"task": tid, "number": issue.number})
                else:
                    report.unchanged.append(issue.number)
                continue
            episode = _TASK_EPISODE.search(issue.body or "") if issue is not None else None
            if episode and episode.group(1) == _escalation(t):
                continue  # closed by a person for this very escalation: theirs to reopen
            if not self._budget_left():
                report.deferred.append(tid)
                continue
            if issue is not None:
                self._call(issue.edit, title=title, body=body, state="open")
                report.reopened.append({"task": tid, "number": issue.number})
                continue
            if not labelled:
                self._ensure_label(TASK_LABEL, TASK_LABEL_COLOR,
                                   "A fleet task that failed tasks.max_failures times, waiting for a person")
                labelled = True
            made = self._call(self.repo.create_issue, title=title, body=body, labels=[TASK_LABEL])
            report.opened.append({"task": tid, "number": made.number})
        for tid, issue in sorted(found.items()):
            t = tasks.get(tid)
            if issue.state != "open" or (t is not None and t.escalated):
                continue
            now = "no longer in the queue" if t is None else f"{t.status} again" if t.status == "pending" else t.status
            self._call(issue.edit, state="closed",
                       body=(issue.body or "").rstrip() + f"\n\n**Closed by fleet**: task `{tid}` is {now}.\n")
            report.closed.append({"task": tid, "number": issue.number})
        report.requests = self.requests
        return report


def _escalation(t: Task) -> str:
    """Which escalation of ``t`` this is: when it happened (a queue from an earlier
    fleet has no escalated_at; its last change is when it failed for good)."""
    return t.escalated_at if isinstance(t.escalated_at, str) else t.updated_at


def _task_title(t: Task) -> str:
    times = "once" if t.failures == 1 else f"{t.failures} times"
    return keys.redact(f"fleet: task {t.id} failed {times}: {printable(t.title, 120)}")


def _fenced(text: str) -> str:
    """Untrusted text as a code block no line of it can close (no mention, link or markup runs)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _task_body(t: Task) -> str:
    from fleet.tasks import MISSING, task_path

    error = t.error if isinstance(t.error, str) and t.error else "none recorded"
    rows = [("escalated at", _escalation(t)),
            ("failures", str(t.failures)), ("attempts", str(t.attempts)),
            ("last holder", f"`{printable(t.claimed_by or 'none', 100)}` (fence {t.fence})"),
            ("deps", ", ".join(f"`{d}`" for d in t.deps) or "none"),
            ("paths", ", ".join(f"`{printable(p, 100)}`" for p in t.paths) if t.paths is not MISSING else "none"),
            ("record", f"`fleet/tasks:{task_path(t.id)}`")]
    text = "\n".join([
        TASK_MARKER.format(id=t.id, at=_escalation(t)),
        f"## Task `{t.id}` is escalated: it failed {'once' if t.failures == 1 else f'{t.failures} times'}",
        "",
        "Its title:",
        "",
        _fenced(printable(t.title, 300)),
        "",
        "The queue stopped handing it out after `tasks.max_failures` failures, and waits for a person. "
        "The last error:",
        "",
        _fenced(printable(error, 4000).replace("\\x0a", "\n")),
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {v.replace('|', '/')} |" for k, v in rows),
        "",
        f"**To give it another go**, fix what made it fail, then run `fleet task reopen {t.id}`: it is "
        "pending again with its failures forgiven, and the watchdog closes this issue at its next run. "
        "Closing this issue by hand changes nothing in the queue.",
    ])
    return keys.redact(text) + "\n"
