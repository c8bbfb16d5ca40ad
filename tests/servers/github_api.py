"""A local GitHub REST API for tests, in front of a real bare git repository.

It speaks the part of the REST API that fleet's conflict pull requests use,
as PyGithub 2.x calls it: the repository, pull requests (list with
``state``/``head``/``base`` filters, get, create, edit, merge), issues (list
with ``labels``/``state``, get, create, edit; pull requests share the issue
numbers and appear in the issue listing with a ``pull_request`` key, as on
GitHub), labels (list, get, create, add to / set on / remove from an issue),
git refs (get, delete) and branches (get), workflows (list, get, and the
``workflow_dispatch`` event: ``POST .../actions/workflows/{id}/dispatches``,
checked against the workflow file at the ref as GitHub checks it), workflow
runs (list: one queued run per dispatch), and ``/rate_limit``. Bodies,
status codes and error shapes follow GitHub's: errors are ``{"message",
"documentation_url", "status"}`` and a 422 adds ``"errors": [...]``, e.g. a
second pull request for the same head answers 422 ``Validation Failed`` with
``errors[0].message == "A pull request already exists for acme:branch."``.
Lists paginate with ``per_page``/``page`` and a ``Link`` header whose URLs,
as GitHub's do, name the repository by id (``/repositories/{id}/...``).

Branches and merges are real git operations on the bare repository: a head
branch must exist to open a pull request (and have commits that main has
not), a merge writes a merge commit (parents: main, head) with
``git merge-tree --write-tree`` + ``git commit-tree`` and moves main with a
compare-and-swap ``git update-ref``, a conflicting merge answers 405, and
deleting a branch (through the API or directly in the repository) closes the
open pull requests whose head it was, as GitHub does. Pushes to a head branch
show up as the pull request's new ``head.sha``.

Every response carries GitHub's headers: ``X-RateLimit-Limit`` (1,000 by
default, the budget of a repository's ``GITHUB_TOKEN``), ``-Remaining``
(one less per request; ``/rate_limit`` is free), ``-Reset``, ``-Used``,
``-Resource: core``, ``X-GitHub-Request-Id``, ``Content-Type: application/
json; charset=utf-8``. When the budget is spent, requests get GitHub's
primary rate limit 403 (``API rate limit exceeded for installation ...``)
until the reset.

Usage::

    with GitHubAPI(bare_repo=path, owner="acme", repo="fleet", token="t") as api:
        gh = api.client()   # or github.Github(base_url=api.url, auth=Auth.Token("t"))
        api.fail("POST", r"/pulls$", 403)           # one secondary rate limit, retry-after: 1
        ...
        api.requests        # every request: method, path, query, body, time, status
        api.count("POST", r"/pulls$")
        api.pulls[1].merged
        api.merge(2); api.close(3)                  # a person pressing the buttons
        api.dispatches                              # every workflow_dispatch event: workflow, ref, inputs

Scripted failures: ``api.fail(method, path_re, status, body=None,
headers=None, times=1, delay=0.0)`` queues responses, each used once by the
first request whose method and normalised path (``/repos/{owner}/{repo}/...``,
also for the ``/repositories/{id}`` form) match; ``re.search`` on the path.
Default bodies and headers by status: 403 and 429 the secondary rate limit
with ``retry-after: 1``; 5xx ``{"message": "Server Error"}``. ``headers``
replaces the default headers (``headers={}``: a 403 without retry-after).
A ``str`` body is sent as ``text/html``. ``after=True``: the request takes
effect, then the failure answers it (a 502 after the pull request was made).

Secrets. The server never prints or logs anything. The token is kept only as
a fingerprint (:meth:`GitHubAPI.saw_token`) and recorded headers show
``[redacted]`` for it; a wrong token answers 401 ``Bad credentials``, a
missing one 401 ``Requires authentication``.

Run this file to self-test it against PyGithub::

    python tests/servers/github_api.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import http
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MASK = "[redacted]"
AUTH_HEADERS = ("authorization", "proxy-authorization")
DOCS = "https://docs.github.com/rest"
SECONDARY_MESSAGE = ("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                     "If you reach out to GitHub Support for help, please include the request ID {rid}.")
BOT = "github-actions[bot]"
BOT_ID = 41898282
ZERO = "0" * 40
MERGE_METHODS = ("merge", "squash", "rebase")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


# -- state ------------------------------------------------------------------

@dataclass(kw_only=True)
class Issue:
    """An issue as the server holds it (pull requests are issues too)."""

    number: int
    id: int
    title: str
    body: str | None = None
    state: str = "open"  # open | closed
    labels: list[str] = field(default_factory=list)  # label names, as created
    user: str = BOT
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    closed_at: str | None = None
    closed_by: str | None = None
    state_reason: str | None = None

    @property
    def is_pull(self) -> bool:
        return False


@dataclass(kw_only=True)
class PullRequest(Issue):
    """A pull request; ``head``/``base`` are branch names in the bare repository."""

    pr_id: int
    head: str
    base: str = "main"
    head_sha: str = ""  # the head branch's tip, as last seen
    base_sha: str = ""  # the base branch's tip, as last seen
    draft: bool = False
    merged: bool = False
    merged_at: str | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None

    @property
    def is_pull(self) -> bool:
        return True


@dataclass
class Label:
    id: int
    name: str
    color: str
    description: str | None = None
    default: bool = False


@dataclass
class Dispatched:
    """One ``workflow_dispatch`` event GitHub accepted: the workflow run it queued."""

    run_id: int
    run_number: int
    workflow_id: int
    path: str  # .github/workflows/<file>
    name: str
    ref: str  # as the request named it
    head_branch: str
    head_sha: str
    inputs: dict[str, Any]
    actor: str
    created_at: str = field(default_factory=_now)
    wall: float = field(default_factory=time.time)


@dataclass
class Seen:
    """One request as received, and the status it was answered with."""

    n: int
    method: str
    path: str  # normalised: /repos/{owner}/{repo}/... even when sent as /repositories/{id}/...
    query: dict[str, str]  # last value of each parameter
    body: Any  # the parsed JSON body, None if none or not JSON
    headers: dict[str, str]  # lower-case names; the token replaced by [redacted]
    time: float  # time.monotonic() on arrival
    wall: float  # time.time() of the same moment
    target: str = ""  # the request target exactly as sent (path and query)
    status: int | None = None
    injected: bool = False  # answered by a scripted failure
    token_fingerprint: str | None = None


@dataclass
class Failure:
    method: str | None  # None: any method
    path_re: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    delay: float = 0.0
    after: bool = False  # the request takes effect first, then this answers it


class _Answer(Exception):
    """Raised by route code to answer with an error."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None,
                 doc: str = DOCS, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.doc = status, message, errors, doc
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "documentation_url": self.doc}
        if self.errors is not None:
            out["errors"] = self.errors
        out["status"] = str(self.status)
        return out


def _invalid(resource: str, field_: str, code: str = "invalid", doc: str = DOCS) -> _Answer:
    return _Answer(422, "Validation Failed", [{"resource": resource, "field": field_, "code": code}], doc)


def _custom(resource: str, message: str, doc: str = DOCS) -> _Answer:
    return _Answer(422, "Validation Failed", [{"resource": resource, "code": "custom", "message": message}], doc)


NOT_FOUND = "https://docs.github.com/rest"
DOC_PULLS = "https://docs.github.com/rest/pulls/pulls"
DOC_CREATE_PULL = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"
DOC_MERGE = "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request"
DOC_LABELS = "https://docs.github.com/rest/issues/labels"
DOC_REFS = "https://docs.github.com/rest/git/refs"
DOC_WORKFLOWS = "https://docs.github.com/rest/actions/workflows#get-a-workflow"
DOC_DISPATCH = "https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event"
DOC_SECONDARY = ("https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
                 "#about-secondary-rate-limits")
DOC_PRIMARY = "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"


# -- git ----------------------------------------------------------------------

class GitError(RuntimeError):
    pass


def _git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_OBJECT_DIRECTORY")}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_CONFIG_NOSYSTEM="1")
    env.update(extra or {})
    return env


def _identity(name: str, email: str, committer: tuple[str, str] = ("GitHub", "noreply@github.com")) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": committer[0], "GIT_COMMITTER_EMAIL": committer[1]}


