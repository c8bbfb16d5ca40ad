"""Knowledge from other repositories (fleet.knowledge): real git repositories
in temporary folders, the local Messages API server as the model."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet import canonical, config, knowledge
from fleet.commands.init import init
from fleet.errors import FleetError
from fleet.prompt import tokens
from tests.conftest import Fleet, run
from tests.servers.anthropic_api import AnthropicAPI, reply, tool_use

KEY = "sk-ant-test-" + "q" * 24
TOMATOES = "# Tomatoes\nWater tomatoes in the garden at dawn; tomatoes split when watering is uneven.\n"
TRAINS = "# Trains\nRailway timetables: trains on the branch line wait for the connection at the junction.\n"
FILLER = "# Filler\n" + "Nothing relevant at all here, only filler words repeated. " * 12 + "\n"
PERSONAS = {"ada": "Ada grows tomatoes in her garden and asks about watering.",
            "basil": "Basil rides trains and reads railway timetables."}


@pytest.fixture
def api() -> Iterator[AnthropicAPI]:
    with AnthropicAPI() as server:
        yield server
        assert server.errors == [], server.errors


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def knowledge_repo(tmp_path: Path, files: dict[str, bytes], hostile: bool = False) -> Path:
    """A bare repository (as a hosted one) whose main holds ``files``; with ``hostile``,
    also a symlink, a binary, a huge and a deep file under notes/."""
    seed = tmp_path / "kb-seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    for rel, data in files.items():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_bytes(data)
    if hostile:
        os.symlink("/etc/passwd", seed / "notes" / "link.md")
        (seed / "notes" / "blob.md").write_bytes(b"PK\x00\x01binary")
        (seed / "notes" / "huge.md").write_bytes(b"tomatoes " * 20_000)
        deep = seed / "notes" / "/".join(f"d{i}" for i in range(10))
        deep.mkdir(parents=True)
        (deep / "deep.md").write_text("tomatoes down deep\n")
        (seed / "notes" / "latin1.md").write_bytes("caf\xe9 tomatoes".encode("latin-1"))
        (seed / "notes" / "evil\x1b[2Jname.md").write_text("tomatoes\n")
    git(seed, "add", "-A")
    git(seed, "-c", "user.name=K", "-c", "user.email=k@example.com", "commit", "-qm", "knowledge")
    bare = tmp_path / "kb.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    git(bare, "config", "uploadpack.allowFilter", "true")  # so the fetch is sparse, as on GitHub
    return bare


def fleet_with(tmp_path: Path, name: str, changes: dict[str, Any]) -> Fleet:
    path = tmp_path / name
    init(path)
    p = path / "state" / "config.json"
    cfg = json.loads(p.read_bytes())
    for aid, persona in PERSONAS.items():
        cfg["agents"][aid]["persona"] = persona
    cfg["run"] = {**cfg["run"], "model": "claude-test-1", "max_retries": 0, "turn_timeout_seconds": 20}
    cfg["fleet"] = {"name": name}
    cfg.update(changes)
    p.write_bytes(canonical.dumps(cfg))
    f = Fleet(path)
    f.git.run("-c", "user.name=Person", "-c", "user.email=p@example.com", "commit", "-qam", "knowledge config")
    return f


def report_of(output: str) -> dict[str, Any]:
    """The --json report among stderr's lines (CliRunner mixes them)."""
    found: dict[str, Any] = json.JSONDecoder().raw_decode(output, output.index("{"))[0]
    return found


def with_model(monkeypatch: pytest.MonkeyPatch, api: AnthropicAPI) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)


def system_of(api: AnthropicAPI, agent: str) -> str:
    (seen,) = api.requests_for(agent)
    return seen.system_text


def knowledge_part(system: str) -> str:
    return system.split(knowledge.HEADING, 1)[1] if knowledge.HEADING in system else ""


