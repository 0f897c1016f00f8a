"""`streamae data` given bad names and bad output folders: one line, exit 2, nothing copied."""

from __future__ import annotations

import pytest
from helpers import invoke

from streamae.sampledata import SAMPLES

from .faultkit import assert_clean_case


def test_an_unknown_sample_is_refused_naming_the_choices(tmp_path):
    result = invoke("data", "photos", "imagenet", "-o", tmp_path)
    assert_clean_case(result, "data", 2, names=["imagenet"], fragments=["photos, mnist, audio"])
    assert list(tmp_path.iterdir()) == []  # not even photos: the names are checked first


@pytest.mark.parametrize("case", ["missing folder", "a file", "sample name is a file"])
def test_bad_output_folders(case, tmp_path):
    output = tmp_path / "out"
    if case == "a file":
        output.write_text("x")
    elif case == "sample name is a file":
        output.mkdir()
        (output / "mnist").write_text("x")
    result = invoke("data", "mnist", "-o", output)
    assert_clean_case(result, "data", 2, names=[output.name if case != "sample name is a file" else "mnist"])
    if case == "sample name is a file":
        assert (output / "mnist").read_text() == "x"


def test_copying_onto_the_shipped_files_is_refused(tmp_path):
    """-o the package's data folder: the target files are the inputs themselves."""
    shipped = SAMPLES["audio"].path.parent
    before = (SAMPLES["audio"].path / "chord.wav").read_bytes()
    result = invoke("data", "audio", "-o", shipped.parent / "data", "--force")
    # audio/ there is the sample's own folder only when its name matches; here it does.
    assert result.exit_code == 2, result.output
    assert (SAMPLES["audio"].path / "chord.wav").read_bytes() == before
