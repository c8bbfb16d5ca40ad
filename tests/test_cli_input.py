"""Every command of the command line against hostile arguments.

The commands are found from the command group itself, so a new command or
option is covered without a word here: a required option left out is a usage
error, a remote that git would read as an option is refused before git runs,
and generated arguments (edge numbers, NaN, control bytes, long text, paths to
FIFOs, devices, link loops and folders) never end in an internal error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import Fleet
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet.commands.init import init
from fleet.main import cli


def leaves() -> list[tuple[list[str], click.Command]]:
    """Every command that runs something, as (its words, the command)."""
    ctx = click.Context(cli)
    out: list[tuple[list[str], click.Command]] = []

    def walk(cmd: click.Command, words: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*words, name])
        else:
            out.append((words, cmd))

    walk(cli, [])
    return out


LEAVES = leaves()
# Commands that may run for long on valid input (ticks, waits, a worker's turns)
# are tried with the arguments that cannot start that work.
LONG = {("run",), ("work",), ("dispatch",)}


def _invoke(args: list[str]) -> click.testing.Result:
    return CliRunner().invoke(cli, args, catch_exceptions=True)


@pytest.mark.parametrize("words, cmd", LEAVES, ids=[" ".join(w) for w, _ in LEAVES])
def test_a_required_option_left_out_is_a_usage_error(words: list[str], cmd: click.Command, tmp_path: Path) -> None:
    """click 8.2 and later take an explicit default=None as a given value: a
    required option with one ran the command with None (a traceback)."""
    required = [p for p in cmd.params if p.required and isinstance(p, click.Option)]
    for p in required:
        args = [*words, "-C", str(tmp_path)] if any("-C" in q.opts for q in cmd.params) else list(words)
        for other in required:
            if other is not p:
                args += [other.opts[0], "1"]
        args += ["1" for q in cmd.params if isinstance(q, click.Argument) and q.required]
        r = _invoke(args)
        assert r.exit_code == 2 and "Missing option" in r.output, (args, r.output)


@pytest.fixture(scope="module")
def a_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("cli")
    init(root / "f")
    yield Fleet(root / "f")


@pytest.mark.parametrize("words, cmd", [(w, c) for w, c in LEAVES if any("--remote" in p.opts for p in c.params)],
                         ids=[" ".join(w) for w, c in LEAVES if any("--remote" in p.opts for p in c.params)])
def test_a_remote_that_git_would_read_as_an_option_runs_nothing(words: list[str], cmd: click.Command,
                                                                 a_fleet: Fleet, tmp_path: Path) -> None:
    """``--remote=--upload-pack=<command>`` once ran the command through git fetch."""
    proof = tmp_path / "ran"
    args = [*words, "-C", str(a_fleet.path), f"--remote=--upload-pack=touch {proof}"]
    for p in cmd.params:  # the rest of what the command requires, harmless
        if p.required and isinstance(p, click.Option):
            args += [p.opts[0], "1"]
    args += ["1" for p in cmd.params if isinstance(p, click.Argument) and p.required]
    r = _invoke(args)
    assert not proof.exists()
    assert r.exit_code in (1, 2) and "internal error" not in r.output, r.output


_TEXT = ["", " ", "-", "..", "a/b", "\n", "x" * 3000, "é", "\u202e", "1e308", "-1", "nan", "CON", "../../etc/passwd",
         "ada", "w1", "*", "[", "{}", '{"a": 1}', "null", "0", "a\tb", "\x1b[2J", "ada,ada", ",", "🙂" * 50,
         "--json", "-C", "\udcff"[:0] + "\x7f"]
_INT = ["-1", "0", "1", "2", "9223372036854775808", "99999999999999999999999", "nan", "1e3", "", "-9223372036854775809"]
_FLOAT = ["nan", "inf", "-inf", "1e308", "-0", "1e-320", "", "0", "-1", "5", "NaN"]


def _special_paths(base: Path, fleet: Fleet) -> list[str]:
    """Paths a person might type by mistake or by malice: each kind once."""
    fifo, loop, garbage, folder = base / "fifo", base / "loop", base / "garbage", base / "folder"
    if not fifo.exists():
        os.mkfifo(fifo)
        os.symlink(loop.name, loop)
        garbage.write_bytes(bytes(range(256)) * 4)
        folder.mkdir()
    return ["", "/dev/null", "/dev/zero", "/proc/self/mem", str(base / "missing" / "x"), str(fifo), str(loop),
            str(garbage), str(folder), str(fleet.path / "state"), str(fleet.path / "state" / "config.json")]


# Derandomized: the suite runs the same 300 examples everywhere, so a run in CI never
# fails on a case nobody here saw. To hunt further, run it with more examples and
# seeds (--hypothesis-seed=N, max_examples=4000: 28,000 examples passed so).
@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_generated_arguments_never_end_in_an_internal_error(data: st.DataObject, a_fleet: Fleet,
                                                            tmp_path_factory: pytest.TempPathFactory,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path_factory.getbasetemp() / "cli-paths"
    base.mkdir(exist_ok=True)
    monkeypatch.chdir(base)  # a relative path written to lands here, never in the checkout
    paths = _special_paths(base, a_fleet)
    words, cmd = data.draw(st.sampled_from(LEAVES), label="command")
    args = [*words, "-C", str(a_fleet.path)] if any("-C" in p.opts for p in cmd.params) else list(words)
    positional: list[str] = []
    for p in cmd.params:
        if p.opts == ["-C"]:
            continue
        kind = type(p.type).__name__
        if kind == "Path":
            values = paths
        elif "Int" in kind:
            values = _INT
        elif "Float" in kind:
            values = _FLOAT
        elif isinstance(p.type, click.Choice):
            values = [*map(str, p.type.choices), "zzz", ""]
        else:
            values = _TEXT
        if isinstance(p, click.Argument):
            positional += [data.draw(st.sampled_from(values), label=p.name or "arg")
                           for _ in range(1 if p.nargs == 1 else data.draw(st.integers(0, 2)))]
        elif getattr(p, "is_flag", False):
            if data.draw(st.booleans(), label=p.opts[0]):
                args.append(p.opts[0])
        elif p.required or data.draw(st.booleans(), label=p.opts[0]):
            args += [p.opts[0], data.draw(st.sampled_from(values), label=p.opts[0])]
    if tuple(words) in LONG or (tuple(words) == ("plan",) and "--wait" in args):
        args.append("--bad-option-so-nothing-long-runs")
    if "/dev/zero" in args and tuple(words) == ("task", "add"):
        pass  # bounded reads: tested apart
    r = _invoke([*args, "--", *positional] if positional else args)
    assert "internal error" not in r.output, (args, positional, r.output)
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), (args, r.exception)
    assert r.exit_code in (0, 1, 2, 3), (args, positional, r.exit_code, r.output)
    told = [line for line in r.output.splitlines() if line.startswith(("fleet: ", "Error: "))]
    assert len(told) == len(set(told)), (args, positional, r.output)  # an error is said once


@pytest.mark.parametrize("args", [
    ["task", "add", "--file", "/dev/zero"],
    ["task", "add", "--file", "{fifo}"],
    ["task", "complete", "t1", "--fence", "1", "--result-file", "/dev/zero"],
    ["task", "complete", "t1", "--fence", "1", "--result-file", "{big}"],
])
def test_a_file_a_person_names_is_read_no_further_than_its_limit(a_fleet: Fleet, tmp_path: Path,
                                                                 args: list[str]) -> None:
    """/dev/zero was read until the machine ran out of memory (22 GB before the kill)."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b'"' + b"x" * 200_000 + b'"')
    args = [a.format(fifo=tmp_path / "fifo", big=tmp_path / "big") for a in args]
    r = _invoke([*args[:2], "-C", str(a_fleet.path), *args[2:]])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "is a device" in r.output or "is a FIFO" in r.output or "at most" in r.output, r.output


