"""`fleet report --out DIR`: the fleet's history as a static HTML page (fleet.report)."""

from __future__ import annotations

from pathlib import Path

import click

from fleet import report as report_mod
from fleet import summary
from fleet.cli import check_output, dir_option, emit, json_option, remote_option
from fleet.errors import UsageError
from fleet.progress import Progress


def report(path: Path, out: Path, ticks: int | None = 500, remote: str | None = None,
           as_json: bool = False) -> report_mod.Written:
    """Read the fleet's history and write ``out/index.html``; a progress bar on a terminal."""
    if ticks is not None and ticks < 1:
        raise UsageError("--ticks: must be 1 or more (0: every tick)")
    _check_out(path, out)
    with Progress("report", total=len(report_mod.STEPS), as_json=as_json) as bar:
        data = report_mod.collect(path, remote, ticks, step=lambda name: bar.advance(0, f"reading {name}"))
        bar.advance(len(report_mod.STEPS) - 1, "writing the page")
        written = report_mod.write(out, data)
        bar.advance(1)
    return written


def _out(value: str) -> Path:
    """--out as given: an empty one is no folder (click would make it the current one)."""
    if not value.strip():
        raise click.BadParameter("name a folder for the page (it is made if missing), e.g. --out site")
    return Path(value)


def _check_out(path: Path, out: Path) -> None:
    """The page goes to a folder of its own: new, empty, or one a report was written to."""
    check_output(path, out, "--out", folder=True, ours=_a_report)


def _a_report(folder: Path) -> bool:
    """Whether ``folder`` holds a page of fleet's (and, besides it, only what a site may hold)."""
    try:
        with (folder / "index.html").open("rb") as f:
            head = f.read(2048)
    except OSError:
        return False
    return b'<meta name="generator" content="fleet ' in head


@click.command("report")
@dir_option
@json_option
@remote_option
@click.option("--out", "out", required=True, callback=lambda ctx, param, value: _out(value),
              help="The folder to write index.html into (made if missing): serve it anywhere, e.g. GitHub Pages.")
@click.option("--ticks", "ticks", type=int, default=500, show_default=True,
              help="Chart the newest N ticks (0: every tick). Tokens and cost are the fleet's whole life; the delta counts, those of the ticks shown.")
def report_command(directory: Path, as_json: bool, remote: str | None, out: Path, ticks: int) -> None:
    """A static HTML report of the fleet's history in DIR: charts with text alternatives, no network.

    Deltas, conflicts, quarantines, tokens and cost per tick, each agent's
    activity, workers' health and the task queue, in one index.html that
    needs no server (GitHub Pages serves it as it is)."""
    w = report(directory, out, None if ticks == 0 else ticks, remote, as_json)
    summary.table("fleet report", {"ticks": f"{w.first_tick} to {w.last_tick}" if w.ticks else "none",
                                   "agents": w.agents, "workers": w.workers, "tasks": w.tasks,
                                   "page": f"{w.bytes // 1024:,} KiB"})

    def text() -> None:
        span = f"ticks {w.first_tick} to {w.last_tick}" if w.ticks else "no ticks yet"
        click.echo(f"report: {span}, {w.agents} agents, {w.workers} workers, {w.tasks} tasks -> {w.index} "
                   f"({w.bytes // 1024:,} KiB)")

    emit(w.to_json(), as_json, text)