def _git(git_dir: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[bytes]:
    p = subprocess.run(["git", f"--git-dir={git_dir}", *args], input=input, capture_output=True,
                       env=_git_env(env), check=False)
    if check and p.returncode:
        raise GitError(f"git {args[0]} failed ({p.returncode}): {p.stderr.decode(errors='replace').strip()}")
    return p


def commit_files(git_dir: Path, branch: str, files: dict[str, bytes | str | None], message: str, *,
                 parent: str | None = None, author: tuple[str, str] = ("octocat", "octocat@users.noreply.github.com"),
                 ) -> str:
    """Commit ``files`` (path -> content, None deletes) on ``branch`` of a (bare) repository, as a
    person editing on the web would: parent is the branch's tip, or ``parent`` (a commit or
    branch) for a new branch, or none (a root commit). Returns the new commit."""
    old = _git(git_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False)
    old_sha = old.stdout.decode().strip() if old.returncode == 0 else ""
    base = old_sha or (_git(git_dir, "rev-parse", "--verify", f"{parent}^{{commit}}").stdout.decode().strip()
                       if parent else "")
    with tempfile.TemporaryDirectory(prefix="gh-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), **_identity(*author, committer=author)}
        if base:
            _git(git_dir, "read-tree", base, env=env)
        for path, data in files.items():
            if data is None:
                _git(git_dir, "update-index", "--force-remove", "--", path, env=env)
                continue
            blob = _git(git_dir, "hash-object", "-w", "--stdin",
                        input=data.encode() if isinstance(data, str) else data).stdout.decode().strip()
            _git(git_dir, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = _git(git_dir, "write-tree", env=env).stdout.decode().strip()
        args = ["commit-tree", tree, "-m", message] + (["-p", base] if base else [])
        sha = _git(git_dir, *args, env=env).stdout.decode().strip()
    _git(git_dir, "update-ref", f"refs/heads/{branch}", sha, old_sha or ZERO)
    return sha


def make_bare_repo(path: Path, files: dict[str, bytes | str | None] | None = None, branch: str = "main") -> Path:
    """A new bare repository whose ``branch`` has one commit with ``files`` (default: a README)."""
    path = Path(path)
    subprocess.run(["git", "init", "--quiet", "--bare", f"--initial-branch={branch}", str(path)], check=True,
                   capture_output=True, env=_git_env())
    commit_files(path, branch, files or {"README.md": "# test repository\n"}, "Initial commit")
    return path


# -- the server -----------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"
    sys_version = ""
    timeout = 60
    disable_nagle_algorithm = True  # headers and body leave at once: no 40 ms delayed-ACK stalls
    wbufsize = 1 << 16  # buffered; _write flushes once per response
    api: GitHubAPI  # set on a subclass per server

    def setup(self) -> None:
        super().setup()
        self.api._conns.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(Exception):
            super().finish()
        self.api._conns.discard(self.connection)

    def _any(self) -> None:
        self.api._handle(self)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _any

    def log_message(self, format: str, *args: Any) -> None:  # the server never prints
        pass

    def log_error(self, format: str, *args: Any) -> None:
        pass


Route = Callable[..., tuple[int, Any, dict[str, str]]]


class GitHubAPI:
    """The GitHub REST API for one repository on 127.0.0.1 (a free port), in background threads.

    ``bare_repo``: the repository's git directory (branches and merges happen there).
    ``owner``/``repo``: its name. ``token``: if given, requests must carry it
    (``Authorization: token ...`` or ``Bearer ...``). ``default_branch``: main.
    ``rate_limit``: the hourly request budget (GITHUB_TOKEN: 1,000 per repository).
    ``actor``: who the token acts as (pull requests opened through the API are
    theirs); ``reviewer``: who presses the buttons in :meth:`merge`/:meth:`close`.
    ``record``: keep every request in :attr:`requests`.
    """

    def __init__(self, bare_repo: Path | str, *, owner: str = "acme", repo: str = "fleet",
                 token: str | None = None, default_branch: str = "main", rate_limit: int = 1000,
                 rate_window: float = 3600.0, actor: str = BOT, reviewer: str = "octocat",
                 repo_id: int = 700_000_001, record: bool = True, port: int = 0) -> None:
        self.bare = Path(bare_repo)
        if not (self.bare / "HEAD").exists():
            raise ValueError(f"not a git directory: {self.bare}")
        self.owner, self.repo = owner, repo
        self.full_name = f"{owner}/{repo}"
        self.default_branch = default_branch
        self.actor, self.reviewer = actor, reviewer
        self.repo_id = repo_id
        self.record = record
        self._token_fp = _fingerprint(token) if token else None
        self._token = token  # only for client(); never printed, logged or recorded
        self._fingerprints: set[str] = set()
        self._port = port
        self._lock = threading.RLock()
        self._seen: list[Seen] = []
        self._failures: deque[Failure] = deque()
        self._items: dict[int, Issue] = {}
        self._labels: dict[str, Label] = {}  # lower-case name -> label
        self._refs: dict[str, str] = {}  # branch -> sha, as of the last refresh
        self._mergeable: dict[tuple[str, str], str | None] = {}  # (base sha, head sha) -> merged tree or None
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1_000_001)
        self._dispatched: list[Dispatched] = []
        self._run_ids = itertools.count(9_000_000_001)
        self._counter = itertools.count(1)
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self._used = 0
        self._window_start = time.time()
        self.errors: list[str] = []  # the server's own failures (bugs here), never printed
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.port = 0

    # -- lifecycle ------------------------------------------------------------
    def __enter__(self) -> GitHubAPI:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = _Server(("127.0.0.1", self._port), handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        with self._lock:
            self._refresh()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="github-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        for conn in list(self._conns):  # keep-alive connections would otherwise outlive the server
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = None

    def client(self, **kw: Any) -> Any:
        """A PyGithub client for this server with the server's token and no request spacing
        (kw: more Github() arguments, which win)."""
        from github import Auth, Github

        kw.setdefault("auth", Auth.Token(self._token) if self._token else None)
        kw.setdefault("seconds_between_requests", None)  # PyGithub's defaults (0.25 s, 1 s for writes) slow tests
        kw.setdefault("seconds_between_writes", None)
        return Github(base_url=self.url, **kw)

    # -- scripting --------------------------------------------------------------
    def fail(self, method: str | None, path_re: str, status: int = 403, body: Any = None,
             headers: dict[str, str] | None = None, *, times: int = 1, delay: float = 0.0,
             after: bool = False) -> GitHubAPI:
        """Queue ``times`` failure responses for requests matching ``method`` (None: any) and
        ``path_re`` (re.search on the normalised path), each used once, in order. ``after``: the
        request is carried out first and only its answer is the failure (a 502 on a POST that
        did create the pull request, as GitHub's front end sometimes does)."""
        if headers is None:
            headers = {"retry-after": "1"} if status in (403, 429) else {}
        with self._lock:
            for _ in range(times):
                self._failures.append(Failure(method.upper() if method else None, re.compile(path_re), status,
                                              body, dict(headers), delay, after))
        return self

    def pending_failures(self) -> int:
        with self._lock:
            return len(self._failures)

    def set_rate(self, *, remaining: int | None = None, limit: int | None = None,
                 reset_in: float | None = None) -> None:
        """Set the rate limit budget: ``remaining`` requests left, ``limit``, seconds to ``reset_in``."""
        with self._lock:
            if limit is not None:
                self.rate_limit = limit
            if reset_in is not None:
                self._window_start = time.time() + reset_in - self.rate_window
            if remaining is not None:
                self._used = max(0, self.rate_limit - remaining)

    # -- a person pressing the buttons -------------------------------------------
    def merge(self, number: int, method: str = "merge", title: str | None = None, message: str | None = None,
              by: str | None = None) -> str:
        """Merge pull request ``number`` as ``by`` (default: the reviewer). Returns the new main
        commit; raises RuntimeError if GitHub would refuse (closed, conflict...)."""
        with self._lock:
            try:
                return self._merge(self._pull(number), method, title, message, None, by or self.reviewer)["sha"]
            except _Answer as e:
                raise RuntimeError(f"merge of #{number} refused: {e.status} {e.message}") from None

    def close(self, number: int, by: str | None = None) -> None:
        """Close issue or pull request ``number`` without merging, as ``by`` (default: the reviewer)."""
        with self._lock:
            self._refresh()
            self._set_state(self._item(number), "closed", by or self.reviewer)

    def reopen(self, number: int) -> None:
        with self._lock:
            self._refresh()
            try:
                self._set_state(self._item(number), "open", self.reviewer)
            except _Answer as e:
                raise RuntimeError(f"reopen of #{number} refused: {e.message}") from None

    def add_issue(self, title: str, body: str | None = None, labels: list[str] | tuple[str, ...] = (),
                  user: str | None = None) -> int:
        """A plain issue (not a pull request), as a person would open it; returns its number."""
        with self._lock:
            issue = Issue(number=next(self._numbers), id=next(self._ids), title=title, body=body,
                          user=user or self.reviewer)
            self._items[issue.number] = issue
            self._add_labels(issue, list(labels))
            return issue.number

    def commit(self, branch: str, files: dict[str, bytes | str | None], message: str = "Update files",
               start: str | None = None) -> str:
        """Commit file changes on ``branch`` of the bare repository (a new branch starts at
        ``start``, default main), as a reviewer editing on the web would. Returns the commit."""
        with self._lock:
            return commit_files(self.bare, branch, files, message, parent=start or self.default_branch,
                                author=(self.reviewer, f"{self.reviewer}@users.noreply.github.com"))

    def branch_sha(self, branch: str) -> str | None:
        with self._lock:
            self._refresh()
            return self._refs.get(branch)

    # -- what the server holds and saw --------------------------------------------
    @property
    def pulls(self) -> dict[int, PullRequest]:
        """Number -> pull request (copies; refreshed from the repository)."""
        with self._lock:
            self._refresh()
            return {n: dataclasses.replace(i) for n, i in self._items.items() if isinstance(i, PullRequest)}

    @property
    def issues(self) -> dict[int, Issue]:
        """Number -> issue, pull requests included (copies)."""
        with self._lock:
            self._refresh()
            return {n: dataclasses.replace(i) for n, i in self._items.items()}

    @property
    def dispatches(self) -> list[Dispatched]:
        """Every workflow_dispatch event accepted, oldest first (copies)."""
        with self._lock:
            return [dataclasses.replace(d, inputs=dict(d.inputs)) for d in self._dispatched]

    @property
    def labels(self) -> dict[str, Label]:
        with self._lock:
            return {lb.name: dataclasses.replace(lb) for lb in self._labels.values()}

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def count(self, method: str | None = None, path_re: str | None = None) -> int:
        """How many recorded requests have this method (None: any) and a path matching ``path_re``."""
        pattern = re.compile(path_re) if path_re else None
        return sum(1 for s in self.requests
                   if (method is None or s.method == method.upper()) and (pattern is None or pattern.search(s.path)))

    def saw_token(self, token: str) -> bool:
        """Whether any request carried this token (compared by fingerprint)."""
        return _fingerprint(token) in self._fingerprints

    @property
    def remaining(self) -> int:
        with self._lock:
            self._roll_window()
            return max(0, self.rate_limit - self._used)

    def reset_requests(self) -> None:
        with self._lock:
            self._seen.clear()

    # -- HTTP -------------------------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        try:
            raw = self._read_body(h)
        except (ValueError, OSError):
            h.close_connection = True
            return
        target = h.path
        split = urllib.parse.urlsplit(target)
        path = self._normalise(split.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in h.headers.items()}
        auth = headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        token = credential.strip() if scheme.lower() in ("token", "bearer") else ""
        try:
            body = json.loads(raw) if raw else None
            bad_json = False
        except ValueError:
            body, bad_json = None, True
        seen = Seen(next(self._counter), h.command, path, query, body,
                    {k: (MASK if k in AUTH_HEADERS else v) for k, v in headers.items()},
                    time.monotonic(), time.time(), target, token_fingerprint=_fingerprint(token) if token else None)
        if token:
            self._fingerprints.add(seen.token_fingerprint or "")
        if self.record:
            with self._lock:
                self._seen.append(seen)
        rid = self._request_id()
        status, doc, extra = 500, None, {}
        try:
            failure = self._take_failure(seen)
            if failure is not None:
                if failure.delay > 0:
                    time.sleep(failure.delay)
                seen.injected = True
                if failure.after:
                    with self._lock, contextlib.suppress(_Answer):
                        self._dispatch(seen, token, bad_json)  # counts against the budget itself
                else:
                    with self._lock:
                        self._count_request(path)
                status, extra = failure.status, failure.headers
                doc = failure.body
                if doc is None:
                    doc = ({"message": SECONDARY_MESSAGE.format(rid=rid), "documentation_url": DOC_SECONDARY,
                            "status": str(status)} if status in (403, 429)
                           else {"message": "Server Error", "documentation_url": DOCS, "status": str(status)}
                           if status >= 500 else {"message": http_phrase(status), "documentation_url": DOCS,
                                                  "status": str(status)})
            else:
                with self._lock:
                    status, doc, extra = self._dispatch(seen, token, bad_json)
        except _Answer as e:
            status, doc, extra = e.status, e.body(), e.headers
        except Exception as e:  # noqa: BLE001 - a bug here must not kill the server; kept for assertions
            problem = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
            if token:
                problem = problem.replace(token, MASK)
            self.errors.append(problem)
            status, doc, extra = 500, {"message": "Server Error", "documentation_url": DOCS, "status": "500"}, {}
        seen.status = status
        self._write(h, status, doc, {**self._rate_headers(path), "X-GitHub-Request-Id": rid, **extra})

    def _read_body(self, h: _Handler) -> bytes:
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    h.rfile.readline()
                    return bytes(out)
                out += h.rfile.read(size)
                h.rfile.readline()
        length = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(length) if length else b""

    def _write(self, h: _Handler, status: int, doc: Any, headers: dict[str, str]) -> None:
        if status == 204 or doc is None:
            payload, ctype = b"", None
        elif isinstance(doc, (str, bytes)):
            payload = doc.encode() if isinstance(doc, str) else doc
            ctype = "text/html; charset=utf-8"
        else:
            payload, ctype = json.dumps(doc).encode(), "application/json; charset=utf-8"
        try:
            h.send_response(status, http_phrase(status))
            if ctype:
                h.send_header("Content-Type", ctype)
            if status != 204:
                h.send_header("Content-Length", str(len(payload)))
            h.send_header("X-GitHub-Media-Type", "github.v3; format=json")
            h.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
            h.send_header("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP")
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            if payload and h.command != "HEAD":
                h.wfile.write(payload)
            h.wfile.flush()
        except OSError:
            h.close_connection = True

    def _request_id(self) -> str:
        r = os.urandom(10).hex().upper()
        return f"{r[:4]}:{r[4:8]}:{r[8:14]}:{r[14:20]}:{int(time.time()):08X}"

    def _normalise(self, path: str) -> str:
        m = re.match(r"^/repositories/(\d+)(/.*)?$", path)
        if m and int(m.group(1)) == self.repo_id:
            return f"/repos/{self.full_name}{m.group(2) or ''}"
        return path.rstrip("/") or "/"

    def _take_failure(self, seen: Seen) -> Failure | None:
        with self._lock:
            for f in self._failures:
                if (f.method is None or f.method == seen.method) and f.path_re.search(seen.path):
                    self._failures.remove(f)
                    return f
        return None

    # -- rate limit ---------------------------------------------------------------
    def _roll_window(self) -> None:
        now = time.time()
        if now >= self._window_start + self.rate_window:
            self._window_start, self._used = now, 0

    def _count_request(self, path: str) -> None:
        if path != "/rate_limit":
            self._roll_window()
            self._used += 1

    def _reset_at(self) -> int:
        return int(self._window_start + self.rate_window)

    def _rate_headers(self, path: str) -> dict[str, str]:
        with self._lock:
            self._roll_window()
            return {"X-RateLimit-Limit": str(self.rate_limit),
                    "X-RateLimit-Remaining": str(max(0, self.rate_limit - self._used)),
                    "X-RateLimit-Reset": str(self._reset_at()),
                    "X-RateLimit-Used": str(min(self._used, self.rate_limit)),
                    "X-RateLimit-Resource": "core"}

    def _rate(self) -> dict[str, Any]:
        self._roll_window()
        return {"limit": self.rate_limit, "remaining": max(0, self.rate_limit - self._used),
                "reset": self._reset_at(), "used": min(self._used, self.rate_limit), "resource": "core"}

    # -- dispatch -----------------------------------------------------------------
    def _dispatch(self, seen: Seen, token: str, bad_json: bool) -> tuple[int, Any, dict[str, str]]:
        if self._token_fp is not None:
            if not token:
                raise _Answer(401, "Requires authentication", doc=DOCS)
            if not hmac.compare_digest(_fingerprint(token), self._token_fp):
                raise _Answer(401, "Bad credentials", doc=DOCS)
        if seen.path == "/rate_limit" and seen.method == "GET":
            rate = self._rate()
            other = {"limit": 5000, "remaining": 5000, "reset": rate["reset"], "used": 0}
            resources = {"core": rate, "search": {**other, "limit": 30, "remaining": 30, "resource": "search"},
                         "graphql": {**other, "resource": "graphql"},
                         "integration_manifest": {**other, "resource": "integration_manifest"},
                         "code_search": {**other, "limit": 10, "remaining": 10, "resource": "code_search"}}
            return 200, {"resources": resources, "rate": rate}, {}
        self._count_request(seen.path)
        if self._used > self.rate_limit:
            raise _Answer(403, "API rate limit exceeded for installation ID 12345678.", doc=DOC_PRIMARY)
        if bad_json:
            raise _Answer(400, "Problems parsing JSON", doc=DOCS)
        prefix = f"/repos/{self.full_name}"
        path = seen.path
        if path.lower() == prefix.lower() or path.lower().startswith(prefix.lower() + "/"):
            rest = path[len(prefix):]
        else:
            raise _Answer(404, "Not Found")
        self._refresh()
        for method, pattern, fn in self._routes():
            if method == seen.method:
                m = re.fullmatch(pattern, rest)
                if m:
                    args = [urllib.parse.unquote(g) for g in m.groups()]
                    return fn(seen, *args)
        raise _Answer(404, "Not Found")

    def _routes(self) -> list[tuple[str, str, Route]]:
        return [
            ("GET", r"", self._get_repo),
            ("GET", r"/pulls", self._list_pulls),
            ("POST", r"/pulls", self._create_pull),
            ("GET", r"/pulls/(\d+)", self._get_pull),
            ("PATCH", r"/pulls/(\d+)", self._edit_pull),
            ("GET", r"/pulls/(\d+)/merge", self._is_merged),
            ("PUT", r"/pulls/(\d+)/merge", self._merge_pull),
            ("GET", r"/issues", self._list_issues),
            ("POST", r"/issues", self._create_issue),
            ("GET", r"/issues/(\d+)", self._get_issue),
            ("PATCH", r"/issues/(\d+)", self._edit_issue),
            ("GET", r"/issues/(\d+)/labels", self._issue_labels),
            ("POST", r"/issues/(\d+)/labels", self._add_issue_labels),
            ("PUT", r"/issues/(\d+)/labels", self._set_issue_labels),
            ("DELETE", r"/issues/(\d+)/labels", self._clear_issue_labels),
            ("DELETE", r"/issues/(\d+)/labels/([^/]+)", self._remove_issue_label),
            ("GET", r"/labels", self._list_labels),
            ("POST", r"/labels", self._create_label),
            ("GET", r"/labels/([^/]+)", self._get_label),
            ("GET", r"/git/refs?/(heads/.+)", self._get_ref),
            ("DELETE", r"/git/refs/(heads/.+)", self._delete_ref),
            ("GET", r"/branches/(.+)", self._get_branch),
            ("GET", r"/actions/workflows", self._list_workflows),
            ("GET", r"/actions/workflows/([^/]+)", self._get_workflow),
            ("POST", r"/actions/workflows/([^/]+)/dispatches", self._dispatch_workflow),
            ("GET", r"/actions/runs", self._list_runs),
        ]

    # -- git state ----------------------------------------------------------------
    def _refresh(self) -> None:
        """Read the branches; open pull requests follow their head, or close if it is gone."""
        out = _git(self.bare, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/").stdout.decode()
        self._refs = {ref[len("refs/heads/"):]: sha for sha, ref in (line.split(" ", 1) for line in out.splitlines())}
        for item in self._items.values():
            if isinstance(item, PullRequest) and item.state == "open":
                if item.head in self._refs:
                    if item.head_sha != self._refs[item.head]:
                        item.head_sha = self._refs[item.head]
                        item.updated_at = _now()
                else:
                    self._set_state(item, "closed", self.actor, force=True)
                if item.base in self._refs:
                    item.base_sha = self._refs[item.base]

    def _merge_tree(self, base_sha: str, head_sha: str) -> str | None:
        """The tree of merging head into base, or None on a conflict."""
        key = (base_sha, head_sha)
        if key not in self._mergeable:
            p = _git(self.bare, "merge-tree", "--write-tree", "--no-messages", base_sha, head_sha, check=False)
            self._mergeable[key] = p.stdout.decode().split()[0] if p.returncode == 0 else None
        return self._mergeable[key]

    def _is_ancestor(self, a: str, b: str) -> bool:
        return _git(self.bare, "merge-base", "--is-ancestor", a, b, check=False).returncode == 0

    # -- json shapes --------------------------------------------------------------
    @property
    def _api(self) -> str:
        return f"{self.url}/repos/{self.full_name}"

    @property
    def _html(self) -> str:
        return f"https://github.com/{self.full_name}"

    def _user(self, login: str | None) -> dict[str, Any] | None:
        if login is None:
            return None
        bot = login.endswith("[bot]")
        uid = BOT_ID if login == BOT else int(hashlib.sha256(login.encode()).hexdigest()[:7], 16)
        return {"login": login, "id": uid, "node_id": f"MDQ6VXNlcj{uid}",
                "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4", "gravatar_id": "",
                "url": f"{self.url}/users/{urllib.parse.quote(login)}",
                "html_url": f"https://github.com/{'apps/' + login[:-5] if bot else login}",
                "type": "Bot" if bot else "User", "site_admin": False}

    def _owner(self) -> dict[str, Any]:
        return {**(self._user(self.owner) or {}), "type": "Organization"}

    def _repo_json(self, full: bool = True) -> dict[str, Any]:
        api = self._api
        d: dict[str, Any] = {
            "id": self.repo_id, "node_id": f"R_kgDO{self.repo_id}", "name": self.repo, "full_name": self.full_name,
            "private": True, "owner": self._owner(), "html_url": self._html, "description": None, "fork": False,
            "url": api, "archive_url": f"{api}/{{archive_format}}{{/ref}}",
            "branches_url": f"{api}/branches{{/branch}}", "commits_url": f"{api}/commits{{/sha}}",
            "git_refs_url": f"{api}/git/refs{{/sha}}", "issues_url": f"{api}/issues{{/number}}",
            "labels_url": f"{api}/labels{{/name}}", "merges_url": f"{api}/merges",
            "pulls_url": f"{api}/pulls{{/number}}", "hooks_url": f"{api}/hooks",
        }
        if full:
            open_issues = sum(1 for i in self._items.values() if i.state == "open")
            d.update({
                "created_at": "2024-01-02T03:04:05Z", "updated_at": _now(), "pushed_at": _now(),
                "git_url": f"git://github.com/{self.full_name}.git", "ssh_url": f"git@github.com:{self.full_name}.git",
                "clone_url": f"{self._html}.git", "homepage": None, "size": 1, "stargazers_count": 0,
                "watchers_count": 0, "language": "Python", "has_issues": True, "has_projects": True,
                "has_downloads": True, "has_wiki": False, "has_pages": False, "has_discussions": False,
                "forks_count": 0, "mirror_url": None, "archived": False, "disabled": False,
                "open_issues_count": open_issues, "license": None, "allow_forking": False, "is_template": False,
                "web_commit_signoff_required": False, "topics": [], "visibility": "private", "forks": 0,
                "open_issues": open_issues, "watchers": 0, "default_branch": self.default_branch,
                "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
                "allow_squash_merge": True, "allow_merge_commit": True, "allow_rebase_merge": False,
                "allow_auto_merge": False, "delete_branch_on_merge": False, "allow_update_branch": False,
                "use_squash_pr_title_as_default": False, "squash_merge_commit_message": "COMMIT_MESSAGES",
                "squash_merge_commit_title": "COMMIT_OR_PR_TITLE", "merge_commit_message": "PR_TITLE",
                "merge_commit_title": "MERGE_MESSAGE", "network_count": 0, "subscribers_count": 1,
                "organization": self._owner(),
            })
        return d

    def _label_json(self, name: str) -> dict[str, Any]:
        lb = self._labels[name.lower()]
        return {"id": lb.id, "node_id": f"LA_kwDO{lb.id}", "url": f"{self._api}/labels/{urllib.parse.quote(lb.name)}",
                "name": lb.name, "color": lb.color, "default": lb.default, "description": lb.description}

    def _issue_json(self, item: Issue, full: bool = False) -> dict[str, Any]:
        api, n = self._api, item.number
        d: dict[str, Any] = {
            "url": f"{api}/issues/{n}", "repository_url": api, "labels_url": f"{api}/issues/{n}/labels{{/name}}",
            "comments_url": f"{api}/issues/{n}/comments", "events_url": f"{api}/issues/{n}/events",
            "html_url": f"{self._html}/{'pull' if item.is_pull else 'issues'}/{n}", "id": item.id,
            "node_id": f"{'PR' if item.is_pull else 'I'}_kwDO{item.id}", "number": n, "title": item.title,
            "user": self._user(item.user), "labels": [self._label_json(x) for x in item.labels],
            "state": item.state, "locked": False, "assignee": None, "assignees": [], "milestone": None,
            "comments": 0, "created_at": item.created_at, "updated_at": item.updated_at,
            "closed_at": item.closed_at, "author_association": "NONE" if item.user == BOT else "MEMBER",
            "type": None, "active_lock_reason": None, "body": item.body,
            "reactions": {"url": f"{api}/issues/{n}/reactions", "total_count": 0, "+1": 0, "-1": 0, "laugh": 0,
                          "hooray": 0, "confused": 0, "heart": 0, "rocket": 0, "eyes": 0},
            "timeline_url": f"{api}/issues/{n}/timeline", "performed_via_github_app": None,
            "state_reason": item.state_reason,
        }
        if isinstance(item, PullRequest):
            d["draft"] = item.draft
            d["pull_request"] = {"url": f"{api}/pulls/{n}", "html_url": f"{self._html}/pull/{n}",
                                 "diff_url": f"{self._html}/pull/{n}.diff", "patch_url": f"{self._html}/pull/{n}.patch",
                                 "merged_at": item.merged_at}
        if full:
            d["closed_by"] = self._user(item.closed_by)
        return d

    def _pr_json(self, pr: PullRequest, full: bool = True) -> dict[str, Any]:
        api, n = self._api, pr.number
        html = f"{self._html}/pull/{n}"
        repo = self._repo_json(full=False)

        def side(branch: str, sha: str) -> dict[str, Any]:
            return {"label": f"{self.owner}:{branch}", "ref": branch, "sha": sha, "user": self._owner(), "repo": repo}

        d: dict[str, Any] = {
            "url": f"{api}/pulls/{n}", "id": pr.pr_id, "node_id": f"PR_kwDO{pr.pr_id}", "html_url": html,
            "diff_url": f"{html}.diff", "patch_url": f"{html}.patch", "issue_url": f"{api}/issues/{n}",
            "number": n, "state": pr.state, "locked": False, "title": pr.title, "user": self._user(pr.user),
            "body": pr.body, "created_at": pr.created_at, "updated_at": pr.updated_at, "closed_at": pr.closed_at,
            "merged_at": pr.merged_at, "merge_commit_sha": pr.merge_commit_sha, "assignee": None, "assignees": [],
            "requested_reviewers": [], "requested_teams": [], "labels": [self._label_json(x) for x in pr.labels],
            "milestone": None, "draft": pr.draft, "commits_url": f"{api}/pulls/{n}/commits",
            "review_comments_url": f"{api}/pulls/{n}/comments", "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{n}/comments", "statuses_url": f"{api}/statuses/{pr.head_sha}",
            "head": side(pr.head, pr.head_sha), "base": side(pr.base, pr.base_sha),
            "_links": {"self": {"href": f"{api}/pulls/{n}"}, "html": {"href": html},
                       "issue": {"href": f"{api}/issues/{n}"}, "comments": {"href": f"{api}/issues/{n}/comments"},
                       "review_comments": {"href": f"{api}/pulls/{n}/comments"},
                       "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
                       "commits": {"href": f"{api}/pulls/{n}/commits"},
                       "statuses": {"href": f"{api}/statuses/{pr.head_sha}"}},
            "author_association": "NONE" if pr.user == BOT else "MEMBER", "auto_merge": None,
            "active_lock_reason": None,
        }
        if full:  # the single-pull-request shape; lists give the "simple" one without these
            mergeable: bool | None = None
            state = "unknown"
            commits = additions = deletions = changed = 0
            if pr.state == "open":
                mergeable = self._merge_tree(pr.base_sha, pr.head_sha) is not None
                state = "draft" if pr.draft else "clean" if mergeable else "dirty"
            if pr.base_sha and pr.head_sha:
                commits = int(_git(self.bare, "rev-list", "--count", f"{pr.base_sha}..{pr.head_sha}",
                                   check=False).stdout.decode().strip() or 0)
                stat = _git(self.bare, "diff", "--numstat", f"{pr.base_sha}...{pr.head_sha}", check=False)
                for line in stat.stdout.decode().splitlines():
                    a, b, _ = line.split("\t", 2)
                    additions += int(a) if a.isdigit() else 0
                    deletions += int(b) if b.isdigit() else 0
                    changed += 1
            d.update({"merged": pr.merged, "mergeable": mergeable, "rebaseable": mergeable,
                      "mergeable_state": state, "merged_by": self._user(pr.merged_by), "comments": 0,
                      "review_comments": 0, "maintainer_can_modify": False, "commits": commits,
                      "additions": additions, "deletions": deletions, "changed_files": changed})
        return d

    # -- helpers ------------------------------------------------------------------
    def _item(self, number: int | str) -> Issue:
        item = self._items.get(int(number))
        if item is None:
            raise _Answer(404, "Not Found")
        return item

    def _pull(self, number: int | str) -> PullRequest:
        item = self._items.get(int(number))
        if not isinstance(item, PullRequest):
            raise _Answer(404, "Not Found", doc=DOC_PULLS)
        return item

    def _paginate(self, seen: Seen, items: list[Any]) -> tuple[list[Any], dict[str, str]]:
        q = seen.query
        try:
            per_page = min(100, max(1, int(q.get("per_page", 30))))
        except ValueError:
            per_page = 30
        try:
            page = max(1, int(q.get("page", 1)))
        except ValueError:
            page = 1
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        rest = seen.path[len(f"/repos/{self.full_name}"):]
        base = f"{self.url}/repositories/{self.repo_id}{rest}"

        def link(p: int) -> str:
            params = {k: v for k, v in q.items() if k != "page"}
            params["page"] = str(p)
            return f"<{base}?{urllib.parse.urlencode(params)}>"

        rels = []
        if page > 1:
            rels.append(f'{link(min(page - 1, last))}; rel="prev"')
        if page < last:
            rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
        if page > 1:
            rels.append(f'{link(1)}; rel="first"')
        return chunk, ({"Link": ", ".join(rels)} if rels else {})

    def _sorted(self, seen: Seen, items: list[Issue]) -> list[Issue]:
        sort = seen.query.get("sort", "created")
        direction = seen.query.get("direction", "desc" if sort in ("created", "") else "asc")
        if sort not in ("created", "updated", "comments", "popularity", "long-running"):
            raise _invalid("Issue", "sort")
        if direction not in ("asc", "desc"):
            raise _invalid("Issue", "direction")
        key = (lambda i: (i.updated_at, i.number)) if sort == "updated" else (lambda i: (i.created_at, i.number))
        return sorted(items, key=key, reverse=direction == "desc")

    def _state_filter(self, seen: Seen, resource: str) -> str:
        state = seen.query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise _invalid(resource, "state")
        return state

    def _set_state(self, item: Issue, state: str, by: str, force: bool = False) -> None:
        if state == item.state:
            return
        now = _now()
        if state == "closed":
            item.state, item.closed_at, item.closed_by, item.updated_at = "closed", now, by, now
            if not item.is_pull:
                item.state_reason = "completed"
            return
        if isinstance(item, PullRequest):
            if item.merged:
                raise _custom("PullRequest", "state cannot be changed. The pull request has been merged.")
            if item.head not in self._refs and not force:
                raise _custom("PullRequest", "state cannot be changed. The head branch was deleted.")
        else:
            item.state_reason = "reopened"
        item.state, item.closed_at, item.closed_by, item.updated_at = "open", None, None, now

    def _ensure_label(self, name: str) -> str:
        """GitHub creates labels that an issue is given but the repository lacks (color ededed)."""
        lb = self._labels.get(name.lower())
        if lb is None:
            lb = Label(next(self._ids), name, "ededed")
            self._labels[name.lower()] = lb
        return lb.name

    def _add_labels(self, item: Issue, names: list[str]) -> None:
        for name in names:
            canonical = self._ensure_label(name)
            if canonical.lower() not in (x.lower() for x in item.labels):
                item.labels.append(canonical)
        item.updated_at = _now()

    @staticmethod
    def _label_names(body: Any) -> list[str]:
        """``["a", "b"]``, ``{"labels": ["a"]}`` or ``{"labels": [{"name": "a"}]}``, as GitHub accepts."""
        raw = body.get("labels") if isinstance(body, dict) else body
        if not isinstance(raw, list):
            raise _invalid("Label", "labels", "missing_field", DOC_LABELS)
        out = []
        for x in raw:
            name = x.get("name") if isinstance(x, dict) else x
            if not isinstance(name, str) or not name.strip():
                raise _invalid("Label", "name", "invalid", DOC_LABELS)
            out.append(name)
        return out

    # -- routes: repository ---------------------------------------------------------
    def _get_repo(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        return 200, self._repo_json(), {}

    # -- routes: pull requests --------------------------------------------------------
    def _list_pulls(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        state = self._state_filter(seen, "PullRequest")
        items = [i for i in self._items.values() if isinstance(i, PullRequest) and state in ("all", i.state)]
        head = seen.query.get("head")
        if head and ":" in head:  # GitHub ignores a head filter without the owner
            owner, _, branch = head.partition(":")
            items = [p for p in items if owner.lower() == self.owner.lower() and p.head == branch]
        if seen.query.get("base"):
            items = [p for p in items if p.base == seen.query["base"]]
        chunk, headers = self._paginate(seen, self._sorted(seen, items))
        return 200, [self._pr_json(p, full=False) for p in chunk], headers

    def _get_pull(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        return 200, self._pr_json(self._pull(number)), {}

    def _create_pull(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        b = seen.body if isinstance(seen.body, dict) else {}
        for name in ("head", "base", "title"):
            if not isinstance(b.get(name), str) or not b[name]:
                if name == "title" and b.get("issue") is not None:
                    continue
                raise _invalid("PullRequest", name, "missing_field", DOC_CREATE_PULL)
        head, base = b["head"], b["base"]
        owner, sep, branch = head.rpartition(":")
        if sep and owner.lower() != self.owner.lower():
            raise _invalid("PullRequest", "head", doc=DOC_CREATE_PULL)
        if branch not in self._refs:
            raise _invalid("PullRequest", "head", doc=DOC_CREATE_PULL)
        if base not in self._refs:
            raise _invalid("PullRequest", "base", doc=DOC_CREATE_PULL)
        for p in self._items.values():
            if isinstance(p, PullRequest) and p.state == "open" and p.head == branch and p.base == base:
                raise _custom("PullRequest", f"A pull request already exists for {self.owner}:{branch}.",
                              DOC_CREATE_PULL)
        if self._is_ancestor(self._refs[branch], self._refs[base]):
            raise _custom("PullRequest", f"No commits between {base} and {branch}", DOC_CREATE_PULL)
        issue = b.get("issue")
        if issue is not None:
            raise _custom("PullRequest", "converting an issue is not supported by the test server", DOC_CREATE_PULL)
        pr = PullRequest(number=next(self._numbers), id=next(self._ids), pr_id=next(self._ids), title=b["title"],
                         body=b.get("body"), head=branch, base=base, head_sha=self._refs[branch],
                         base_sha=self._refs[base], draft=bool(b.get("draft", False)), user=self.actor)
        self._items[pr.number] = pr
        return 201, self._pr_json(pr), {"Location": f"{self._api}/pulls/{pr.number}"}

    def _edit_pull(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        pr = self._pull(number)
        b = seen.body if isinstance(seen.body, dict) else {}
        if "state" in b and b["state"] not in ("open", "closed"):
            raise _invalid("PullRequest", "state", doc=DOC_PULLS)
        if "base" in b and b["base"] not in self._refs:
            raise _invalid("PullRequest", "base", doc=DOC_PULLS)
        if "title" in b and isinstance(b["title"], str):
            pr.title = b["title"]
        if "body" in b:
            pr.body = b["body"]
        if "base" in b:
            pr.base, pr.base_sha = b["base"], self._refs[b["base"]]
        if "state" in b:
            self._set_state(pr, b["state"], self.actor)
        pr.updated_at = _now()
        return 200, self._pr_json(pr), {}

    def _is_merged(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        if self._pull(number).merged:
            return 204, None, {}
        raise _Answer(404, "Not Found", doc=DOC_MERGE)

    def _merge_pull(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        b = seen.body if isinstance(seen.body, dict) else {}
        result = self._merge(self._pull(number), b.get("merge_method") or "merge", b.get("commit_title"),
                             b.get("commit_message"), b.get("sha"), self.actor)
        return 200, result, {}

    def _merge(self, pr: PullRequest, method: str, title: str | None, message: str | None, sha: str | None,
               by: str) -> dict[str, Any]:
        """Merge head into base in the bare repository, as GitHub's merge button does."""
        self._refresh()
        if method not in MERGE_METHODS:
            raise _invalid("PullRequest", "merge_method", doc=DOC_MERGE)
        if method == "rebase":
            raise _Answer(405, "Rebase merges are not allowed on this repository.", doc=DOC_MERGE)
        if pr.state != "open" or pr.merged or pr.draft:
            raise _Answer(405, "Pull Request is not mergeable", doc=DOC_MERGE)
        if sha and sha != pr.head_sha:
            raise _Answer(409, "Head branch was modified. Review and try the merge again.", doc=DOC_MERGE)
        base_sha, head_sha = self._refs[pr.base], pr.head_sha
        tree = self._merge_tree(base_sha, head_sha)
        if tree is None:
            raise _Answer(405, "Pull Request is not mergeable", doc=DOC_MERGE)
        if method == "merge":
            subject = title or f"Merge pull request #{pr.number} from {self.owner}/{pr.head}"
            text = f"{subject}\n\n{pr.title if message is None else message}"
            parents = ["-p", base_sha, "-p", head_sha]
        else:  # squash
            subject = title or f"{pr.title} (#{pr.number})"
            if message is None:
                log = _git(self.bare, "log", "--reverse", "--format=* %s", f"{base_sha}..{head_sha}").stdout.decode()
                message = log.strip()
            text = f"{subject}\n\n{message}" if message else subject
            parents = ["-p", base_sha]
        email = ("41898282+github-actions[bot]@users.noreply.github.com" if by == BOT
                 else f"{by}@users.noreply.github.com")
        new = _git(self.bare, "commit-tree", tree, *parents, "-m", text,
                   env=_identity(by, email)).stdout.decode().strip()
        moved = _git(self.bare, "update-ref", "-m", f"merge pull request #{pr.number}", f"refs/heads/{pr.base}",
                     new, base_sha, check=False)
        if moved.returncode:
            raise _Answer(409, "Base branch was modified. Review and try the merge again.", doc=DOC_MERGE)
        now = _now()
        pr.merged, pr.merged_at, pr.merged_by, pr.merge_commit_sha = True, now, by, new
        pr.state, pr.closed_at, pr.closed_by, pr.updated_at = "closed", now, by, now
        self._refresh()
        return {"sha": new, "merged": True, "message": "Pull Request successfully merged"}

    # -- routes: issues -----------------------------------------------------------------
    def _list_issues(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        state = self._state_filter(seen, "Issue")
        items = [i for i in self._items.values() if state in ("all", i.state)]
        if seen.query.get("labels"):
            wanted = {x.strip().lower() for x in seen.query["labels"].split(",") if x.strip()}
            items = [i for i in items if wanted <= {x.lower() for x in i.labels}]
        if seen.query.get("since"):
            items = [i for i in items if i.updated_at >= seen.query["since"]]
        chunk, headers = self._paginate(seen, self._sorted(seen, items))
        return 200, [self._issue_json(i) for i in chunk], headers

    def _get_issue(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        return 200, self._issue_json(self._item(number), full=True), {}

    def _create_issue(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        b = seen.body if isinstance(seen.body, dict) else {}
        if not isinstance(b.get("title"), str) or not b["title"]:
            raise _invalid("Issue", "title", "missing_field")
        issue = Issue(number=next(self._numbers), id=next(self._ids), title=b["title"], body=b.get("body"),
                      user=self.actor)
        self._items[issue.number] = issue
        if b.get("labels"):
            self._add_labels(issue, self._label_names(b))
        return 201, self._issue_json(issue, full=True), {"Location": f"{self._api}/issues/{issue.number}"}

    def _edit_issue(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        item = self._item(number)
        b = seen.body if isinstance(seen.body, dict) else {}
        if "state" in b and b["state"] not in ("open", "closed"):
            raise _invalid("Issue", "state")
        if "title" in b and isinstance(b["title"], str):
            item.title = b["title"]
        if "body" in b:
            item.body = b["body"]
        if "labels" in b:
            item.labels = []
            self._add_labels(item, self._label_names(b))
        if "state" in b:
            self._set_state(item, b["state"], self.actor)
            if b["state"] == "closed" and not item.is_pull and b.get("state_reason"):
                item.state_reason = b["state_reason"]
        item.updated_at = _now()
        return 200, self._issue_json(item, full=True), {}

    def _issue_labels(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        chunk, headers = self._paginate(seen, self._item(number).labels)
        return 200, [self._label_json(x) for x in chunk], headers

    def _add_issue_labels(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        item = self._item(number)
        self._add_labels(item, self._label_names(seen.body))
        return 200, [self._label_json(x) for x in item.labels], {}

    def _set_issue_labels(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        item = self._item(number)
        item.labels = []
        self._add_labels(item, self._label_names(seen.body))
        return 200, [self._label_json(x) for x in item.labels], {}

    def _clear_issue_labels(self, seen: Seen, number: str) -> tuple[int, Any, dict[str, str]]:
        item = self._item(number)
        item.labels, item.updated_at = [], _now()
        return 204, None, {}

    def _remove_issue_label(self, seen: Seen, number: str, name: str) -> tuple[int, Any, dict[str, str]]:
        item = self._item(number)
        kept = [x for x in item.labels if x.lower() != name.lower()]
        if len(kept) == len(item.labels):
            raise _Answer(404, "Label does not exist", doc=DOC_LABELS)
        item.labels, item.updated_at = kept, _now()
        return 200, [self._label_json(x) for x in item.labels], {}

    # -- routes: labels -----------------------------------------------------------------
    def _list_labels(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        chunk, headers = self._paginate(seen, sorted(self._labels.values(), key=lambda lb: lb.id))
        return 200, [self._label_json(lb.name) for lb in chunk], headers

    def _get_label(self, seen: Seen, name: str) -> tuple[int, Any, dict[str, str]]:
        if name.lower() not in self._labels:
            raise _Answer(404, "Not Found", doc=DOC_LABELS)
        return 200, self._label_json(name), {}

    def _create_label(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        b = seen.body if isinstance(seen.body, dict) else {}
        name = b.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _invalid("Label", "name", "missing_field", DOC_LABELS)
        color = str(b.get("color") or "ededed").lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
            raise _invalid("Label", "color", doc=DOC_LABELS)
        if name.lower() in self._labels:
            raise _invalid("Label", "name", "already_exists", DOC_LABELS)
        self._labels[name.lower()] = Label(next(self._ids), name, color.lower(), b.get("description"))
        return 201, self._label_json(name), {"Location": f"{self._api}/labels/{urllib.parse.quote(name)}"}

    # -- routes: refs and branches ------------------------------------------------------------
    def _ref_json(self, ref: str) -> dict[str, Any]:
        sha = self._refs[ref[len("heads/"):]]
        return {"ref": f"refs/{ref}", "node_id": f"REF_kwDO{abs(hash(ref)) % 10**9}",
                "url": f"{self._api}/git/refs/{urllib.parse.quote(ref)}",
                "object": {"sha": sha, "type": "commit", "url": f"{self._api}/git/commits/{sha}"}}

    def _get_ref(self, seen: Seen, ref: str) -> tuple[int, Any, dict[str, str]]:
        if ref[len("heads/"):] not in self._refs:
            raise _Answer(404, "Not Found", doc=DOC_REFS)
        return 200, self._ref_json(ref), {}

    def _delete_ref(self, seen: Seen, ref: str) -> tuple[int, Any, dict[str, str]]:
        branch = ref[len("heads/"):]
        if branch not in self._refs:
            raise _Answer(422, "Reference does not exist", doc=DOC_REFS)
        if branch == self.default_branch:
            raise _Answer(422, "Cannot delete the default branch", doc=DOC_REFS)
        _git(self.bare, "update-ref", "-d", f"refs/heads/{branch}", self._refs[branch])
        self._refresh()  # closes the open pull requests whose head it was
        return 204, None, {}

    def _get_branch(self, seen: Seen, branch: str) -> tuple[int, Any, dict[str, str]]:
        if branch not in self._refs:
            raise _Answer(404, "Branch not found", doc="https://docs.github.com/rest/branches/branches#get-a-branch")
        sha = self._refs[branch]
        url = f"{self._api}/branches/{urllib.parse.quote(branch)}"
        return 200, {"name": branch, "commit": {"sha": sha, "url": f"{self._api}/commits/{sha}"},
                     "_links": {"self": url, "html": f"{self._html}/tree/{branch}"}, "protected": False,
                     "protection": {"enabled": False, "required_status_checks": {"enforcement_level": "off",
                                                                                "contexts": [], "checks": []}},
                     "protection_url": f"{url}/protection"}, {}

    # -- routes: actions ----------------------------------------------------------------
    def _workflow_files(self, rev: str) -> dict[str, str]:
        """Path -> blob of every workflow file at ``rev`` (.github/workflows/*.yml or *.yaml)."""
        out = _git(self.bare, "ls-tree", rev, ".github/workflows/", check=False).stdout.decode()
        files = {}
        for line in out.splitlines():
            meta, _, path = line.partition("\t")
            if meta.split()[1:2] == ["blob"] and path.endswith((".yml", ".yaml")):
                files[path] = meta.split()[2]
        return files

    @staticmethod
    def _workflow_id(path: str) -> int:
        return 100_000 + int(hashlib.sha256(path.encode()).hexdigest()[:6], 16)

    def _workflow_json(self, path: str, text: str) -> dict[str, Any]:
        wid = self._workflow_id(path)
        name = next((ln.split(":", 1)[1].strip().strip("'\"") for ln in text.splitlines()
                     if ln.startswith("name:")), path)
        return {"id": wid, "node_id": f"W_kwDO{wid}", "name": name, "path": path, "state": "active",
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                "url": f"{self._api}/actions/workflows/{wid}", "html_url": f"{self._html}/blob/{self.default_branch}/{path}",
                "badge_url": f"{self._html}/workflows/{urllib.parse.quote(name)}/badge.svg"}

    def _find_workflow(self, rev: str, workflow_id: str) -> tuple[str, str] | None:
        """(path, text) of the workflow named by file name or id at ``rev``."""
        for path, blob in self._workflow_files(rev).items():
            if workflow_id in (path.rsplit("/", 1)[-1], str(self._workflow_id(path))):
                return path, _git(self.bare, "cat-file", "blob", blob).stdout.decode()
        return None

    def _list_workflows(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        found = [self._workflow_json(path, _git(self.bare, "cat-file", "blob", blob).stdout.decode())
                 for path, blob in self._workflow_files(f"refs/heads/{self.default_branch}").items()]
        return 200, {"total_count": len(found), "workflows": found}, {}

    def _get_workflow(self, seen: Seen, workflow_id: str) -> tuple[int, Any, dict[str, str]]:
        found = self._find_workflow(f"refs/heads/{self.default_branch}", workflow_id)
        if found is None:
            raise _Answer(404, "Not Found", doc=DOC_WORKFLOWS)
        return 200, self._workflow_json(*found), {}

    def _dispatch_workflow(self, seen: Seen, workflow_id: str) -> tuple[int, Any, dict[str, str]]:
        """GitHub's checks, in its order: the body, the workflow, the ref, the trigger, the inputs."""
        body = seen.body if isinstance(seen.body, dict) else {}
        ref = body.get("ref")
        if not isinstance(ref, str) or not ref:
            raise _Answer(422, 'Invalid request.\n\n"ref" wasn\'t supplied.', doc=DOC_DISPATCH)
        inputs = body.get("inputs", {})
        if not isinstance(inputs, dict):
            raise _Answer(422, "Invalid request.\n\nFor 'properties/inputs', is not an object.", doc=DOC_DISPATCH)
        if self._find_workflow(f"refs/heads/{self.default_branch}", workflow_id) is None:
            raise _Answer(404, "Not Found", doc=DOC_DISPATCH)
        short = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        sha = None
        for candidate in (f"refs/heads/{short}", f"refs/tags/{short}"):
            p = _git(self.bare, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", check=False)
            if p.returncode == 0:
                sha = p.stdout.decode().strip()
                break
        if sha is None:
            raise _Answer(422, f"No ref found for: {ref}", doc=DOC_DISPATCH)
        found = self._find_workflow(sha, workflow_id)
        declared = dispatch_inputs(found[1]) if found else None
        if found is None or declared is None:
            raise _Answer(422, "Workflow does not have 'workflow_dispatch' trigger", doc=DOC_DISPATCH)
        if len(inputs) > 25:
            raise _Answer(422, "you may only define up to 25 `inputs` for a `workflow_dispatch` event", doc=DOC_DISPATCH)
        unexpected = sorted(set(inputs) - set(declared))
        if unexpected:
            raise _Answer(422, "Unexpected inputs provided: " + json.dumps(unexpected), doc=DOC_DISPATCH)
        for name, spec in declared.items():
            value = inputs.get(name)
            if value is None:
                if spec.get("required") == "true" and spec.get("default") is None:
                    raise _Answer(422, f"Required input '{name}' not provided", doc=DOC_DISPATCH)
                continue
            if not isinstance(value, (str, bool, int, float)):
                raise _Answer(422, f"Invalid request.\n\nFor 'properties/{name}', {json.dumps(value)} is not a string.",
                              doc=DOC_DISPATCH)
            text = str(value).lower() if isinstance(value, bool) else str(value)
            allowed = (["true", "false"] if spec.get("type") == "boolean"
                       else spec.get("options") if spec.get("type") == "choice" else None)
            if allowed is not None and text not in allowed:
                raise _Answer(422, f"Provided value '{text}' for input '{name}' not in the list of allowed values",
                              doc=DOC_DISPATCH)
        path, text = found
        d = Dispatched(next(self._run_ids), len(self._dispatched) + 1, self._workflow_id(path), path,
                       self._workflow_json(path, text)["name"], ref, short, sha, dict(inputs), self.actor)
        self._dispatched.append(d)
        return 204, None, {}

    def _run_json(self, d: Dispatched) -> dict[str, Any]:
        actor = self._user(d.actor)
        return {"id": d.run_id, "name": d.name, "node_id": f"WFR_kwLO{d.run_id}", "head_branch": d.head_branch,
                "head_sha": d.head_sha, "path": d.path, "display_title": d.name, "run_number": d.run_number,
                "event": "workflow_dispatch", "status": "queued", "conclusion": None, "workflow_id": d.workflow_id,
                "run_attempt": 1, "created_at": d.created_at, "updated_at": d.created_at,
                "run_started_at": d.created_at, "actor": actor, "triggering_actor": actor,
                "url": f"{self._api}/actions/runs/{d.run_id}", "html_url": f"{self._html}/actions/runs/{d.run_id}",
                "workflow_url": f"{self._api}/actions/workflows/{d.workflow_id}", "pull_requests": []}

    def _list_runs(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        runs = [d for d in reversed(self._dispatched)
                if seen.query.get("event") in (None, "workflow_dispatch")
                and seen.query.get("branch") in (None, d.head_branch)]
        page, headers = self._paginate(seen, runs)
        return 200, {"total_count": len(runs), "workflow_runs": [self._run_json(d) for d in page]}, headers


def dispatch_inputs(text: str) -> dict[str, dict[str, Any]] | None:
    """The inputs a workflow file declares for ``workflow_dispatch`` (name -> required, type,
    default, options, as written), or None if it has no such trigger. A reader of the YAML
    that workflows are written in (block mappings by indentation, ``on: [a, b]`` and
    ``on: a``), not of all of YAML."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]

    def key(line: str) -> tuple[int, str, str]:
        stripped = line.lstrip()
        name, _, rest = stripped.partition(":")
        return len(line) - len(stripped), name.strip().strip("'\""), rest.split(" #", 1)[0].strip()

    def block(start: int, indent: int) -> list[int]:
        """The lines of the block under line ``start`` (indented more than ``indent``)."""
        out = []
        for i in range(start + 1, len(lines)):
            if key(lines[i])[0] <= indent:
                break
            out.append(i)
        return out

    top = next((i for i, ln in enumerate(lines) if key(ln)[0] == 0 and key(ln)[1] in ("on", "true")), None)
    if top is None:
        return None
    inline = key(lines[top])[2]
    if inline:
        names = [n.strip() for n in inline.strip("[]").split(",")]
        return {} if "workflow_dispatch" in names else None
    inner = block(top, 0)
    level = min((key(lines[i])[0] for i in inner), default=0)
    wd = next((i for i in inner if key(lines[i])[0] == level and key(lines[i])[1] == "workflow_dispatch"), None)
    if wd is None:
        return None
    under = block(wd, level)
    if not under:
        return {}
    level2 = key(lines[under[0]])[0]
    ins = next((i for i in under if key(lines[i])[0] == level2 and key(lines[i])[1] == "inputs"), None)
    if ins is None:
        return {}
    declared: dict[str, dict[str, Any]] = {}
    names = block(ins, level2)
    if not names:
        return declared
    level3 = key(lines[names[0]])[0]
    for i in names:
        ind, name, _ = key(lines[i])
        if ind != level3:
            continue
        spec: dict[str, Any] = {}
        props = block(i, level3)
        for j in props:
            _, prop, value = key(lines[j])
            if prop == "options":
                spec["options"] = [lines[k].strip().removeprefix("-").strip().strip("'\"")
                                   for k in block(j, key(lines[j])[0]) if lines[k].strip().startswith("-")]
            elif prop in ("required", "type", "default", "description"):
                spec[prop] = value.strip("'\"") if value else None
        declared[name] = spec
    return declared


def http_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


# -- pytest -----------------------------------------------------------------------

TEST_TOKEN = "ghs_testtoken0000000000000000000000000"

try:
    import pytest

    @pytest.fixture
    def github_api(tmp_path: Path) -> Iterator[GitHubAPI]:
        """A fresh server per test over a new bare repository (``tmp_path/"github.git"``, one
        commit on main), token :data:`TEST_TOKEN`, stopped when the test ends. For a repository of
        your own: ``with GitHubAPI(bare_repo=..., token=...) as api``."""
        bare = make_bare_repo(tmp_path / "github.git")
        with GitHubAPI(bare_repo=bare, owner="acme", repo="fleet", token=TEST_TOKEN) as api:
            yield api
except ImportError:  # pragma: no cover - the server also runs without pytest
    pass


# -- self-test ---------------------------------------------------------------------

def _self_test() -> None:
    import logging

    from github import Auth, Github, GithubException, GithubRetry

    logging.getLogger("github").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="gh-selftest-") as tmp:
        bare = make_bare_repo(Path(tmp) / "origin.git", {"README.md": "hello\n", "a.txt": "one\n"})
        commit_files(bare, "feature", {"b.txt": "new file\n"}, "Add b", parent="main")
        commit_files(bare, "other", {"c.txt": "another\n"}, "Add c", parent="main")
        commit_files(bare, "clash", {"a.txt": "clash\n"}, "Change a", parent="main")
        token = "ghs_selftest_secret_value_123"
        with GitHubAPI(bare_repo=bare, owner="acme", repo="fleet", token=token) as api:
            gh = Github(base_url=api.url, auth=Auth.Token(token),
                        retry=GithubRetry(total=6, secondary_rate_wait=60, max_rate_limit_wait=300), per_page=100,
                        seconds_between_requests=None, seconds_between_writes=None)
            repo = gh.get_repo("acme/fleet")
            assert repo.default_branch == "main" and repo.full_name == "acme/fleet", repo.raw_data
            assert repo.permissions.push
            seen = api.requests[-1]
            assert seen.headers["authorization"] == MASK and api.saw_token(token)
            assert gh.rate_limiting == (999, 1000), gh.rate_limiting

            try:
                repo.get_label("fleet-conflict")
                raise AssertionError("missing label should 404")
            except GithubException as e:
                assert e.status == 404
            label = repo.create_label("fleet-conflict", "d93f0b", "held conflicts")
            assert repo.get_label("fleet-conflict").color == "d93f0b" == label.color

            main_before = api.branch_sha("main")
            pr = repo.create_pull(base="main", head="feature", title="Add b", body="first body")
            assert pr.number == 1 and pr.head.ref == "feature" and pr.mergeable is True
            try:
                repo.create_pull(base="main", head="acme:feature", title="again", body="x")
                raise AssertionError("duplicate should 422")
            except GithubException as e:
                assert e.status == 422 and "already exists for acme:feature" in e.data["errors"][0]["message"], e.data
            try:
                repo.create_pull(base="main", head="nope", title="x", body="x")
                raise AssertionError("missing head should 422")
            except GithubException as e:
                assert e.status == 422 and e.data["errors"][0]["field"] == "head"
            pr2 = repo.create_pull(base="main", head="other", title="Add c", body="second")
            pr3 = repo.create_pull(base="main", head="clash", title="Change a", body="third")

            found = list(repo.get_pulls(state="open", head="acme:feature", base="main"))
            assert [p.number for p in found] == [1], found
            assert len(list(repo.get_pulls(state="open", head="feature"))) == 3  # no owner: filter ignored

            pr.edit(body="edited body")
            assert api.pulls[1].body == "edited body"

            # One 403 secondary rate limit (retry-after: 1) on the next POST, survived by GithubRetry.
            api.fail("POST", r"/issues/\d+/labels$", 403)
            pr.add_to_labels("fleet-conflict")
            tries = [s for s in api.requests if s.path.endswith("/issues/1/labels")]
            assert [(s.status, s.injected) for s in tries] == [(403, True), (200, False)], tries
            waited = tries[1].time - tries[0].time
            assert 1.0 <= waited < 2.0, waited  # urllib3 slept retry-after, not secondary_rate_wait (60 s)
            pr2.add_to_labels(label)

            issues = list(repo.get_issues(state="all", labels=["fleet-conflict"]))
            assert sorted(i.number for i in issues) == [1, 2], issues
            assert all(i.pull_request is not None for i in issues)
            assert "edited body" in [i.body for i in issues]

            # Pagination: one per page, followed through the Link header.
            small = api.client(per_page=1)
            paged = list(small.get_repo("acme/fleet").get_issues(state="all"))
            assert [i.number for i in paged] == [3, 2, 1], paged
            assert any(s.path == "/repos/acme/fleet/issues" and s.target.startswith("/repositories/")
                       for s in api.requests)

            status = pr.merge(merge_method="merge")
            assert status.merged and status.sha == api.branch_sha("main")
            parents = _git(bare, "rev-list", "--parents", "-n", "1", status.sha).stdout.decode().split()[1:]
            assert parents == [main_before, api.pulls[1].head_sha], parents
            files = _git(bare, "ls-tree", "--name-only", status.sha).stdout.decode().split()
            assert files == ["README.md", "a.txt", "b.txt"], files
            got = repo.get_pull(1)
            assert got.merged and got.state == "closed" and got.merge_commit_sha == status.sha

            pr2.edit(state="closed")
            assert api.pulls[2].state == "closed" and not api.pulls[2].merged
            api.close(3)  # the person pressing "Close"
            assert repo.get_issue(3).state == "closed"

            # A conflicting merge is refused with 405 (reopen #3 on a branch that conflicts with main).
            commit_files(bare, "main", {"a.txt": "main moved\n"}, "Move main")
            api.reopen(3)
            try:
                pr3.merge()
                raise AssertionError("conflict should 405")
            except GithubException as e:
                assert e.status == 405, e

            repo.get_git_ref("heads/other").delete()
            assert api.branch_sha("other") is None
            api.commit("feature", {"b.txt": "edited by the reviewer\n"}, "Edit b")
            repo.get_git_ref("heads/clash").delete()
            assert api.pulls[3].state == "closed"  # deleting its head closed it

            # workflow_dispatch: checked against the workflow file at the ref, one queued run each
            commit_files(bare, "main", {".github/workflows/tick.yml": (
                "name: tick\non:\n  schedule:\n    - cron: '7 * * * *'\n  workflow_dispatch:\n    inputs:\n"
                "      ticks:\n        required: false\n        default: ''\n      dry_run:\n        type: boolean\n")},
                "Add a workflow")
            wf = repo.get_workflow("tick.yml")
            assert wf.name == "tick" and wf.path == ".github/workflows/tick.yml", wf.raw_data
            assert wf.create_dispatch("main", {"ticks": "3"}, throw=True)
            assert [(d.path, d.ref, d.inputs) for d in api.dispatches] == [(".github/workflows/tick.yml", "main",
                                                                            {"ticks": "3"})]
            for bad, message in (({"nope": "1"}, 'Unexpected inputs provided: ["nope"]'),
                                 ({"dry_run": "maybe"}, "Provided value 'maybe' for input 'dry_run' not in the list")):
                try:
                    wf.create_dispatch("main", bad, throw=True)
                    raise AssertionError(f"{bad} should 422")
                except GithubException as e:
                    assert e.status == 422 and e.data["message"].startswith(message), e.data
            assert not repo.get_workflow("tick.yml").create_dispatch("no-such-branch", {})
            [listed] = list(repo.get_workflow_runs(event="workflow_dispatch"))
            assert listed.event == "workflow_dispatch" and listed.status == "queued" and listed.head_branch == "main"
            assert len(api.dispatches) == 1

            rl = gh.get_rate_limit()
            assert rl.resources.core.limit == 1000 and rl.resources.core.remaining == api.remaining
            assert not api.errors, api.errors
            assert not any(token in json.dumps(dataclasses.asdict(s)) for s in api.requests)
            print(f"self-test passed: {len(api.requests)} requests, {api.remaining} of 1000 left, "
                  f"403 secondary limit retried after {waited:.1f}s")


if __name__ == "__main__":
    sys.exit(_self_test())
