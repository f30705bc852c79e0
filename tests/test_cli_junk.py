"""Every subcommand's every argument, given junk values of each kind, is refused in one clear line
(issue 23): never a bare exception text (a KeyError's key, int()'s "invalid literal", an OS errno), never
an unexpected error, never a traceback.

The models are paths that do not exist, so each run ends at the latest when the model would load:
what this walks is every check made before slow work. `demo` and `organisms` (which need no model)
get only values that must be refused when parsed. Checks made after a model loads have their
own tests (tests/test_cli.py, tests/eval/test_resume.py).
"""

import argparse
import re

import pytest

from mkt.cli import build_parser, main

NO_MODEL = "/nonexistent/mkt-model"
MODEL_OPTIONS = {"--model", "--source", "--target", "--unlocked-model", "--post-model", "--logit-transfer-from",
                 "--targets", "--post-trained"}
# what a bare exception text looks like when it reaches the user
BARE = re.compile(r"invalid literal for|could not convert string|\[Errno|os error \d|unhashable|has no attribute|"
                  r"not subscriptable|object is not|index out of range|^'[^']*'$|^-?\d+$|Traceback")


NEVER_A_NUMBER = {"abc", "nan", "-inf", "1e999", "all"}  # as a count or a finite number: refused when parsed


def _number_types():
    from mkt import cliargs

    ints = {int, cliargs.positive_int, cliargs.nonnegative_int}
    return ints, ints | {float, cliargs.finite_float, cliargs.positive_float, cliargs.nonnegative_float,
                         cliargs.fraction}


INT_TYPES, NUMBER_TYPES = _number_types()
SLOW_COMMANDS = {("demo",), ("organisms",)}


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _subcommands(sub, prefix + (name,))


COMMANDS = dict(_subcommands(build_parser()))


def _baseline(command: tuple, parser: argparse.ArgumentParser, files: dict) -> dict[str, list[str]]:
    """Values for every required argument (and every model argument), each fine on its own."""
    values = {}
    for action in parser._actions:
        flag = action.option_strings[0] if action.option_strings else action.dest
        if flag in MODEL_OPTIONS:
            values[flag] = [NO_MODEL]
        elif action.required or not action.option_strings:
            values[flag] = {"--questions": [files["questions"]], "--locked": ["Q:{question}|A:"],
                            "--task": ["organism"], "--out": [files["out"]], "pack": [files["out"]],
                            "action": ["list"]}.get(flag, ["x"])
    if command == ("generate",):  # one of --prompt and --prompts is needed
        values["--prompt"] = ["Q:1|A:"]
    return values


def _junk(action: argparse.Action, files: dict) -> list[list[str]]:
    """Junk values of each kind this argument could be given."""
    name = getattr(action.type, "__name__", "")
    if action.nargs == 0:
        return []
    if action.choices is not None:
        out = [["bogus"], [""]]
    elif name in ("int", "positive_int", "nonnegative_int"):
        out = [["abc"], ["-1"], ["0"], ["1.5"], ["99999999999999999999999"]]
    elif name in ("float", "finite_float", "positive_float", "nonnegative_float", "fraction"):
        out = [["nan"], ["1e999"], ["abc"], ["-1"], ["0"]]
    else:  # strings: paths, templates, names
        out = [[""], ["/nonexistent/x"], [files["dir"]], [files["garbage"]], ["{"], ["\x00"], ["0-x"], ["-1"]]
    if action.nargs in ("+", "*"):
        out += [["1", "abc"], ["all"]]
    return out


def _cases():
    files = {k: f"@{k}" for k in ("questions", "out", "dir", "garbage")}  # placeholders, filled per test
    for command, parser in COMMANDS.items():
        for action in parser._actions:
            if action.dest == "help" or not action.option_strings and action.dest in ("command", "analysis"):
                continue
            values = _junk(action, files)
            if command in SLOW_COMMANDS:  # only values refused when parsed: a fine one would run the demo or train
                values = [v for v in values if (action.choices is not None and v == ["bogus"]) or
                          (action.type in NUMBER_TYPES and v[-1] in NEVER_A_NUMBER | {"1.5"} - (
                              set() if action.type in INT_TYPES else {"1.5"}))]
            for junk in values:
                yield pytest.param(command, action.option_strings[0] if action.option_strings else action.dest,
                                   junk, id=f"{' '.join(command)} {action.dest}={'|'.join(junk)!r}")


