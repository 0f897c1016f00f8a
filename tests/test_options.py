"""The option specs: checking, parsing, frozen options, and messages that name parameters."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import streamae
from streamae import options as specs
from streamae.cli.common import in_flags
from streamae.cli.main import cli
from streamae.demo import run_demo
from streamae.errors import UsageError
from streamae.options import EXTRACT, TRAIN, Option, TrainOptions


def test_check_converts_and_bounds():
    assert TRAIN["hidden"].check(3.0) == 3 and isinstance(TRAIN["hidden"].check(3.0), int)
    assert TRAIN["rho"].check(0.5) == 0.5 and TRAIN["beta"].check(1) == 1.0
    for bad in (0, 1, float("nan"), "0.1", True):
        with pytest.raises(UsageError) as caught:
            TRAIN["rho"].check(bad)
        assert caught.value.parameter == "rho" and str(caught.value).startswith("rho must be")
    assert TRAIN["chunk_rows"].check(None) is None
    with pytest.raises(UsageError, match=r"^hidden must be an integer ≥ 1, got None\.$"):
        TRAIN["hidden"].check(None)
    bounds = "≥ 0 and ≤ 9223372036854775807"
    with pytest.raises(UsageError, match=rf"^seed must be an integer {bounds}, got 9223372036854775808\.$"):
        EXTRACT["seed"].check(2**63)
    assert TRAIN["seed"].check(2**64) == 2**64  # train takes any seed ≥ 0, as it always did


def test_parsers_match_closed_forms():
    assert specs.parse_size("8") == (8, 8) == specs.parse_size(8)
    assert specs.parse_size("12x8") == (12, 8) == specs.parse_size((12, 8))
    assert specs.parse_bytes("8G") == 8 * 2**30 and specs.parse_bytes("1.5GiB") == 3 * 2**29
    assert specs.parse_patch_shape("8x8") == (8, 8, 1) and specs.parse_patch_shape("8,8,3") == (8, 8, 3)
    for parse, bad in ((specs.parse_size, "0x3"), (specs.parse_bytes, "-1G"), (specs.parse_patch_shape, "8")):
        with pytest.raises(ValueError, match="must be"):
            parse(bad)


def test_frozen_options_fill_defaults_and_refuse_unknown_names():
    options = TrainOptions(hidden=50)
    assert options.hidden == 50 and options.rho == TRAIN["rho"].default
    with pytest.raises(AttributeError):
        options.hidden = 3
    assert options.replace(rho=0.05).rho == 0.05 and options.rho == TRAIN["rho"].default
    assert options == TrainOptions(hidden=50) != TrainOptions()
    with pytest.raises(UsageError, match="train takes no parameter 'hiden'") as caught:
        TrainOptions(hiden=3)
    assert caught.value.parameter == "hiden"
    with pytest.raises(UsageError, match="no parameter 'quiet'"):  # a command-line-only option
        TrainOptions(quiet=True)


def test_every_option_has_help_and_a_default_inside_its_range():
    for option_set in specs.COMMANDS.values():
        for option in option_set:
            assert option.help.strip(), option.name
            if option.default is not None:
                option.check(option.default)  # raises if a default is outside its own range


def test_an_error_is_reported_by_its_parameter_not_by_its_text():
    assert in_flags("hidden must be an integer ≥ 1, got 0.", "hidden", TRAIN) == (
        "--hidden must be an integer ≥ 1, got 0."
    )
    assert in_flags("lam must be a finite number ≥ 0, got -1.0.", "lam", TRAIN).startswith("--lambda must")
    # Without a parameter, or a message that does not open with it, nothing is rewritten.
    assert in_flags("x.h5 exists; pass force=True to replace it.", None, TRAIN).endswith(
        "force=True to replace it."
    )
    assert in_flags("the hidden units", "hidden", TRAIN) == "the hidden units"


def test_settings_in_messages_are_said_in_the_callers_words():
    assert specs.setting("force", True) == "force=True"
    assert specs.setting("decoder", "linear") == "decoder='linear'"
    assert specs.again_with(resume=True) == "resume=True"
    with specs.speaking_flags(TRAIN, again=lambda changes: f"`streamae train {sorted(changes)}`"):
        assert specs.setting("force", True) == "--force"
        assert specs.setting("decoder", "linear") == "--decoder linear"
        assert specs.setting("file_locking", False) == "--no-file-locking"
        assert specs.setting("lam", 0.5) == "--lambda 0.5"
        assert specs.setting("not_an_option", 3) == "not_an_option=3"
        assert specs.said("lam") == "--lambda"
        assert specs.again_with(resume=True) == "`streamae train ['resume']`"
    assert specs.setting("force", True) == "force=True"  # the library's words again


def test_a_new_option_needs_no_other_declaration():
    extra = specs.OptionSet("x", (Option("width", int, 3, "Width.", low=1, unit="pixels"),))
    assert extra.validate({}) == {"width": 3}
    with pytest.raises(UsageError, match=r"^width must be an integer ≥ 1, got 0\.$"):
        extra.validate({"width": 0})


# One bad value per command: the library's message names the parameter, the CLI's the flag.
CASES = {
    "train": (lambda: streamae.train("data.h5", hidden=0), ["train", "data.h5", "--hidden", "0"], "hidden"),
    "extract": (
        lambda: streamae.extract(["photo.png"], "p.h5", num_patches=0),
        ["extract", "photo.png", "--num-patches", "0"],
        "num_patches",
    ),
    "encode": (
        lambda: streamae.encode("m.h5", "d.h5", "f.h5", block_rows=0),
        ["encode", "m.h5", "d.h5", "-o", "f.h5", "--block-rows", "0"],
        "block_rows",
    ),
    "gradcheck": (lambda: streamae.gradcheck(rows=0), ["gradcheck", "--rows", "0"], "rows"),
    "visualize": (
        lambda: specs.VisualizeOptions(output="f.png", scale=65),
        ["visualize", "m.h5", "-o", "f.png", "--scale", "65"],
        "scale",
    ),
    "demo": (lambda: run_demo("d", num_patches=0), ["demo", "-o", "d", "--num-patches", "0"], "num_patches"),
}


@pytest.mark.parametrize("command", sorted(CASES))
def test_library_names_the_parameter_and_the_cli_the_flag(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    call, words, parameter = CASES[command]
    with pytest.raises(UsageError) as caught:
        call()
    assert caught.value.parameter == parameter
    assert str(caught.value).startswith(f"{parameter} must be ")
    assert "--" not in str(caught.value)

    result = CliRunner().invoke(cli, words)
    flag = specs.COMMANDS[command][parameter].cli_flag
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "Error: " + flag + str(caught.value)[len(parameter) :], result.output
    assert not any(tmp_path.iterdir())  # refused before anything was written


# --- a new setting is declared in one place ------------------------------------------------


@pytest.fixture
def throwaway_option():
    """TRAIN with one more setting, declared as any other; the command line rebuilt from it."""
    import importlib

    import streamae.cli.train as cli_train

    option = Option(
        "throwaway",
        float,
        0.5,
        "A throw-away setting that changes the objective (for this test).",
        low=0,
        stored="info/throwaway",
        on_resume="same",
    )
    before = (TRAIN.options, TRAIN._by_name)
    object.__setattr__(TRAIN, "options", TRAIN.options + (option,))
    object.__setattr__(TRAIN, "_by_name", {**TRAIN._by_name, option.name: option})
    try:
        yield importlib.reload(cli_train).train  # the train command, built from TRAIN again
    finally:
        object.__setattr__(TRAIN, "options", before[0])
        object.__setattr__(TRAIN, "_by_name", before[1])
        importlib.reload(cli_train)


def test_a_new_setting_reaches_help_options_model_file_info_and_resume(throwaway_option, tmp_path):
    import numpy as np
    from helpers import write_patch_file

    from streamae.errors import Interrupted
    from streamae.io.modelfile import load_model
    from streamae.runtime.signals import StopFlag
    from streamae.training.loop import TrainingMonitor
    from streamae.training.session import train

    runner = CliRunner()
    assert "--throwaway" in runner.invoke(throwaway_option, ["--help"]).output  # --help
    assert TrainOptions(throwaway=0.25).throwaway == 0.25 and TrainOptions().throwaway == 0.5  # options
    with pytest.raises(UsageError) as caught:
        TrainOptions(throwaway=-1)
    assert caught.value.parameter == "throwaway"

    values = np.random.default_rng(1).uniform(0.1, 0.9, size=(600, 16)).astype(np.float32)
    data = write_patch_file(tmp_path / "data.h5", values, chunk_rows=200)
    model = tmp_path / "model.h5"
    small = ["--hidden", "4", "--max-iter", "6", "--grad-tol", "0", "--progress-tol", "0", "-q"]
    done = runner.invoke(throwaway_option, [str(data), "-o", str(model), "--throwaway", "0.25", *small])
    assert done.exit_code == 0, done.output
    assert load_model(model).info["throwaway"] == 0.25  # the model file
    shown = runner.invoke(cli, ["info", str(model)])
    assert "throwaway=0.25" in shown.output  # info

    class StopAfterTwo(TrainingMonitor):
        def on_iteration(self, record: dict) -> None:
            if record["iteration"] == 2:
                flag.request("SIGTERM")

    flag = StopFlag()
    stopped = tmp_path / "stopped.h5"
    with pytest.raises(Interrupted):
        train(
            data,
            stopped,
            hidden=4,
            max_iter=6,
            throwaway=0.25,
            stop=flag,
            monitor=StopAfterTwo(),
            stop_signals=False,
        )
    refused = runner.invoke(
        throwaway_option, [str(data), "-o", str(stopped), "--resume", "--throwaway", "0.5"]
    )
    assert refused.exit_code == 2 and "--throwaway 0.25, not 0.5" in refused.output  # the resume check
    resumed = runner.invoke(throwaway_option, [str(data), "-o", str(stopped), "--resume", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert load_model(stopped).info["throwaway"] == 0.25  # taken from the checkpoint