def test_knowledge_from_a_second_repository_reaches_the_prompt_most_relevant_first_within_budget(
        tmp_path: Path, api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    kb = knowledge_repo(tmp_path, {"notes/tomatoes.md": TOMATOES.encode(), "notes/trains.md": TRAINS.encode(),
                                   "notes/filler.md": FILLER.encode(), "elsewhere/secret-plan.md": b"not a source\n"},
                        hostile=True)
    budget = 60  # tokens: room for one of the two short notes, not both, never the filler
    f = fleet_with(tmp_path, "fleet", {"remotes": {"kb": "../kb.git"},
                                       "knowledge": {"sources": [{"remote": "kb", "path": "notes"}], "tokens": budget}})
    with_model(monkeypatch, api)
    r = run(f, "work", "--worker", "1", "--workers", "1", "--agents", "ada,basil", "--json")
    ada, basil = knowledge_part(system_of(api, "ada")), knowledge_part(system_of(api, "basil"))
    assert "kb:notes/tomatoes.md" in ada and "kb:notes/trains.md" not in ada  # ranked for Ada, one fits
    assert "kb:notes/trains.md" in basil and "kb:notes/tomatoes.md" not in basil
    for part in (ada, basil):
        assert tokens("\n\n" + knowledge.HEADING + part) <= budget
        assert "filler" not in part and "secret-plan" not in part  # over budget; outside the folder
    # the hostile files: refused one by one, named, in one warning line; the tick went on
    warning = next(line for line in r.output.splitlines() if "refused" in line)
    for why in ("link.md (a symbolic link)", "blob.md (binary)", "huge.md (over 65536 bytes)",
                "deep.md (deeper than 8 folders)", "latin1.md (not UTF-8)",
                "evil\\x1b[2Jname.md (a name that is not printable UTF-8)"):
        assert why in warning, warning
    report = report_of(r.output)
    (read,) = report["knowledge"]
    assert read["remote"] == "kb" and read["files"] == 3 and read["refused"] == 6
    assert read["commit"] == git(kb, "rev-parse", "main").strip()
    # sparse: the huge file's blob never reached the worker's cache
    cache = f.path / ".git" / "fleet" / knowledge.CACHE / "w1.git"
    huge = git(kb, "rev-parse", "main:notes/huge.md").strip()
    missing = git(cache, "rev-list", "--objects", "--missing=print", "refs/fleet/knowledge/0").split()
    assert f"?{huge}" in missing
    assert git(cache, "rev-parse", "--is-shallow-repository").strip() == "true"


@pytest.mark.parametrize("remote,ref", [("../nowhere.git", "main"), ("../kb.git", "no-such-branch")])
def test_a_source_that_cannot_be_fetched_is_one_warning_and_the_tick_goes_on(
        tmp_path: Path, remote: str, ref: str) -> None:
    knowledge_repo(tmp_path, {"notes/tomatoes.md": TOMATOES.encode()})
    f = fleet_with(tmp_path, "fleet", {"remotes": {"kb": remote, "good": "../kb.git"},
                                       "knowledge": {"sources": [{"remote": "kb", "path": "notes", "ref": ref},
                                                                 {"remote": "good", "path": "notes"}]}})
    r = run(f, "work", "--worker", "1", "--workers", "1", "--json")  # offline provider
    warnings = [line for line in r.output.splitlines() if line.startswith("fleet: warning: knowledge source")]
    assert len(warnings) == 1, r.output
    assert warnings[0].startswith(f"fleet: warning: knowledge source 1 (remote kb, notes on {ref}) could not be "
                                  "fetched: ") and warnings[0].endswith("this tick goes on without it")
    report = report_of(r.output)
    assert report["deltas"] == 6 and report["errors"] == 0 and report["pushed"]
    assert [k["remote"] for k in report["knowledge"]] == ["good"]  # the other source was read


def test_a_lesson_recorded_in_one_fleet_reaches_another_fleets_prompt_and_nothing_else_is_synced(
        tmp_path: Path, api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    kb = knowledge_repo(tmp_path, {"notes/tomatoes.md": TOMATOES.encode()})
    seeded = set(git(kb, "ls-tree", "-r", "--name-only", "main").split())
    place = {"remote": "kb", "path": "lessons"}
    one = fleet_with(tmp_path, "one", {"remotes": {"kb": str(kb)}, "knowledge": {"lessons": place}})
    lesson = {"title": "Tomatoes want even watering",
              "text": f"Water at dawn, every day, or the fruit splits. (My key is {KEY}.)"}
    api.script(reply(tool_use("record_lesson", lesson), tool_use("do_nothing", {"reason": "only a lesson"})),
               agent="ada")
    with_model(monkeypatch, api)
    run(one, "work", "--worker", "1", "--workers", "1", "--agents", "ada")
    assert "record_lesson" in api.requests_for("ada")[0].tool_names
    out = json.loads(run(one, "merge", "--json").output)
    assert out["merged"] == 1 and out["lessons"]["commit"] and len(out["lessons"]["files"]) == 1
    (path,) = out["lessons"]["files"]
    assert path.startswith("lessons/t1-w1-") and path.endswith("-1.md")
    assert git(kb, "rev-parse", "main").strip() == out["lessons"]["commit"]
    # the knowledge repository got that file and nothing else: no session, cache, key or .git/fleet/
    assert set(git(kb, "ls-tree", "-r", "--name-only", "main").split()) == seeded | {path}
    text = git(kb, "show", f"main:{path}")
    assert text.startswith("# Tomatoes want even watering\n") and "Recorded by ada of one, tick 1" in text
    assert KEY not in text and KEY not in git(kb, "log", "--format=%B", "main")
    # another fleet reads it at its next tick
    two = fleet_with(tmp_path, "two", {"remotes": {"shared": str(kb)},
                                       "knowledge": {"sources": [{"remote": "shared", "path": "lessons"}]}})
    api.reset()
    run(two, "work", "--worker", "1", "--workers", "1", "--agents", "ada,basil")
    for agent in ("ada", "basil"):
        assert "Tomatoes want even watering" in knowledge_part(system_of(api, agent))
    assert "record_lesson" not in api.requests_for("ada")[0].tool_names  # fleet two has no lessons repository


def test_writing_lessons_again_writes_nothing_and_builds_on_what_others_pushed(
        tmp_path: Path, api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    kb = knowledge_repo(tmp_path, {"README.md": b"kb\n"})
    f = fleet_with(tmp_path, "one", {"remotes": {"kb": str(kb)}, "knowledge": {"lessons": {"remote": "kb"}}})
    api.script(reply(tool_use("record_lesson", {"title": "t", "text": "a lesson"})), agent="ada")
    with_model(monkeypatch, api)
    run(f, "work", "--worker", "1", "--workers", "1", "--agents", "ada")
    from fleet.engine import merge_tick
    from fleet.repo import FleetRepo

    repo = FleetRepo(f.path)
    base = repo.snapshot(repo.main())
    result = merge_tick(base, repo.arrivals(repo.sources(), base.config.limits.max_delta_bytes))
    cfg = base.config
    # another fleet pushed to the knowledge repository since this one last read it
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(kb), str(other))
    (other / "theirs.md").write_text("their lesson\n")
    git(other, "add", "-A")
    git(other, "-c", "user.name=O", "-c", "user.email=o@example.com", "commit", "-qm", "theirs")
    git(other, "push", "-q", "origin", "main")
    first = knowledge.write_lessons(f.path / ".git", f.path, cfg, result.applied, 1)
    assert first is not None and first.commit and first.present == 0
    again = knowledge.write_lessons(f.path / ".git", f.path, cfg, result.applied, 1)
    assert again is not None and again.commit is None and again.present == 1 and again.files == []
    assert git(kb, "rev-parse", "main").strip() == first.commit
    assert git(kb, "rev-parse", "main~1").strip() == git(other, "rev-parse", "main").strip()
    assert sorted(git(kb, "ls-tree", "-r", "--name-only", "main").split()) == sorted(
        ["README.md", "theirs.md", *first.files])


def test_a_lessons_repository_that_cannot_be_reached_is_said_and_the_merge_publishes(
        tmp_path: Path, api: AnthropicAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    f = fleet_with(tmp_path, "one", {"remotes": {"kb": "../gone.git"}, "knowledge": {"lessons": {"remote": "kb"}}})
    api.script(reply(tool_use("record_lesson", {"title": "t", "text": "a lesson"})), agent="ada")
    with_model(monkeypatch, api)
    run(f, "work", "--worker", "1", "--workers", "1", "--agents", "ada")
    out = json.loads(run(f, "merge", "--json").output)
    assert out["published"] and out["merged"] == 1
    assert out["lessons"]["error"].startswith("lessons (remote kb): cannot reach it")
    # the lesson is not lost: it is in the ledger with its delta
    ledger = f.read("state/ledger/1/w1.jsonl").decode()
    assert '"lessons":[{"text":"a lesson","title":"t"}]' in ledger


def test_config_names_only_declared_remotes() -> None:
    raw = json.loads(Path(__file__).resolve().parents[1].joinpath("state", "config.json").read_bytes())
    raw["knowledge"] = {"sources": [{"remote": "nowhere"}]}
    with pytest.raises(FleetError, match="state/config.json: knowledge.sources names remote 'nowhere', which "
                                         "'remotes' does not declare"):
        config.parse(canonical.dumps(raw))
    raw["remotes"] = {"nowhere": "../x"}
    raw["knowledge"] = {"sources": [{"remote": "nowhere", "path": "../up"}]}
    with pytest.raises(FleetError, match="knowledge/sources/0/path"):
        config.parse(canonical.dumps(raw))


# -- the ranking, as properties ----------------------------------------------------

_word = st.sampled_from(["tomatoes", "garden", "trains", "railway", "water", "dawn", "junction", "split", "notes"])
_docs = st.lists(st.tuples(st.integers(0, 2), st.lists(_word, max_size=6)), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(_docs, st.lists(_word, max_size=5), st.randoms(use_true_random=False), st.integers(20, 200))
def test_ranking_orders_by_shared_terms_with_deterministic_ties_and_packs_within_budget(
        specs: list[tuple[int, list[str]]], query_words: list[str], rnd: Any, room: int) -> None:
    docs = [knowledge.Doc.of(src, f"r{src}", f"d{i:02}.md", " ".join(words)) for i, (src, words) in enumerate(specs)]
    query = knowledge.terms(" ".join(query_words))
    ranked = knowledge.rank(docs, query)
    shuffled = list(docs)
    rnd.shuffle(shuffled)
    assert knowledge.rank(shuffled, query) == ranked  # the order files arrived in never matters
    keys = [(-knowledge.score(d, query), d.source, d.path) for d in ranked]
    assert keys == sorted(keys)  # more shared terms first; ties by source, then path
    assert all(knowledge.score(d, query) == len(d.words & query) for d in docs)
    text, cost = knowledge.pack(ranked, room, tokens)
    assert tokens(text) <= cost <= room  # each block counted rounded up: never under the true figure
    shown = [d for d in ranked if f"\n--- {d.remote}:{d.path}\n" in text]
    positions = [text.index(f"\n--- {d.remote}:{d.path}\n") for d in shown]
    assert positions == sorted(positions)  # packed in rank order
    if text:  # a document left out did not fit where it came
        used = tokens("\n\n" + knowledge.HEADING)
        for d in ranked:
            block = tokens(f"\n--- {d.remote}:{d.path}\n{d.text.strip()}")
            if d in shown:
                used += block
            else:
                assert used + block > room


def test_terms_leave_out_short_and_common_words() -> None:
    assert knowledge.terms("The tomatoes, and THE Garden of an ox!") == frozenset({"tomatoes", "garden"})


def _write_from_process(args: tuple[str, str, int]) -> list[str]:
    """One merge job of one fleet writing its lessons (its own process, racing the others)."""
    fleet_path, worker, n = args
    from fleet import delta as delta_mod
    from fleet.config import Limits
    from fleet.delta import Arrival, file_path, from_body
    from fleet.repo import FleetRepo

    repo = FleetRepo(Path(fleet_path))
    cfg = repo.snapshot(repo.main()).config
    deltas = []
    for i in range(n):
        body = delta_mod.make(tick=1, worker=worker, stream="s1", agent="ada",
                              meta={"noop": "a lesson", "lessons": [{"title": f"{worker} {i}", "text": "x"}]})
        deltas.append(from_body(body, Arrival("test", file_path(body), canonical.dumps_line(body)), Limits()))
    done = knowledge.write_lessons(Path(fleet_path) / ".git", Path(fleet_path), cfg, deltas, 1)
    assert done is not None
    return done.files


@pytest.mark.slow
def test_many_merge_jobs_write_lessons_to_one_repository_at_once_and_every_file_lands_once(tmp_path: Path) -> None:
    import multiprocessing

    kb = knowledge_repo(tmp_path, {"README.md": b"kb\n"})
    f = fleet_with(tmp_path, "one", {"remotes": {"kb": str(kb)}, "knowledge": {"lessons": {"remote": "kb"}}})
    jobs = [(str(f.path), f"w{i}", 3) for i in range(1, 7)]
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        written = pool.map(_write_from_process, jobs)
    files = [p for w in written for p in w]
    assert len(files) == 18 == len(set(files))
    tree = git(kb, "ls-tree", "-r", "--name-only", "main").split()
    assert sorted(tree) == sorted(["README.md", *files])
    # one commit per job that won its compare-and-swap, in one line of history
    log = git(kb, "log", "--format=%H %P", "main").splitlines()
    assert len(log) == 1 + len(jobs) and all(len(line.split()) <= 2 for line in log)


def test_fleet_run_with_several_workers_reads_knowledge_in_each(tmp_path: Path) -> None:
    """The workers of one clone fetch at once, each into its own cache: no lock is shared."""
    knowledge_repo(tmp_path, {"notes/tomatoes.md": TOMATOES.encode()})
    f = fleet_with(tmp_path, "fleet", {"remotes": {"kb": "../kb.git"},
                                       "knowledge": {"sources": [{"remote": "kb", "path": "notes"}]}})
    r = run(f, "run", "--ticks", "2", "--workers", "3")
    assert "warning: knowledge" not in r.output
    caches = sorted(p.name for p in (f.path / ".git" / "fleet" / knowledge.CACHE).iterdir())
    assert len(caches) >= 2 and all(c.startswith("w") and c.endswith(".git") for c in caches)


def test_locks_left_by_a_killed_run_in_its_private_caches_do_not_stop_the_next(tmp_path: Path) -> None:
    """A `fleet run` killed (-9) mid-fetch leaves git's lock files in the caches it
    alone held: the merge's cache and each worker's knowledge cache. The next run
    removes them, instead of failing every fetch that moves a ref (or dropping the
    knowledge with a warning) until someone deletes them by hand."""
    kb = knowledge_repo(tmp_path, {"notes/tomatoes.md": TOMATOES.encode()})
    f = fleet_with(tmp_path, "fleet", {"remotes": {"kb": "../kb.git"},
                                       "knowledge": {"sources": [{"remote": "kb", "path": "notes"}]}})
    run(f, "run", "--ticks", "1", "--workers", "1")
    own = f.path / ".git" / "fleet"
    locks = []
    for cache in (own / "merge.git", own / knowledge.CACHE / "w1.git"):
        refs = [p for p in (cache / "refs").rglob("*") if p.is_file()]
        assert refs, cache
        locks += [cache / "shallow.lock", *(p.with_name(p.name + ".lock") for p in refs)]
    for lock in locks:
        lock.write_text("")
    # both remotes move on, so both fetches must update the locked refs
    seed = tmp_path / "kb-seed"
    (seed / "notes" / "more.md").write_text("more tomatoes\n")
    git(seed, "add", "-A")
    git(seed, "-c", "user.name=K", "-c", "user.email=k@example.com", "commit", "-qm", "more")
    git(seed, "push", "-q", str(kb), "main")
    f.git.run("reset", "-q", "--hard", "refs/fleet/origin/main")
    f.git.run("-c", "user.name=Person", "-c", "user.email=p@example.com", "commit", "-q", "--allow-empty",
              "-m", "a person's commit the run brings in")
    r = run(f, "work", "--worker", "1", "--workers", "1", "--outbox", str(tmp_path / "out"))
    assert f"knowledge: fetched kb main {git(kb, 'rev-parse', 'main').strip()[:12]}" in r.output
    r = run(f, "run", "--ticks", "1", "--workers", "1")
    assert "tick 2:" in r.output
    assert not [p for p in locks if p.exists()]


def test_work_says_which_commit_of_each_source_it_read(tmp_path: Path) -> None:
    kb = knowledge_repo(tmp_path, {"notes/tomatoes.md": TOMATOES.encode()})
    f = fleet_with(tmp_path, "fleet", {"remotes": {"kb": "../kb.git"},
                                       "knowledge": {"sources": [{"remote": "kb", "path": "notes"}]}})
    r = run(f, "work", "--worker", "1", "--workers", "1")
    tip = git(kb, "rev-parse", "main").strip()
    assert f"knowledge: fetched kb main {tip[:12]}: 1 file(s) under notes" in r.output
