"""A value that is not there is said in words, never printed as Python's ``None``
or a ``?``: a delta made by hand that names no provider or model, a quarantined
file that names no agent or utc (or is no JSON at all), a decision file that
names no one who made it, a `fleet run` whose budget let no tick start. Each
command's text output is read line by line over generated inputs."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from conftest import Fleet, run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet import canonical
from fleet.commands.init import init
from fleet.delta import Op

# a Python None, or a question mark standing for a value: the words a person cannot act on
LEAK = re.compile(r"\bNone\b|(?:^|[\s(,])\?(?:[\s),:]|$)")


def leaks(text: str) -> list[str]:
    return [line for line in text.splitlines() if LEAK.search(line)]


def _commit(f: Fleet, message: str) -> None:
    subprocess.run(["git", "-c", "user.name=p", "-c", "user.email=p@x", "commit", "-qam", message],
                   cwd=f.path, check=True)


def _on_main(f: Fleet, rel: str, doc: Any) -> None:
    """A person's commit of one file on main (as a merged pull request would add it)."""
    head = f.main()
    assert f.git.update_ref("refs/heads/main", f.git.write_commit(head, "by hand\n", {rel: canonical.dumps(doc)}, []),
                            head)


metas = st.fixed_dictionaries({}, optional={"provider": st.sampled_from(["anthropic", "me"]),
                                            "model": st.sampled_from(["hand", "claude-x"])})
# what a quarantined file holds: bytes that are no JSON, JSON that is no object, or an object
# with some of a delta's fields (any JSON value in them)
json_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=8),
                        st.lists(st.integers(0, 3), max_size=2))
contents = st.one_of(
    st.binary(max_size=30),
    st.lists(st.integers(0, 9), max_size=3).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["id", "tick", "utc", "worker", "stream", "agent", "ops", "meta"]),
                    json_values, max_size=5).map(lambda d: json.dumps(d).encode()))


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(hand=st.lists(metas, min_size=1, max_size=3), files=st.lists(contents, min_size=1, max_size=3))
@example(hand=[{"model": "hand"}, {"provider": "me"}, {}],
         files=[b"{not json", b"[1, 2]", json.dumps({"id": "t1-w1-s1-q2", "tick": 1}).encode()])
def test_status_and_log_say_what_a_hand_made_or_quarantined_file_does_not_name(
        tmp_path_factory: Any, hand: list[dict[str, str]], files: list[bytes]) -> None:
    f = Fleet(tmp_path_factory.mktemp("words") / "fleet")
    init(f.path)
    made = [f.delta("ada", meta={**m, "noop": "by hand"}, stream=f"s{i}") for i, m in enumerate(hand)]
    f.push(*made)
    stems = [f"t1-w1-s9-q{i}" for i in range(len(files))]
    for stem, data in zip(stems, files, strict=True):
        f.push_raw("w1", f"deltas/w1/s9/{stem}.json", data)
    merged = run(f, "merge").stdout
    assert leaks(merged) == [], merged
    status = run(f, "status").stdout
    assert leaks(status) == [], status
    # which provider and model ran the tick: each as named, and what was not named said so
    ran = json.loads(run(f, "status", "--json").stdout)["provider"]["last_tick"]
    said = set()
    for m in hand:
        if m.get("provider") and m.get("model"):
            said.add(f"{m['provider']} {m['model']}")
        elif m.get("model"):
            said.add(f"model {m['model']} (no provider named)")
        elif m.get("provider"):
            said.add(f"provider {m['provider']} (no model named)")
    assert ran == sorted(said)
    listed = run(f, "log").stdout
    assert leaks(listed) == [] and listed.count("QUARANTINED") == len(files), listed
    for stem in stems:
        fate = run(f, "log", "--delta", stem).stdout
        assert leaks(fate) == [] and "QUARANTINED" in fate and "quarantined in tick 1" in fate, fate
    for d in made:
        assert leaks(run(f, "log", "--delta", d["id"]).stdout) == []


def test_a_decision_file_that_names_no_one_is_said_so(fleet: Fleet) -> None:
    """A decision a person commits by hand need not say who made it (resolution.schema.json):
    status, blame and the log say so, in words."""
    general = fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "general"))
    fleet.push(general, fleet.delta("ada", Op("set", "posts", "ada-1", ("channel",), "ideas"), worker="w2"))
    run(fleet, "merge")
    [c] = json.loads(run(fleet, "status", "--json").stdout)["open_conflicts"]
    _on_main(fleet, f"state/resolutions/{c['id']}.json", {"conflict": c["id"], "choose": general["id"]})
    status = run(fleet, "status").stdout
    assert f"waiting for the next merge: decision on {c['id']}" in status and leaks(status) == []
    run(fleet, "merge")
    blame = run(fleet, "log", "posts/ada-1", "--field", "channel").stdout
    assert f"the decision on {c['id']} (its file names no one who made it), tick 2" in blame, blame
    assert leaks(blame) == [] and leaks(run(fleet, "log").stdout) == []
    again = run(fleet, "resolve", c["id"], "--choose", "base", code=1).output  # decided already: when and how
    assert "its file names no one who made it" in again and leaks(again) == [], again


def test_a_decision_file_that_names_no_conflict_is_said_so(fleet: Fleet) -> None:
    _on_main(fleet, "state/resolutions/c-nothing.json", {"choose": "base"})
    status = run(fleet, "status").stdout
    assert "waiting for the next merge: decision that names no conflict" in status and leaks(status) == []


def test_a_run_that_ran_no_tick_says_so(fleet: Fleet) -> None:
    """A spent budget lets no tick of `fleet run` start: its table says no tick ran."""
    cfg = json.loads((fleet.path / "state/config.json").read_text())
    cfg["budgets"]["day"] = {"tokens": 10}
    (fleet.path / "state/config.json").write_bytes(canonical.dumps(cfg))
    _commit(fleet, "a small budget")
    fleet.push(fleet.delta("ada", meta={"noop": "resting", "usage": {"input_tokens": 100, "output_tokens": 20}}))
    run(fleet, "merge")
    r = run(fleet, "run", "--ticks", "1", "--provider", "offline", code=3)
    assert re.search(r"last tick\s*│\s*none ran", r.output), r.output
    assert leaks(r.output) == [], r.output