@pytest.mark.parametrize("stdin, says", [(b"x" * (3 << 20), "more than"), (b"caf\xe9", "not UTF-8")])
def test_a_body_on_standard_input_is_bounded_and_utf8(a_fleet: Fleet, stdin: bytes, says: str) -> None:
    r = CliRunner().invoke(cli, ["msg", "send", "-C", str(a_fleet.path), "--from", "ada", "--to", "basil",
                                 "--body", "-"], input=stdin)
    assert r.exit_code == 1 and says in r.output and len(r.output.strip().splitlines()) == 1, r.output


_HIDDEN_CHARS = st.sampled_from(["\x1b", "\x1b[31m", "\x07", "\x7f", "\u202e", "\u2066", "\u200b", "\u2028", "\ufeff", "\U000e0001",
                                 "\x85", "\r"])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(name="a\x1b[31mb")  # an escape sequence click would drop off a terminal
@given(name=st.tuples(st.text("ab-é日", max_size=3), _HIDDEN_CHARS,
                      st.lists(st.one_of(_HIDDEN_CHARS, st.sampled_from("ab-é日")), max_size=5).map("".join)).map("".join))
def test_a_file_name_reaches_the_terminal_escaped_and_json_unchanged(a_fleet: Fleet, name: str) -> None:
    """A name with an escape sequence or a bidirectional override was printed raw
    (a terminal obeys it; click drops escape sequences off a terminal, so another
    file's name was shown). Text escapes it; JSON carries it as a JSON escape."""
    import json
    import unicodedata

    path = a_fleet.path / "state" / "posts" / f"{name}.json"
    try:
        path.write_text("{}")
        text = _invoke(["validate", "-C", str(a_fleet.path)])
        as_json = _invoke(["validate", "-C", str(a_fleet.path), "--json"])
    finally:
        path.unlink()
    shown = text.output
    assert not [c for c in shown if c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")]
    assert text.exit_code == 1 and f"state/posts/{name}.json" not in shown
    from fleet.ids import printable_lines
    assert printable_lines(f"state/posts/{name}.json") in shown, shown  # the name as it is, escaped: not another's
    problems = json.loads(as_json.output)["problems"]
    assert f"state/posts/{name}.json" in [p["path"] for p in problems]
    assert not [c for c in as_json.output if not c.isascii() and unicodedata.category(c) in ("Cf", "Cs", "Co", "Zl", "Zp")]


@pytest.mark.parametrize("out", ["", ".", "state", "state/posts", "schemas", ".git", ".git/fleet"])
def test_the_report_is_never_written_into_the_fleets_own_folders(a_fleet: Fleet, out: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """--out state wrote index.html into state/, which validate then refused; an
    empty --out wrote it beside the README."""
    monkeypatch.chdir(a_fleet.path)
    before = sorted(p for p in a_fleet.path.rglob("*") if ".git" not in p.parts)
    r = _invoke(["report", "--out", out])
    assert r.exit_code == 2 and ("a folder of its own" in r.output or "name a folder" in r.output), r.output
    assert sorted(p for p in a_fleet.path.rglob("*") if ".git" not in p.parts) == before


@pytest.mark.parametrize("flag, value", [("--propose-meanings", ""), ("--propose-meanings", "{folder}"),
                                         ("--meanings", ""), ("--meanings", "{fifo}"), ("--meanings", "/dev/zero"),
                                         ("--meanings", "{folder}")])
def test_the_model_answers_file_of_a_merge_is_one_line_when_it_cannot_be(fleet: Fleet, tmp_path: Path, flag: str,
                                                                         value: str) -> None:
    """Found by the generated arguments in a fresh clone: --propose-meanings '' (the
    current folder) was an internal error once a delta was pending; a FIFO as
    --meanings would have waited for ever."""
    from fleet.delta import Op

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    fleet.push(fleet.delta("basil", Op("incr", "posts", "ada-1", ("score",), 1)))
    head = fleet.main()
    r = _invoke(["merge", "-C", str(fleet.path), flag, value.format(fifo=tmp_path / "fifo", folder=tmp_path / "folder")])
    assert r.exit_code in (1, 2) and "internal error" not in r.output, r.output
    assert len(r.output.strip().splitlines()) <= 4 and fleet.main() == head


_RANGED = [(w, c, p) for w, c in LEAVES for p in c.params
           if isinstance(p, click.Option) and isinstance(p.type, click.FloatRange)]


@pytest.mark.parametrize("words, cmd, param", _RANGED, ids=[f"{' '.join(w)} {p.opts[0]}" for w, _, p in _RANGED])
@pytest.mark.parametrize("value", ["nan", "NaN"])
def test_nan_for_a_ranged_option_is_refused_stating_the_options_own_range(
        words: list[str], cmd: click.Command, param: click.Option, value: str, a_fleet: Fleet) -> None:
    """A click range lets NaN through (every comparison with it is false); the
    refusal that catches it says the range the option's help and click say."""
    rng = param.type
    assert isinstance(rng, click.FloatRange)
    args = [*words, "-C", str(a_fleet.path), param.opts[0], value]
    for p in cmd.params:
        if (p.required or "--fence" in p.opts) and p is not param and isinstance(p, click.Option):
            args += [p.opts[0], "1"]  # (--fence is required by the command, for --token's sake)
    args += ["1" for p in cmd.params if isinstance(p, click.Argument) and p.required]
    head = a_fleet.main()
    r = _invoke(args)
    assert r.exit_code == 2 and f"{param.opts[0]}: nan" in r.output, r.output
    low = "0" if rng.min == 0 else f"{rng.min:g}" if rng.min is not None else None
    assert (low is None or f"from {low} to" in r.output) and f"to {int(rng.max or 0)} " in r.output, r.output
    assert a_fleet.main() == head


_OUTPUTS = [(["report", "--out"], True), (["work", "--worker", "1", "--workers", "2", "--outbox"], True),
            (["merge", "--propose-meanings"], False)]


@pytest.mark.parametrize("words, folder", _OUTPUTS, ids=[w[0] for w, _ in _OUTPUTS])
@pytest.mark.parametrize("where", [".", "state", "state/x", "schemas", ".git", ".git/fleet/x"])
def test_nothing_a_person_names_for_output_lands_in_the_fleets_own_folders(
        a_fleet: Fleet, words: list[str], folder: bool, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """--outbox state wrote deltas into state/ (validate then refused the fleet),
    --propose-meanings state/x.jsonl a stray file there."""
    monkeypatch.chdir(a_fleet.path)
    before = sorted(p for p in a_fleet.path.rglob("*") if ".git" not in p.parts)
    r = _invoke([words[0], "-C", str(a_fleet.path), *words[1:], where])
    assert r.exit_code == 2 and ("of its own" in r.output or "is a directory" in r.output), r.output
    assert sorted(p for p in a_fleet.path.rglob("*") if ".git" not in p.parts) == before
    assert not (a_fleet.path / ".git" / "fleet" / "x").exists()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=200), as_folder=st.booleans(), case=st.sampled_from(_OUTPUTS))
def test_a_file_or_folder_fleet_did_not_write_is_never_written_over(
        a_fleet: Fleet, tmp_path_factory: pytest.TempPathFactory, data: bytes, as_folder: bool,
        case: tuple[list[str], bool]) -> None:
    """fleet merge --propose-meanings /etc/passwd emptied the file (run as root);
    report --out .. wrote index.html over the parent folder's."""
    words, folder = case
    target = tmp_path_factory.mktemp("out") / "target"
    if as_folder:
        target.mkdir()
        (target / "index.html").write_bytes(data)  # (a page, but not fleet's)
        keep = target / "index.html"
    else:
        target.write_bytes(data)
        keep = target
    r = _invoke([words[0], "-C", str(a_fleet.path), *words[1:], str(target)])
    assert r.exit_code == 2 and str(target) in r.output, r.output
    assert keep.read_bytes() == data and sorted(p.name for p in target.parent.rglob("*")) == sorted(
        ["target", "index.html"] if as_folder else ["target"])


def test_fleet_writes_again_over_what_it_wrote(a_fleet: Fleet, tmp_path: Path) -> None:
    """The same --out, --outbox and --propose-meanings again: a page is replaced,
    the workers of a tick share an outbox, an answers file is rewritten."""
    for _ in range(2):
        assert _invoke(["report", "-C", str(a_fleet.path), "--out", str(tmp_path / "site")]).exit_code == 0
    for w in ("1", "2"):
        r = _invoke(["work", "-C", str(a_fleet.path), "--worker", w, "--workers", "2", "--outbox", str(tmp_path / "ob")])
        assert r.exit_code == 0, r.output
    assert [p.name for p in (tmp_path / "ob").iterdir()] == ["deltas"]
    answers = tmp_path / "answers.jsonl"
    for _ in range(2):
        r = _invoke(["merge", "-C", str(a_fleet.path), "--inbox", str(tmp_path / "ob"), "--propose-meanings", str(answers)])
        assert r.exit_code == 0, r.output
        assert answers.read_bytes() == b""  # no field held under 'meaning' in this world: no answer, a file


@pytest.mark.parametrize("words, cmd", LEAVES, ids=[" ".join(w) for w, _ in LEAVES])
def test_an_argument_that_is_not_utf8_is_a_usage_error_for_every_command(words: list[str], cmd: click.Command,
                                                                          a_fleet: Fleet) -> None:
    """`fleet log posts/x<0xff>`, `task add x<0xff>`, `init DIR<0xff>` printed two
    tracebacks (the log of the first could not hold the argument either)."""
    bad = "x\udcff"  # what Python makes of the byte 0xff in argv
    for p in cmd.params:
        args = [*words, "-C", str(a_fleet.path)] if any("-C" in q.opts for q in cmd.params) else list(words)
        if isinstance(p, click.Argument):
            args += [bad]
        elif not getattr(p, "is_flag", False) and p.opts != ["-C"]:
            args += [p.opts[0], bad]
        else:
            continue
        r = _invoke(args)
        assert r.exit_code == 2 and "is not UTF-8 text" in r.output and "Traceback" not in r.output, (args, r.output)


@pytest.mark.parametrize("words", [["plan"], ["work", "--worker", "1", "--workers", "2"]])
@pytest.mark.parametrize("value", [",", " , ,", ",,,"])
def test_agents_that_name_nothing_are_a_usage_error_not_every_agent(a_fleet: Fleet, words: list[str], value: str) -> None:
    """`fleet plan --agents ,` planned every agent."""
    r = _invoke([words[0], "-C", str(a_fleet.path), *words[1:], "--agents", value])
    assert r.exit_code == 2 and "names nothing" in r.output, r.output


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(reason="evil \x1b[2J\x1b]0;t\x07 end")
@given(reason=st.lists(st.one_of(_HIDDEN_CHARS, st.sampled_from(["a", "b ", "[2J", "é"])), min_size=1,
                       max_size=8).map("".join).filter(lambda r: r.strip()))
def test_what_a_person_wrote_reaches_the_terminal_whole_and_escaped(a_fleet: Fleet, reason: str) -> None:
    """A failure's reason with `\\x1b[2J` in it: `task show` printed it without the
    sequence (click drops what it takes for color off a terminal) and escaped the rest,
    so the reason shown was not the one kept. It is shown whole, every control escaped."""
    import json

    from fleet.ids import printable_lines

    added = json.loads(_invoke(["task", "add", "escaped", "-C", str(a_fleet.path), "--json"]).output)["added"][0]
    fence = json.loads(_invoke(["task", "claim", "--as", "ada", "--task", added, "-C", str(a_fleet.path),
                                "--json"]).output)["fence"]
    r = _invoke(["task", "fail", added, "--fence", str(fence), "--reason", reason, "-C", str(a_fleet.path)])
    assert r.exit_code == 0, r.output
    shown = _invoke(["task", "show", added, "-C", str(a_fleet.path)]).output
    kept = json.loads(_invoke(["task", "show", added, "-C", str(a_fleet.path), "--json"]).output)["error"]
    assert kept == reason.strip()
    assert printable_lines(f"last error: {kept}") in shown, shown


@pytest.mark.parametrize("args, limit", [(["msg", "heartbeat", "ada", "--kind", "agent", "--note"], 500),
                                         (["task", "fail", "tk-none", "--fence", "1", "--reason"], 4000)])
def test_a_note_or_reason_over_its_limit_is_refused_not_cut_short(a_fleet: Fleet, args: list[str], limit: int) -> None:
    """A heartbeat's note over 500 characters, a failure's reason over 4,000: kept cut short
    without a word. Refused (exit 2) naming the limit; nothing is written."""
    before = a_fleet.git.text("for-each-ref")
    r = _invoke([*args, "n" * (limit + 1), "-C", str(a_fleet.path)])
    assert r.exit_code == 2 and f"at most {limit:,} characters ({limit + 1:,} given)" in r.output, r.output
    assert a_fleet.git.text("for-each-ref") == before
