"""Progress on a terminal for long commands, and never in --json or piped output."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleet.commands.init import init
from fleet.progress import Progress, wanted


def on_terminal(cwd: Path, *args: str) -> tuple[int, str, str]:
    """`fleet ARGS` with stderr on a pseudo-terminal and stdout on a pipe:
    (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100")
    env.pop("NO_COLOR", None)
    p = subprocess.Popen([sys.executable, "-m", "fleet", *args], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    out, _ = p.communicate(timeout=600)
    reader.join()
    os.close(master)
    return p.returncode, out.decode(), shown.decode(errors="replace")


def piped(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """A fleet with a few hundred documents, so validate has work to show."""
    path = tmp_path / "fleet"
    init(path)
    return path


def test_validate_shows_progress_on_a_terminal_only(big: Path) -> None:
    code, out, shown = on_terminal(big, "validate")
    assert code == 0
    assert "validate" in shown and "\x1b[" in shown  # the bar, drawn and then erased
    assert out.splitlines()[-1].endswith("file(s) checked, 0 problem(s)")  # the one-line summary
    p = piped(big, "validate")
    assert p.returncode == 0 and p.stdout == out and p.stderr == ""
    code, out, shown = on_terminal(big, "validate", "--json")
    assert code == 0 and shown == "" and out.startswith("{")


def test_replay_and_report_show_progress_and_end_in_a_summary(big: Path, tmp_path: Path) -> None:
    run = piped(big, "run", "--ticks", "2", "--workers", "1")
    assert run.returncode == 0, run.stderr
    assert "\x1b[" not in run.stdout + run.stderr  # no bar off a terminal
    code, out, shown = on_terminal(big, "replay")
    assert code == 0 and "replay" in shown and "\x1b[" in shown
    assert piped(big, "replay").stdout.splitlines()[0].split(" (")[0] == out.splitlines()[0].split(" (")[0]
    code, out, shown = on_terminal(big, "report", "--out", str(tmp_path / "site"))
    assert code == 0 and "report" in shown and "\x1b[" in shown
    assert len(out.splitlines()) == 1 and out.startswith("report: ticks 1 to 2,")
    code, out, shown = on_terminal(big, "report", "--out", str(tmp_path / "site"), "--json")
    assert code == 0 and shown == "" and '"ticks": 2' in out


def test_task_add_file_shows_progress_and_json_stays_clean(big: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(f'{{"title": "task {i}"}}\n' for i in range(50)))
    code, out, shown = on_terminal(big, "task", "add", "--file", str(tasks))
    assert code == 0, shown
    assert "task add" in shown
    assert out.splitlines()[-1].startswith("pushed 50 task(s)")
    code, out, shown = on_terminal(big, "task", "add", "--file", str(tasks), "--json")
    assert code == 0 and shown == ""


def test_progress_is_off_without_a_terminal_and_with_json(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not wanted(as_json=True)
    monkeypatch.setattr(sys, "stderr", open(os.devnull, "w"))  # noqa: SIM115
    assert not wanted()
    with Progress("x", total=3) as bar:  # a no-op, whatever is called
        bar.advance(1, "[bold]not markup")
        bar.total_is(5)
    assert bar.enabled is False


def test_the_callers_fleet_switches_do_not_reach_the_tests() -> None:
    """Exported FLEET_PROGRESS=0 (or FLEET_STOP) made these tests fail: conftest pins
    them, so a test sees only the variables it sets itself."""
    assert not [n for n in os.environ if n.startswith("FLEET_")]
    assert "GITHUB_STEP_SUMMARY" not in os.environ and "GITHUB_ACTIONS" not in os.environ
