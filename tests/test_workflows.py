"""The workflows and the composite action pass actionlint and zizmor with no findings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed; `pip install -e '.[test]'` installs it")
    return found


def test_actionlint_clean() -> None:
    files = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert files
    p = subprocess.run([_tool("actionlint"), *files], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_zizmor_clean() -> None:
    p = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", "."], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No findings" in p.stdout


@pytest.mark.parametrize("heading, name", [("A workflow you can paste", "tick.yml"),
                                           ("The watchdog, to paste beside it", "watchdog.yml")])
def test_the_readme_workflows_a_user_pastes_are_clean(tmp_path: Path, heading: str, name: str) -> None:
    import re

    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    block = re.search(r"```yaml\n(.*?)```", text[start:], re.S).group(1)
    wf = tmp_path / ".github" / "workflows" / name
    wf.parent.mkdir(parents=True)
    wf.write_text(block.replace("OWNER/fleet@REF", "acme/fleet@0123456789abcdef0123456789abcdef01234567"))
    p = subprocess.run([_tool("actionlint"), str(wf)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    z = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", "."], cwd=tmp_path, capture_output=True, text=True)
    assert z.returncode == 0 and "No findings" in z.stdout, z.stdout + z.stderr


def test_a_new_fleets_workflows_and_carried_action_are_clean(tmp_path: Path) -> None:
    """`fleet init` rewrites `uses: ./` to the action it carries in .github/actions/fleet/."""
    from fleet.commands.init import init

    repo = tmp_path / "mine"
    init(repo)
    files = sorted(str(p) for p in (repo / ".github" / "workflows").glob("*.yml"))
    assert len(files) == 4  # tick, merge, watchdog, report (not ci.yml: it tests fleet itself)
    p = subprocess.run([_tool("actionlint"), *files], cwd=repo, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    z = subprocess.run([_tool("zizmor"), "--offline", "--no-progress", "."], cwd=repo, capture_output=True, text=True)
    assert z.returncode == 0 and "No findings" in z.stdout, z.stdout + z.stderr


def _jobs(name: str) -> dict[str, str]:
    """Each job's block of a workflow, by job id (the workflows are plain YAML: two-space job keys)."""
    import re

    text = (ROOT / ".github" / "workflows" / name).read_text()
    body = text[text.index("\njobs:\n"):]
    parts = re.split(r"\n  ([A-Za-z0-9_-]+):\n", body)
    return dict(zip(parts[1::2], parts[2::2]))


def test_the_token_that_opens_issues_is_only_where_no_model_runs() -> None:
    """Escalated tasks' issues are the watchdog's, whose job runs no model; the
    job that runs a model holds no token that can write, issues included."""
    every = {f"{wf}:{job}": block for wf in ("tick.yml", "merge.yml", "watchdog.yml") for job, block in _jobs(wf).items()}
    models = [k for k, b in every.items() if "command: work" in b]
    assert models
    for key in models:
        assert "write" not in every[key] and "GITHUB_TOKEN" not in every[key], key
    watchdog = every["watchdog.yml:watchdog"]
    assert "command: watchdog" in watchdog and "issues: write" in watchdog and "GITHUB_TOKEN: ${{ github.token }}" in watchdog


def test_fleet_is_built_once_a_tick_where_no_model_runs_and_installed_from_those_wheels() -> None:
    """The plan job (no model, no key) builds the wheelhouse; every later job that runs fleet
    takes it and installs from it, checked against the digest in the plan job's output."""
    jobs = _jobs("tick.yml")
    assert [j for j, b in jobs.items() if "build-wheelhouse:" in b] == ["plan"]
    assert "ANTHROPIC_API_KEY" not in jobs["plan"] and "command: plan" in jobs["plan"]
    assert "wheelhouse: ${{ steps.plan.outputs.wheelhouse-sha256 }}" in jobs["plan"]
    plan = jobs["plan"]
    assert plan.index("build-wheelhouse:") < plan.index("uses: actions/upload-artifact@") < plan.index("id: count")
    consumers = [j for j, b in jobs.items() if "wheelhouse-sha256: ${{ needs.plan.outputs.wheelhouse }}" in b]
    assert sorted(consumers) == ["meanings", "merge", "work"]
    for job in consumers:
        block = jobs[job]
        take = block.index("name: fleet-wheelhouse")
        assert "if: needs.plan.outputs.wheelhouse != ''" in block[:take]
        assert "uses: actions/download-artifact@" in block[:take]
        assert take < block.index("wheelhouse-sha256:")
    # only the relay (which rarely runs) installs fleet from source besides the plan
    assert sorted(set(j for j, b in jobs.items() if "uses: ./" in b) - set(consumers)) == ["plan", "relay"]
