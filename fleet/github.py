"""Conflict pull requests: where people decide what no policy could.

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
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from fleet import canonical, keys
from fleet.errors import FleetError, UsageError
from fleet.git import RefUpdate
from fleet.ids import printable
from fleet.records import MISSING, Conflict
from fleet.repo import FleetRepo
from fleet.resolve import RESOLUTION_DIR, fallback
from fleet.state import CONFLICT_DIR, Snapshot

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
    requests: int = 0

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class ConflictPRs:
    """The conflict pull requests of one repository."""

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
        self._by_conflict: dict[str, Any] | None = None

    # -- reading ---------------------------------------------------------
    @property
    def repo(self) -> Any:
        if self._repo is None:
            self._repo = self._call(self.gh.get_repo, self.settings.repository)
        return self._repo

    def pulls(self) -> dict[str, Any]:
        """Conflict episode -> its pull request (as an issue), newest first wins."""
        if self._by_conflict is None:
            found: dict[str, Any] = {}
            issues = self._call(lambda: list(self.repo.get_issues(state="all", labels=[LABEL])))
            self.requests += len(issues) // 100  # the listing's further pages
            for issue in issues:
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
                if (issue.body or "").strip() != body.strip():
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
                self._ensure_label()
                labelled = True
            branch = BRANCH_PREFIX + episode(c)
            _push_branch(fleet, head, branch, c)
            pr = self._create_pull(_title(c), body, branch)
            self._call(pr.add_to_labels, LABEL)
            report.opened.append({"conflict": cid, "number": pr.number, "branch": branch})
        report.requests = self.requests
        return report

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

    def _ensure_label(self) -> None:
        if self._call(self.repo.get_label, LABEL, absent_on=(404,)) is None:
            self._call(self.repo.create_label, LABEL, LABEL_COLOR, "A held conflict of fleet, waiting for a person")

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


def _push_branch(fleet: FleetRepo, head: str, branch: str, c: Conflict) -> None:
    """A branch off main whose one change is the resolution file with the default choice."""
    decision = {"conflict": c.id, **_default_choice(c), "by": "the reviewer of this pull request"}
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
