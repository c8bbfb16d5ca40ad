"""The README's "Your own world", followed word for word as a new user would.

Every shell block runs as written (with `fleet` on PATH) and every file block
is written where its label says; the world that results must run, with its
agents acting on its own collections, and replay byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def guide() -> list[tuple[str, str, str]]:
    """(kind, label, body) for each block of the section: ('sh', '', script) or ('file', path, text)."""
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Your own world\n")
    section = text[start:text.index("\n## ", start + 1)]
    out = []
    for m in re.finditer(r"(?:^`([^`\n]+)`\n)?^```(\w+)\n(.*?)^```$", section, re.M | re.S):
        label, lang, body = m.group(1), m.group(2), m.group(3)
        if lang == "sh":
            out.append(("sh", "", body))
        else:
            assert label, f"a {lang} block without a file label: {body[:60]}"
            out.append(("file", label, body))
    return out


def test_the_guide_builds_a_world_that_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", XDG_CACHE_HOME=str(tmp_path / "cache"),
               GIT_AUTHOR_NAME="New User", GIT_AUTHOR_EMAIL="new@example.com",
               GIT_COMMITTER_NAME="New User", GIT_COMMITTER_EMAIL="new@example.com")
    cwd = tmp_path
    blocks = guide()
    assert [k for k, _, _ in blocks].count("file") >= 6 and blocks[-1][0] == "sh"
    for kind, label, body in blocks:
        if kind == "file":
            (cwd / label).parent.mkdir(parents=True, exist_ok=True)
            (cwd / label).write_text(body)
            continue
        where = tmp_path / "pwd"
        p = subprocess.run(["bash", "-e", "-c", f"{body}\npwd > {where}"], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, f"{body}\n{p.stdout}\n{p.stderr}"
        assert "Traceback" not in p.stdout + p.stderr
        cwd = Path(where.read_text().strip())
    origin = ["git", "--git-dir", str(cwd / ".git" / "fleet" / "origin.git")]
    listed = subprocess.run([*origin, "ls-tree", "-r", "--name-only", "main", "state/"], capture_output=True,
                            text=True, check=True).stdout.split()
    books = [p for p in listed if p.startswith("state/books/")]
    reviews = [p for p in listed if p.startswith("state/reviews/")]
    assert len(books) > 1 and reviews, listed  # the agents acted on the world's own collections
    for path in books:
        doc = json.loads(subprocess.run([*origin, "show", f"main:{path}"], capture_output=True, check=True).stdout)
        assert doc["by"] != "tess" or doc["id"] == "dune"  # tess may only review (her actions)
    p = subprocess.run([sys.executable, "-m", "fleet", "replay", "--check"], cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
