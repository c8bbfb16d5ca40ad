"""Progress for long local commands (`fleet run`, `replay`, `validate`, `task add
--file`, `report`): a bar on stderr while they work, and nothing else.

The bar is drawn only when stderr is a terminal and the command prints text:
``--json`` output and piped or redirected output never see it, so scripts
read exactly what they read before. It is transient (erased when the work
ends), so what stays on the screen is the command's own one-line summary.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any

from fleet.ids import printable


def wanted(as_json: bool = False) -> bool:
    """Whether to draw progress: text output, stderr a terminal, and not ``FLEET_PROGRESS=0``."""
    if as_json or os.environ.get("FLEET_PROGRESS", "").strip() in ("0", "no", "off", "false"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr closed or replaced by something without a file
        return False


class Progress:
    """A progress bar for ``total`` steps (None: a spinner), labelled ``label``.

    Used as a context manager; ``advance`` moves it on and may say what it is
    doing now. When progress is not wanted every call does nothing."""

    def __init__(self, label: str, total: int | None = None, *, as_json: bool = False,
                 enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.enabled = wanted(as_json) if enabled is None else enabled
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            # markup off: a description may hold a file's name, and "[x]" in it is text
            columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}", markup=False)]
            if self.total is not None:
                columns += [BarColumn(), MofNCompleteColumn()]
            columns.append(TimeElapsedColumn())
            self._bar = Bar(*columns, console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int = 1, doing: str | None = None) -> None:
        """``n`` more steps done; ``doing``: what the work is on now."""
        if self._bar is not None:
            self._bar.update(self._task, advance=n,
                             description=f"{self.label}: {printable(doing, 60)}" if doing else self.label)

    def total_is(self, total: int) -> None:
        """The number of steps, once it is known."""
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
