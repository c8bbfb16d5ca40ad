"""`fleet report`: the page's data against `fleet status --json`, read in a fixed
number of git processes, safe against hostile strings, and opened in a real
headless Chromium (Debian's `chromium`, installed here when missing) that must
draw every chart, load nothing from the network and log no error."""

from __future__ import annotations

import base64
import fcntl
import html.parser
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet import git as git_mod
from fleet import report as report_mod
from fleet.commands.init import init
from fleet.delta import Op
from fleet.plan import assign
from fleet.records import Usage
from fleet.tasks import BRANCH, task_path
from tests.commands.test_task import add, claim, commit_config
from tests.conftest import Fleet, fleet_cli, run
from tests.servers.anthropic_api import AnthropicAPI

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]


# -- the browser ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium: installed with apt-get when missing and we are root
    (one installer at a time across xdist workers), else the test is skipped."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} is missing and only root can install it (apt-get install -y chromium)")
    with open(Path(tempfile.gettempdir()) / "fleet-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(CHROMIUM):
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
            p = subprocess.run(install, capture_output=True, text=True, env=env)
            if p.returncode:  # the package lists may be missing or stale
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
                p = subprocess.run(install, capture_output=True, text=True, env=env)
            assert p.returncode == 0 and os.path.exists(CHROMIUM), f"apt-get install chromium failed: {p.stderr[-2000:]}"
    return CHROMIUM


class Browser:
    """Chromium driven through the DevTools protocol over its pipe (fds 3 and 4):
    no websocket, no port, nothing to download."""

    def __init__(self, exe: str, profile: Path) -> None:
        self.to_r, self.to_w = os.pipe()
        self.from_r, self.from_w = os.pipe()
        to_r, from_w = self.to_r, self.from_w

        def fds() -> None:  # the child's fd 3 reads commands, fd 4 writes answers
            a, b = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=fds, pass_fds=(3, 4))
        os.close(self.to_r)
        os.close(self.from_w)
        self.out = os.fdopen(self.to_w, "wb", buffering=0)
        self.inp = os.fdopen(self.from_r, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buf:
            chunk = self.inp.read(1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        self.out.write(json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read()
            if e.get("method") == method:
                return e
            self.events.append(e)

    def open(self, url: str, width: int = 1100, height: int = 900) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def eval(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")

    def key(self, key: str, code: str, keycode: int, shift: bool = False) -> None:
        mods = 8 if shift else 0
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=keycode,
                      modifiers=mods)

    def screenshot(self, path: Path) -> bytes:
        size = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                         clip={"x": 0, "y": 0, "width": size[0], "height": size[1],
                                               "scale": 1})["data"])
        path.write_bytes(png)
        return png

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.inp.close()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    profile = tmp_path / "profile"  # a new, empty profile for every test
    profile.mkdir()
    b = Browser(chromium, profile)
    try:
        yield b
    finally:
        b.close()


def problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors and warnings, uncaught exceptions, log errors (a CSP
    violation, a failed load) and any request that is not the page itself."""
    found = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            found.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
        elif m == "Runtime.exceptionThrown":
            found.append(f"exception: {p['exceptionDetails'].get('exception', {}).get('description')}")
        elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            found.append(f"log: {p['entry']['text']}")
        elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith(("file:", "data:", "about:")):
            found.append(f"request: {p['request']['url']}")
    return found


# -- a fleet with history ---------------------------------------------------------------


MODEL = "claude-test-1"


def priced_fleet(path: Path) -> None:
    """`fleet init`, a priced model (served by the local Messages API, so tokens
    and cost are real figures), `fleet run --ticks 5`, then tasks in every state but failed."""
    p = fleet_cli(path.parent, "init", path.name)
    assert p.returncode == 0, p.stderr
    config = canonical.load((path / "state/config.json").read_bytes(), "config")
    config["run"]["model"] = MODEL
    config["models"][MODEL] = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}
    (path / "state/config.json").write_bytes(canonical.dumps(config))
    subprocess.run(["git", "commit", "-qam", "price the offline model"], cwd=path, check=True)
    p = fleet_cli(path, "run", "--ticks", "5", "--workers", "2", timeout=600)
    assert p.returncode == 0, p.stderr
    for i in range(4):
        assert fleet_cli(path, "task", "add", f"task {i}").returncode == 0
    for agent in ("ada", "basil"):
        claim = fleet_cli(path, "task", "claim", "--as", agent, "--json")
        assert claim.returncode == 0, claim.stderr
        if agent == "ada":
            t = json.loads(claim.stdout)
            done = fleet_cli(path, "task", "complete", t["id"], "--as", "ada", "--fence", str(t["fence"]))
            assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path]:
    """A fleet after `fleet run --ticks 5`, its `fleet status --json`, and its report folder."""
    root = tmp_path_factory.mktemp("report")
    path, out = root / "fleet", root / "site"
    with pytest.MonkeyPatch.context() as mp, AnthropicAPI() as api:  # the local Messages API; logs kept here
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        mp.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        mp.setenv("ANTHROPIC_API_KEY", "sk-ant-test-" + "k" * 24)
        mp.setenv("ANTHROPIC_BASE_URL", api.url)
        priced_fleet(path)
        status = fleet_cli(path, "status", "--json")
        rep = fleet_cli(path, "report", "--out", str(out), "--json")
    assert status.returncode == 0, status.stderr
    assert rep.returncode == 0, rep.stderr
    written = json.loads(rep.stdout)
    assert written["index"] == str(out / "index.html") and written["ticks"] == 5
    return path, json.loads(status.stdout), out


def page_data(out: Path) -> dict[str, Any]:
    class Data(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.inside, self.text, self.scripts = False, "", 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.scripts += tag == "script"
            self.inside = tag == "script" and ("id", "fleet-data") in attrs

        def handle_data(self, data: str) -> None:
            if self.inside:
                self.text += data

        def handle_endtag(self, tag: str) -> None:
            self.inside = False

    p = Data()
    p.feed((out / "index.html").read_text())
    assert p.scripts == 4  # the data, d3, Plot, report.js: nothing else
    return json.loads(p.text)


def test_the_page_carries_the_figures_status_shows(history: tuple[Path, dict[str, Any], Path]) -> None:
    _, status, out = history
    data = page_data(out)
    assert data["tick"] == status["tick"] == 5
    assert data["totals"] == status["totals"]
    assert [t["tick"] for t in data["ticks"]] == [1, 2, 3, 4, 5]
    # the ticks' own figures add up to the fleet's totals
    # (the engine's total counts every delta merged: applied, no-op and held)
    assert sum(t["applied"] + t["noop"] + t["held"] for t in data["ticks"]) == status["totals"]["applied"]
    usage = Usage.parse(status["totals"]["usage"])
    assert sum(t["tokens"] for t in data["ticks"]) == usage.tokens
    assert sum(round(t["cost_usd"] * 1e6) for t in data["ticks"]) == usage.micro_usd > 0
    assert sum(a["deltas"] for a in data["agents"].values()) == status["totals"]["applied"]
    assert {s: data["tasks"][s] for s in ("pending", "in-progress", "done", "failed", "ready")} == \
        {s: status["tasks"][s] for s in ("pending", "in-progress", "done", "failed", "ready")}
    assert data["tasks"]["done"] == 1 and data["tasks"]["in-progress"] == 1
    assert sum(r["created"] for r in data["throughput"]) == 4 and sum(r["done"] for r in data["throughput"]) == 1
    assert {w["worker"] for w in data["workers"]} == {w["worker"] for w in status["workers"]}


@pytest.mark.slow
def test_the_report_renders_in_chromium(history: tuple[Path, dict[str, Any], Path], browser: Browser,
                                        tmp_path: Path) -> None:
    _, status, out = history
    browser.open((out / "index.html").as_uri())
    assert browser.eval("document.documentElement.dataset.rendered") == "true"
    charts = browser.eval("""[...document.querySelectorAll('figure[data-chart]')].map(f => {
        const svg = f.querySelector('.plot svg[role=img]');
        return {chart: f.dataset.chart, label: svg && svg.getAttribute('aria-label'),
                description: svg && svg.getAttribute('aria-description'),
                marks: svg ? svg.querySelectorAll('rect, path, circle, line').length : 0,
                rows: f.querySelectorAll('details table tbody tr').length}})""")
    assert [c["chart"] for c in charts] == ["deltas", "conflicts", "quarantines", "tokens", "cost", "agents",
                                            "workers", "tasks", "throughput"]
    for c in charts:
        assert c["label"] and c["description"] and c["marks"] > 0 and c["rows"] > 0, c
    # bars of the deltas chart: one per tick (only "applied" is non-zero here)
    bars = browser.eval("document.querySelectorAll('figure[data-chart=deltas] svg g[aria-label=bar] rect').length")
    assert bars >= 5
    # the numbers a person reads, against `fleet status --json`
    shown = browser.eval("""Object.fromEntries([...document.querySelectorAll('dl.stats dd')].map(d => [d.id, d.textContent]))""")
    usage = status["totals"]["usage"]
    assert shown["stat-tick"] == str(status["tick"])
    assert shown["stat-input-tokens"] == f"{usage['input_tokens']:,}"
    assert shown["stat-output-tokens"] == f"{usage['output_tokens']:,}"
    assert shown["stat-cache-read"] == f"{usage['cache_read_input_tokens']:,}"
    assert shown["stat-cost"] == f"${usage['cost_usd']:.6f}"
    assert shown["stat-applied"] == f"{status['totals']['applied']:,}"
    tasks = browser.eval("""Object.fromEntries([...document.querySelectorAll('#task-states tr[data-state]')]
                            .map(r => [r.dataset.state, +r.querySelector('td').textContent]))""")
    for state in ("pending", "in-progress", "done", "failed", "ready", "cooling", "expired"):
        assert tasks[state] == status["tasks"][state], state
    # contrast: every piece of text at least 4.5:1 against the white page
    worst = browser.eval("""(() => {
        const lum = c => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(v => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        let worst = 21;
        for (const el of document.querySelectorAll('body *')) {
            if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
            if (el.closest('.skip') && el !== document.activeElement) continue;
            const s = getComputedStyle(el);
            const color = el.closest('svg') ? s.fill : s.color;
            if (!color.startsWith('rgb')) continue;
            worst = Math.min(worst, 1.05 / (lum(color) + 0.05));
        }
        return worst; })()""")
    assert worst >= 4.5
    # and every bar and cell at least 3:1 (WCAG's figure for graphics)
    marks = browser.eval("""(() => {
        const lum = c => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(v => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const fills = [...document.querySelectorAll('figure svg g[aria-label=bar] rect, figure svg g[aria-label=cell] rect')]
            .map(r => getComputedStyle(r).fill).filter(f => f.startsWith('rgb'));
        return [fills.length, Math.min(...fills.map(f => 1.05 / (lum(f) + 0.05)))]; })()""")
    assert marks[0] > 0 and marks[1] >= 3, marks
    # keyboard: Tab reaches the skip link first, then every section link, every data table's summary
    seen = []
    for _ in range(60):
        browser.key("Tab", "Tab", 9)
        seen.append(browser.eval("(e => e.tagName + ':' + (e.getAttribute('href') || e.textContent.slice(0, 40)))"
                                 "(document.activeElement)"))
    assert seen[0] == "A:#main"
    assert all(f"A:#{s}" in seen for s in ("summary", "needs", "ticks", "agents", "workers", "tasks"))
    assert sum(s.startswith("SUMMARY:Data table") for s in seen) >= 5
    browser.eval("document.activeElement.blur(), window.scrollTo(0, 0)")
    shot = browser.screenshot(tmp_path / "report.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    if os.environ.get("FLEET_REPORT_SCREENSHOT"):  # how .github/report.png is made
        shutil.copy(tmp_path / "report.png", os.environ["FLEET_REPORT_SCREENSHOT"])
    assert problems(browser.events) == []


@pytest.mark.slow
def test_the_page_loads_nothing_from_the_network(history: tuple[Path, dict[str, Any], Path], browser: Browser,
                                                 tmp_path: Path) -> None:
    """The page's own policy forbids any request: a script someone adds is refused, and says so."""
    _, _, out = history
    page = (out / "index.html").read_text()
    evil = tmp_path / "evil.html"
    evil.write_text(page.replace("</body>", '<img src="http://127.0.0.1:9/x.png"><script>window.ran = 1</script></body>'))
    browser.open(evil.as_uri())
    assert browser.eval("document.documentElement.dataset.rendered") == "true"
    assert browser.eval("window.ran === undefined")
    assert any("Content Security Policy" in p for p in problems(browser.events))


# -- reading history -----------------------------------------------------------------


def git_processes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every git process fleet starts from now on (real git: counted, not faked)."""
    started: list[list[str]] = []
    real_run, real_popen = git_mod.subprocess.run, git_mod.subprocess.Popen

    def counted_run(args: Any, *a: Any, **kw: Any) -> Any:
        started.append(list(args))
        return real_run(args, *a, **kw)

    class CountedPopen(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, args: Any, *a: Any, **kw: Any) -> None:
            started.append(list(args))
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(git_mod.subprocess, "run", counted_run)
    monkeypatch.setattr(git_mod.subprocess, "Popen", CountedPopen)
    return started


def test_history_is_read_in_as_many_git_processes_for_many_ticks_as_for_few(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = []
    for ticks in (2, 6):
        while int(json.loads(fleet.read("state/fleet.json"))["tick"]) < ticks:
            tick = int(json.loads(fleet.read("state/fleet.json"))["tick"]) + 1
            fleet.push(fleet.delta("ada", tick=tick, meta={"noop": "resting"}),
                       fleet.delta("basil", tick=tick, worker="w2", meta={"error": "model timed out"}))
            run(fleet, "merge")
        started = git_processes(monkeypatch)
        data = report_mod.collect(fleet.path)
        monkeypatch.undo()
        assert [t.tick for t in data.ticks] == list(range(1, ticks + 1))
        assert data.agents["ada"].noop == ticks and data.agents["basil"].errors == ticks
        assert [w for w in data.workers if w["worker"] == "w2"][0]["errors"] == ticks
        counts.append(len(started))
    assert counts[0] == counts[1]


def test_ticks_limits_the_charts_not_the_totals(fleet: Fleet) -> None:
    for tick in (1, 2, 3):
        fleet.push(fleet.delta("ada", tick=tick, meta={"noop": "resting"}))
        run(fleet, "merge")
    data = report_mod.collect(fleet.path, ticks=2)
    assert [t.tick for t in data.ticks] == [2, 3] and not data.all_ticks
    assert data.agents["ada"].deltas == 2 and data.totals["applied"] == 3
    assert report_mod.collect(fleet.path, ticks=None).all_ticks
    assert run(fleet, "report", "--out", str(fleet.path.parent / "site"), "--ticks", "-1", code=2)


def test_a_malformed_ledger_line_is_named_not_a_traceback(fleet: Fleet, tmp_path: Path) -> None:
    fleet.push(fleet.delta("ada", tick=1, meta={"noop": "resting"}))
    run(fleet, "merge")
    head = fleet.main()
    commit = fleet.git.write_commit(head, "fleet: tick 2\n\nFleet-Tick: 2\n",
                                    {"state/ledger/2/w1.jsonl": b'{"agent": "ada", "agent": "bo"}\n',
                                     "state/fleet.json": fleet.read("state/fleet.json").replace(b'"tick": 1', b'"tick": 2')},
                                    [])
    assert fleet.git.update_ref("refs/heads/main", commit, head)
    r = run(fleet, "report", "--out", str(tmp_path / "site"), code=1)
    assert "state/ledger/2/w1.jsonl" in r.output and "duplicate" in r.output.lower()


# -- hostile strings -------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=60))
def test_hostile_strings_stay_text(s: str) -> None:
    """A name, a conflict's place or a task's title from outside cannot end the data
    script, open an element or add a script: it comes back as the same text."""
    d = report_mod.ReportData(
        name=s, tick=1, main="0" * 40, generated="2026-01-01T00:00:00Z",
        totals={"applied": 1, "quarantined": 0, "held": 0, "usage": {}}, ticks=[], agents={s: report_mod.Activity()},
        agent_ticks=[{"tick": 1, "agent": s, "deltas": 1, "ops": 1, "errors": 0, "quarantined": 0}],
        workers=[], worker_ticks=[], tasks={"pending": 0, "in-progress": 0, "done": 0, "failed": 0},
        throughput=[], bucket="hour", conflicts=[{"id": s, "where": s, "candidates": 2, "opened_tick": 1}],
        escalated=[{"id": "tk-1", "title": s, "failures": 3, "error": s}], all_ticks=True)
    out = Path(tempfile.mkdtemp())
    try:
        report_mod.write(out, d)
        data = page_data(out)
        assert data["name"] == s and data["conflicts"][0]["where"] == s and s in data["agents"]
    finally:
        shutil.rmtree(out)


# -- the workflow that publishes it ---------------------------------------------------------


def test_the_report_workflow_is_optional_least_privilege_and_pinned() -> None:
    import re

    root = Path(__file__).resolve().parent.parent
    text = (root / ".github/workflows/report.yml").read_text()
    jobs = text[text.index("\njobs:\n"):]
    build, deploy = re.split(r"\n  deploy:\n", jobs)
    assert "if: vars.FLEET_REPORT == 'pages'" in build and "needs: build" in deploy  # nothing runs unless asked
    assert re.findall(r"^      \S+: (\S+)", build[build.index("permissions:"):build.index("steps:")], re.M) == ["read"]
    assert "contents: read" in build and "write" not in build
    assert set(re.findall(r"^      ([a-z-]+): write", deploy, re.M)) == {"pages", "id-token"}
    assert "command: report" in build and "command: work" not in text  # no model runs here
    for uses in re.findall(r"uses: (\S+)", text):
        assert uses == "./" or re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), uses


# -- what needs you: `fleet status`'s own list -----------------------------------------------

SITUATIONS = ("budget", "cycle", "missing_dep", "bad_task_file", "conflict", "quarantine", "escalated", "dead")


def _situation(f: Fleet, which: frozenset[str]) -> None:
    """Make a fleet that needs a person for each of ``which``: a day's budget spent, tasks a
    cycle or a missing dep leaves never ready, a file on the queue's branch that is no task,
    an open conflict, a quarantined delta, an escalated task, a dead worker."""
    cfg = json.loads((f.path / "state/config.json").read_text())
    cfg["budgets"]["day"] = {"tokens": 10} if "budget" in which else {}
    cfg["tasks"] = {"max_failures": 1, "retry_delay_seconds": 0}
    cfg["watchdog"] = {"dead_after_ticks": 1}
    commit_config(f, cfg)
    usage = {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01}
    tick1 = [f.delta("ada", meta={"noop": "resting", "usage": usage}, stream="s0")]  # a turn of its own
    if "conflict" in which:
        tick1 += [f.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general")),
                  f.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w2")]
    plan = assign(sorted(cfg["agents"]), 2)  # the agents of w1 and w2 in a run of two workers
    if "dead" in which:
        tick1.append(f.delta(plan["w2"][0], meta={"noop": "resting"}, worker="w2"))
    f.push(*tick1)
    if "quarantine" in which:
        f.push_raw("w1", "deltas/w1/s1/t1-w1-s1-broken.json", b"{not json")
    run(f, "merge")
    if "dead" in which:  # two more ticks of two workers, in which w2 delivers nothing
        for tick in (2, 3):
            f.push(*(f.delta(a, tick=tick, meta={"noop": "resting"}) for a in plan["w1"]))
            run(f, "merge")
    if "escalated" in which:
        t = add(f, "flaky")
        c = claim(f, "ada", "--task", t)
        run(f, "task", "fail", t, "--fence", str(c["fence"]), "--reason", "tests red")
    edits: dict[str, bytes] = {}
    if "cycle" in which:
        a, b = add(f, "ring a", "--id", "tk-ra"), add(f, "ring b", "--id", "tk-rb", "--dep", "tk-ra")
        doc = json.loads(f.git.show(f"refs/heads/{BRANCH}", task_path(a)) or b"")
        edits[task_path(a)] = canonical.dumps({**doc, "deps": [b]})
    if "missing_dep" in which:
        m = add(f, "waits for nothing there", "--id", "tk-md")
        doc = json.loads(f.git.show(f"refs/heads/{BRANCH}", task_path(m)) or b"")
        edits[task_path(m)] = canonical.dumps({**doc, "deps": ["tk-nowhere"]})
    if "bad_task_file" in which:
        add(f, "one task so the branch exists")
        edits[task_path("tk-bad")] = b"{not a task"
    if edits:  # a person's hand edit of the queue's branch
        old = f.git.rev_parse(f"refs/heads/{BRANCH}")
        assert old
        assert f.git.update_ref(f"refs/heads/{BRANCH}", f.git.write_commit(old, "by hand\n", edits, []), old)


def _needs_shown(page: str) -> list[str]:
    """The items of the page's "What needs you" list, as text."""
    import re

    section = page.split('<section id="needs"', 1)[1].split("</section>", 1)[0]
    found = re.search(r'<ul id="needs-you">(.*?)</ul>', section)
    if found is None:
        return []
    items = re.findall(r"<li>(.*?)</li>", found.group(1))
    return [html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<code>(.*?)</code>", r"`\1`", i))) for i in items]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.frozensets(st.sampled_from(SITUATIONS), min_size=2))
@example(frozenset({"budget"})).via("a spent budget")
@example(frozenset({"cycle"})).via("a dependency cycle")
@example(frozenset({"missing_dep"})).via("a dep not there")
@example(frozenset({"bad_task_file"})).via("a task file quarantined")
@example(frozenset()).via("nothing")
@example(frozenset(SITUATIONS)).via("everything at once")
def test_what_needs_you_is_what_status_says(which: frozenset[str]) -> None:
    """The report's "What needs you" is `fleet status`'s list, item for item, whatever needs a person."""
    root = Path(tempfile.mkdtemp(prefix="needs-"))
    try:
        init(root / "fleet")
        f = Fleet(root / "fleet")
        _situation(f, which)
        said = json.loads(run(f, "status", "--json").stdout)["needs_you"]
        kinds = {"never_ready" if w in ("cycle", "missing_dep") else w for w in which}  # one line for both
        assert len(said) >= len(kinds) and (said == []) == (not which), said
        run(f, "report", "--out", str(root / "site"))
        assert _needs_shown((root / "site/index.html").read_text()) == said
        assert page_data(root / "site")["needs_you"] == said
        # and, one by one, what a person acts on: each conflict to decide, escalated task and dead worker
        page = (root / "site/index.html").read_text()
        assert ("fleet resolve c-" in page) == ("conflict" in which)
        assert ("fleet task reopen tk-" in page) == ("escalated" in which)
        assert ("worker <code>w2</code> is dead: delivered nothing" in page) == ("dead" in which)
    finally:
        shutil.rmtree(root)
