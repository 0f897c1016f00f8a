"""The main job on data that ships with the package: extract, train, draw the features.

``run_demo`` takes the photographs in ``streamae/data/images`` (CC0 and public domain,
see the licence note beside them), cuts 10,000 8x8 gray patches normalised as the
notes' exercise does, trains 25 hidden units with the notes' defaults for 400
iterations, and draws the features and the training curves.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from streamae.errors import UsageError
from streamae.io.atomic import check_output_path
from streamae.options import DEMO, setting
from streamae.runtime.process import configure
from streamae.text import printable

DEMO_OUTPUTS = ("patches.h5", "model.h5", "features.png", "curves.png")


def shipped_images() -> Path:
    """The folder of photographs that ships inside the package."""
    return Path(str(resources.files("streamae") / "data" / "images"))


@dataclass
class DemoResult:
    """Where the demo wrote each output and how long each step took (seconds)."""

    directory: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    final_cost: float = 0.0
    mean_activation: float = 0.0


def run_demo(
    directory: str | os.PathLike = DEMO["output_dir"].default,
    *,
    num_patches: int = DEMO["num_patches"].default,
    max_iter: int = DEMO["max_iter"].default,
    force: bool = False,
    train_monitor=None,
    extract_progress=None,
) -> DemoResult:
    """Run extract -> train -> visualize into ``directory`` (created if missing; removed again
    if it was created and the demo fails)."""
    configure()  # the process set up for the kernels, unless the caller did it (idempotent)
    # Checked before anything is made; messages name the parameter (the CLI says the flag).
    DEMO.validate({"output_dir": directory, "num_patches": num_patches, "max_iter": max_iter, "force": force})
    directory = Path(directory)
    check_output_folder(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"{printable(directory, 120)}: the output folder cannot be created ({error.strerror}); "
            f"choose another {setting('output_dir', 'DIR')}."
        ) from None
    try:
        return _run_stages(directory, num_patches, max_iter, force, train_monitor, extract_progress)
    except BaseException:
        if created:  # a failed demo leaves nothing behind: the folder is its own
            shutil.rmtree(directory, ignore_errors=True)
        raise


def check_output_folder(directory: Path) -> None:
    """Refuse an output folder that cannot be made: a file, a link loop, a name too long."""
    try:
        os.stat(directory)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise UsageError(
            f"{printable(directory, 120)}: cannot be used as the output folder ({error.strerror}); "
            f"choose another {setting('output_dir', 'DIR')}."
        ) from None
    if directory.exists() and not directory.is_dir():
        raise UsageError(
            f"{printable(directory, 120)}: exists and is not a directory; "
            f"choose another {setting('output_dir', 'DIR')}."
        )


def _run_stages(directory: Path, num_patches, max_iter, force, train_monitor, extract_progress) -> DemoResult:
    """extract, train, visualize into ``directory`` (which exists)."""
    from streamae.extraction.pipeline import extract
    from streamae.render import plot_curves, render_features
    from streamae.training.session import train

    paths = {name: directory / name for name in DEMO_OUTPUTS}
    for path in paths.values():  # refuse before any work, not after the extract
        check_output_path(path, force=force)
    result = DemoResult(directory=directory, outputs=paths)

    started = time.perf_counter()
    images = sorted(str(p) for p in shipped_images().glob("*.png"))
    extract(
        images,
        paths["patches.h5"],
        patch_size=8,
        num_patches=num_patches,
        normalize="ufldl",
        color="gray",
        seed=0,
        force=force,
        progress=extract_progress,
    )
    result.seconds["extract"] = time.perf_counter() - started

    started = time.perf_counter()
    # The notes' run, as the exercise made it: max_iter iterations, no relative-progress stop.
    model = train(
        paths["patches.h5"],
        paths["model.h5"],
        max_iter=max_iter,
        warm_start="none",
        tolerance=0.0,
        force=force,
        monitor=train_monitor,
    )
    result.seconds["train"] = time.perf_counter() - started
    result.final_cost = float(model.info["cost"])
    result.mean_activation = float(model.rho_hat.mean())

    started = time.perf_counter()
    render_features(model, paths["features.png"], scale=4, force=force, name=str(paths["model.h5"]))
    plot_curves(model, paths["curves.png"], force=force, name=str(paths["model.h5"]))
    result.seconds["visualize"] = time.perf_counter() - started
    return result
