"""fleet.overlap: when two tasks' paths overlap, proven exact against a plain
matcher (fnmatch, one name at a time) by properties over random patterns.

The rule: a path covers what it matches and everything under it; two paths
overlap when some file path is covered by both. ``overlap`` answers with such
a file, so the answer is checked both ways: every file it names is covered by
both (no false alarm), and whenever a file of a small universe is covered by
both, it finds one (no miss).
"""

from __future__ import annotations

import itertools
import re
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.overlap import Index, PathRule, check, overlap, parse, shared


def covers(pattern: str, path: str) -> bool:
    """The rule as plainly as it can be said: some leading run of ``path``'s names
    matches ``pattern`` name by name (``**``: any number of names)."""
    pats = pattern.rstrip("/").split("/")
    names = path.split("/")

    def match(i: int, j: int) -> bool:
        if i == len(pats):
            return True  # the rest of the path is under what matched
        if pats[i] == "**":
            return match(i + 1, j) or (j < len(names) and match(i, j + 1))
        return j < len(names) and fnmatchcase(names[j], pats[i]) and match(i + 1, j + 1)

    return match(0, 0)


# names from a small alphabet, so random patterns meet often
TOKENS = ["a", "b", "c", "*", "?", "[ab]", "[!a]", "[b-c]", "[!a-b]"]
names = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map("".join).filter(lambda n: "**" not in n)
segments = st.one_of(names, names, names, st.just("**"))
patterns = st.lists(segments, min_size=1, max_size=3).map("/".join)
UNIVERSE = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(["a", "b", "c", "ab", "ba", "ca", "cab"],
                                                                     repeat=n)]


@settings(max_examples=400, deadline=None)
@given(a=patterns, b=patterns)
def test_overlap_is_exact(a: str, b: str) -> None:
    found = overlap(a, b)
    if found is not None:  # what it names is covered by both
        assert covers(a, found) and covers(b, found), (a, b, found)
    else:  # and nothing both cover escapes it
        assert not [f for f in UNIVERSE if covers(a, f) and covers(b, f)], (a, b)
    assert (overlap(b, a) is None) == (found is None)  # symmetric
    assert overlap(a, a) is not None  # a path overlaps itself


@settings(max_examples=200, deadline=None)
@given(a=patterns, b=patterns, under=st.lists(st.sampled_from(["a", "b", "x"]), max_size=2))
def test_a_folder_overlaps_what_is_under_what_it_covers(a: str, b: str, under: list[str]) -> None:
    found = overlap(a, b)
    if found is not None:
        deeper = "/".join([found, *under])
        assert covers(a, deeper) and covers(b, deeper)


@pytest.mark.parametrize("a, b, meet", [
    ("src/app.py", "src/app.py", True),  # the same file
    ("src", "src/app.py", True),  # a folder and a file under it
    ("src/", "src/web/app.py", True),
    ("src/*.py", "src/app.py", True),
    ("src/*.py", "src/web/app.py", False),  # * stays within one name
    ("src/**/*.py", "src/web/app.py", True),
    ("**/test_*.py", "tests/unit/test_tasks.py", True),
    ("a/*", "*/b", True),
    ("docs", "src", False),
    ("src/app", "src/app.py", False),  # names, not prefixes of text
    ("[!a-z]*", "abc", False),
    ("*a*b*", "*b*a*", True),
    ("?", "ab", False),
    ("**", "anything/at/all", True),
])
def test_the_rule_by_example(a: str, b: str, meet: bool) -> None:
    assert (overlap(a, b) is not None) == meet


@pytest.mark.parametrize("bad, rule", [
    ("", "non-empty"),
    ("/etc/passwd", "not absolute"),
    ("a/../b", "'..'"),
    ("..", "'..'"),
    ("./src", "'.'"),
    ("a//b", "empty"),
    ("a\\b", "backslash"),
    ("a\nb", "control"),
    ("src/**.py", "'**' stands alone"),
    ("src/[ab", "without its ']'"),
    ("[]", "empty set"),
    ("[z-a]", "goes up"),
    ("[a-]", "not '-'"),
    ("[^a]", "not '^'"),
    ("/".join(["a"] * 40), "at most 32 names"),
    ("a" * 300, "at most 256 characters"),
])
def test_bad_paths_name_the_rule(bad: str, rule: str) -> None:
    with pytest.raises(PathRule, match=re.escape(rule)):
        parse(bad)
    with pytest.raises(PathRule, match=r"^at /paths/1: "):
        check(["ok", bad])


def test_a_tasks_paths_are_a_list_of_distinct_paths() -> None:
    assert check(["docs/", "src/app.py"]) == ["docs", "src/app.py"]  # a folder is stored without its slash
    for value, rule in ((None, "a list of paths"), ("src", "a list of paths"), (["a", "a/"], "given twice"),
                        ([["a"]], "non-empty string"), ([7], "non-empty string"), (["x"] * 65, "at most 64")):
        with pytest.raises(PathRule, match=rule):
            check(value)


def test_absurd_globs_are_still_quick() -> None:
    """The search is polynomial: the worst patterns the rules allow are decided at once."""
    a = "/".join(["**", "*a?[!b]*"] * 16)  # 32 names of wildcards and globstars
    b = "/".join(["[!b-z]" * 5 + "?"] * 8)
    assert overlap(a, b) is not None
    assert overlap("*a" * 100 + "b", "*a" * 100 + "c") is None
    assert overlap("/".join(["*"] * 31 + ["b"]), "/".join(["**"] * 31 + ["c"])) is not None  # c/.../b


def test_the_index_never_hides_a_candidate() -> None:
    idx = Index()
    idx.add("t1", ["src/app.py"])
    idx.add("t2", ["docs"])
    idx.add("t3", ["*/app.py"])
    assert idx.candidates(["src"]) == {"t1", "t3"}
    assert idx.candidates(["**/x"]) == {"t1", "t2", "t3"}
    assert shared(["docs/a.md", "src"], ["lib", "src/app.py"]).covers == "src/app.py"
    assert shared(["docs"], ["src"]) is None