def _fill(values: list[str], files: dict) -> list[str]:
    return [files.get(v[1:], v) if v.startswith("@") else v for v in values]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("junk")
    (root / "questions.txt").write_text("12+34\n56+78\n")
    (root / "garbage.bin").write_bytes(b"\xff\xfe\x00junk{[")
    (root / "a-dir").mkdir()
    return {"questions": str(root / "questions.txt"), "out": str(root / "out"), "dir": str(root / "a-dir"),
            "garbage": str(root / "garbage.bin")}


@pytest.mark.parametrize("command, flag, junk", list(_cases()))
def test_junk_arguments_are_refused_in_one_clear_line(command, flag, junk, files, capsys):
    parser = COMMANDS[command]
    values = _baseline(command, parser, files)
    values[flag] = _fill(junk, files)
    argv = list(command)
    for name, vals in values.items():
        argv += (vals if not name.startswith("-") else [name, *vals])
    parsed = True
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's refusal: its usage line, then the error
        code, parsed = exit_.code, False
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "it/s]" not in line]  # progress bars
    assert code in (0, 2), f"exit {code}: {err}"
    kind = getattr(parser._option_string_actions.get(flag), "type", None)
    if kind in NUMBER_TYPES and (junk[-1] in NEVER_A_NUMBER or junk[-1] == "1.5" and kind in INT_TYPES):
        assert not parsed, f"{flag} {junk} was accepted when parsed (it must be refused before any model loads)"
    if code == 2:
        assert len(err) == 1 or not parsed, err
        message = err[-1]
        assert re.match(r"mkt [\w ]+: error: ", message), err
        text = message.split("error: ", 1)[1]
        assert not BARE.search(text), message
        assert not any("Traceback" in line for line in err)


def test_refusals_come_before_any_model_loads_and_unexpected_errors_keep_one_line(files, capsys, monkeypatch):
    common = ["--model", NO_MODEL, "--questions", files["questions"], "--locked", "Q:{question}|A:"]
    assert main(["extract", *common, "--out", files["out"]]) == 2  # was a bare SystemExit after the model loaded
    assert capsys.readouterr().err == ("mkt extract: error: give --unlocked TEMPLATE (a prompt-induced key) or "
                                       "--unlocked-model M (a model-induced key)\n")
    assert main(["generate", "--model", NO_MODEL]) == 2
    assert capsys.readouterr().err == ("mkt generate: error: nothing to generate from: give --prompt TEXT or "
                                       "--prompts FILE\n")
    sweep = ["sweep", "--source", NO_MODEL, "--target", NO_MODEL, "--task", "organism", "--out", files["out"]]
    assert main([*sweep, "--ks", "4", "8", "4"]) == 2
    assert "--ks lists a value twice (4 8 4): give each once" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # was: "mkt sweep: error: invalid literal for int() with base 10: 'x'"
        main([*sweep, "--layers", "0-x"])
    assert "argument --layers: '0-x' is not a layer subset: use 'all' or distinct layer indices" in \
        capsys.readouterr().err
    assert main([*sweep, "--layers", "ALL", "0-1"]) == 2  # parsed: all, and layers 0 and 1; then the model is missing
    assert "could not load model" in capsys.readouterr().err

    import mkt.pack

    def broken(path):
        raise KeyError("id")

    monkeypatch.setattr(mkt.pack.CapabilityPack, "load", broken)
    assert main(["info", files["out"]]) == 1  # a KeyError is a bug, never a refusal that prints "'id'"
    assert capsys.readouterr().err == ("mkt info: unexpected error: KeyError: 'id' (rerun with --debug for the "
                                       "traceback)\n")

    def wordy(path):
        raise ValueError("first line\n\x1b[1msecond\x1b[0m   line")

    monkeypatch.setattr(mkt.pack.CapabilityPack, "load", wordy)
    assert main(["info", files["out"]]) == 2
    assert capsys.readouterr().err == "mkt info: error: first line second line\n"
