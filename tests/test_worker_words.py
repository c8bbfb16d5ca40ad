"""What a worker says reaches the terminal whole and on one line: a name from
--agents with a newline in it is escaped; git's reason a knowledge source could
not be fetched is not cut at its first line; a server that ignores the size
filter is said once. Real git, a real closed port."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.ids import printable
from tests.conftest import Fleet, run


@settings(max_examples=40, deadline=None)
@given(name=st.text(st.characters(codec="utf-8", exclude_characters=","), min_size=1, max_size=12).filter(
    lambda s: s.strip() and not s.isidentifier()))
def test_an_unknown_agent_is_named_escaped_on_one_line(name: str) -> None:
    from fleet.plan import UnknownAgents, roster

    with pytest.raises(UnknownAgents) as e:
        roster(["ada", "basil"], [name.strip()])
    message = str(e.value)
    assert message == f"{printable(name.strip(), 80)} not in state/config.json agents"
    assert len(message.splitlines()) == 1 and "\x1b" not in message


def test_work_names_agents_with_a_newline_escaped(fleet: Fleet) -> None:
    r = run(fleet, "work", "--worker", "1", "--workers", "1", "--agents", "ada\nbasil", code=2)
    assert "--agents: ada\\x0abasil not in state/config.json agents" in r.output, r.output
    assert "ada\nbasil" not in r.output
