"""Ctrl-C while fleet starts ends as Ctrl-C does later: one line, exit 130, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def test_ctrl_c_while_fleet_imports_its_command_line_is_one_line_not_a_traceback() -> None:
    """SIGINT at moments through the first part of a second (the console script used to
    show a traceback from `import click` or fleet's own modules)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # slower imports: a wider window to land in
    seen = set()
    for delay in (0.02, 0.05, 0.08, 0.12, 0.16, 0.2):
        p = subprocess.Popen([sys.executable, "-c", "from fleet.entry import main; main()", "--help"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        said = err.decode(errors="replace")
        # a signal before fleet.entry's guard runs (Python's own start, importing site on a
        # busy machine, or the caller's own import line, as in a console script's) is
        # Python's; once fleet's code or click runs, none is a traceback
        frames = [ln for ln in said.splitlines() if ln.strip().startswith("File ")]
        assert not [f for f in frames if "/fleet/" in f or "/click/" in f], (delay, said)
        if "Fatal Python error: init_import_site" not in said:  # (Python stopped before it ran anything)
            seen.add(p.returncode)
    assert seen <= {0, 1, 130, -signal.SIGINT}, seen  # finished, click's "Aborted!", ours, or before Python ran
