"""The command line's options stay what they were, and each one comes from a spec."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click
import pytest
from cli_options import snapshot
from click.testing import CliRunner

from streamae import options as specs
from streamae.cli.main import cli
from streamae.errors import UsageError

RECORDED = Path(__file__).parent / "data" / "cli_options.json"


def _without_names(options: list[dict]) -> list[dict]:
    # The callback's parameter name is internal (it became the library's name); the
    # flags, defaults and flag-ness are what a user types and sees.
    return [{key: value for key, value in option.items() if key != "name"} for option in options]


def test_every_command_keeps_its_flags_defaults_and_flagness():
    recorded = json.loads(RECORDED.read_text())
    current = snapshot()
    assert sorted(current) == sorted(recorded)
    for command in recorded:
        assert _without_names(current[command]) == _without_names(recorded[command]), command


# --- every CLI option has a spec entry, and every spec entry reaches the library ---------

# What each command calls in the library (module, function) and the arguments it needs.
LIBRARY = {
    "train": ("streamae.training.session", "train", ["data.h5"]),
    "gradcheck": ("streamae.training.gradcheck", "gradcheck", []),
    "extract": ("streamae.extraction.pipeline", "extract", ["photo.png"]),
    "encode": ("streamae.encoding", "encode", ["model.h5", "data.h5"]),
    "visualize": ("streamae.options", "VisualizeOptions", ["model.h5"]),
    "demo": ("streamae.demo", "run_demo", []),
    "info": ("streamae.describe", "describe", ["file.h5"]),
    "export": ("streamae.export", "export_weights", ["model.h5"]),
    "data": ("streamae.sampledata", "copy_samples", ["photos"]),
}
# Options the library function takes as a positional argument: command -> (name, index).
POSITIONAL = {
    "train": {"output": 1},
    "extract": {"output": 1},
    "encode": {"output": 2},
    "gradcheck": {"data": 0},
    "demo": {"output_dir": 0},
    "export": {"output": 1},
    "data": {"output": 1},
}
# Run-time objects the CLI hands over beside the options (progress displays, MPI).
NOT_OPTIONS = {"progress", "monitor", "comm", "train_monitor", "extract_progress", "warn"}


def test_every_cli_option_has_a_spec_entry():
    for name, command in cli.commands.items():
        spec = specs.COMMANDS[name]
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                option = spec[param.name]  # KeyError: an option declared outside the specs
                assert option.cli and option.cli_flag in param.opts, (name, param.name)


GRAMMAR_EXAMPLES = {"warm_start": "20000,200000"}


def non_default(option: specs.Option) -> tuple[list[str], object]:
    """Command-line words giving ``option`` a value other than its default, and that value."""
    if option.kind is bool:
        return [option.cli_flag], False if option.inverted else not option.default
    if option.choices is not None:
        value = next(choice for choice in option.choices if choice != option.default)
        return [option.cli_flag, value], value
    # Text with a grammar of its own (checked when the options are built) takes a valid example.
    text = GRAMMAR_EXAMPLES.get(option.name) or {
        "size": "12x8",
        "bytes": "8G",
        "shape": "8x8x3",
        "path": "elsewhere.h5",
        str: "images",
    }.get(option.kind)
    if text is None:  # a number inside the option's range, other than the default
        if option.high is not None and option.low is not None:
            value = (option.low + option.high) / 2
        else:
            value = (option.default if option.default is not None else option.low or 0) + 1
        text = str(option.kind(value) if option.kind is int else value)
    return [option.cli_flag, text], option.check(option.kind(text) if option.kind in (int, float) else text)


@pytest.mark.parametrize("command", sorted(LIBRARY))
def test_every_spec_entry_reaches_the_library(command, monkeypatch):
    module, function, arguments = LIBRARY[command]
    spec = specs.COMMANDS[command]
    received = {}

    def capture(*args, **kwargs):
        received["args"], received["kwargs"] = args, kwargs
        raise UsageError("captured")

    monkeypatch.setattr(importlib.import_module(module), function, capture)
    words = list(arguments)
    expected = {}
    for option in spec:
        if option.cli and (option.library or option.name in POSITIONAL.get(command, {})):
            option_words, value = non_default(option)
            words += option_words
            expected[option.name] = value
    result = CliRunner().invoke(cli, [command, *words])
    assert "captured" in result.output, result.output
    got = dict(received["kwargs"])
    for name, index in POSITIONAL.get(command, {}).items():
        if name not in got:  # else passed by keyword
            got[name] = received["args"][index]
    # Text the library parses itself ("12x8", "8G") is compared as the library reads it.
    assert {name: spec[name].check(got.get(name)) for name in expected} == expected
    # And nothing else: every keyword the CLI passes is a library option of this command.
    library_names = {option.name for option in spec.library_options()}
    assert set(received["kwargs"]) - NOT_OPTIONS <= library_names | set(POSITIONAL.get(command, {}))


def test_library_only_options_are_taken_by_the_library():
    assert specs.TrainOptions(lbfgs_pairs=7).lbfgs_pairs == 7
    assert specs.GradcheckOptions(rho=0.2, beta=1.0, lam=0.0).as_dict()["rho"] == 0.2
