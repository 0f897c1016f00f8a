"""streamae: the UFLDL sparse autoencoder, trained on patch files far larger than memory.

The Python API mirrors the command line::

    import streamae
    streamae.extract(["photos/"], "patches.h5", num_patches=100_000)
    model = streamae.train("patches.h5", "model.h5", hidden=25, max_iter=400)
    model = streamae.load_model("model.h5")

Importing streamae imports nothing heavy and changes nothing in the process: the public
names below are resolved on first use (PEP 562), each from the one module that defines
it.  The names whose functions compile kernels (:data:`_CONFIGURES`) first call
:func:`streamae.runtime.configure` (Numba fixes its CPU features when its first kernel is
defined, see :mod:`streamae.runtime.process`), as do those functions when called.  No
submodule is named like a public function (``streamae.encoding`` holds ``encode``,
``streamae.training.session`` holds ``train``), so importing a submodule can never
replace one of these names; a test checks it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from streamae._version import __version__

# Public name -> the module that defines it.
_PUBLIC = {
    "EncodeOptions": "streamae.options",
    "ExportOptions": "streamae.options",
    "ExtractOptions": "streamae.options",
    "GradcheckOptions": "streamae.options",
    "TrainOptions": "streamae.options",
    "VisualizeOptions": "streamae.options",
    "Hyperparameters": "streamae.compute.parameters",
    "Model": "streamae.io.modelfile",
    "StreamaeError": "streamae.errors",
    "encode": "streamae.encoding",
    "export_weights": "streamae.export",
    "extract": "streamae.extraction.pipeline",
    "gradcheck": "streamae.training.gradcheck",
    "load_model": "streamae.io.modelfile",
    "objective": "streamae.training.evaluate",
    "render_features": "streamae.render",
    "run_demo": "streamae.demo",
    "train": "streamae.training.session",
    "copy_samples": "streamae.sampledata",
    "list_samples": "streamae.sampledata",
    "load_digits": "streamae.sampledata",
    # Needs scikit-learn (the "sklearn" extra); nothing else in streamae imports it.
    "SparseAutoencoder": "streamae.estimator",
}
# The functions that compile kernels: configure the process before their modules define any.
_CONFIGURES = frozenset(
    {"encode", "extract", "gradcheck", "objective", "run_demo", "train", "SparseAutoencoder"}
)

__all__ = [
    "EncodeOptions",
    "ExportOptions",
    "ExtractOptions",
    "GradcheckOptions",
    "TrainOptions",
    "VisualizeOptions",
    "Hyperparameters",
    "Model",
    "SparseAutoencoder",
    "StreamaeError",
    "__version__",
    "copy_samples",
    "encode",
    "export_weights",
    "extract",
    "gradcheck",
    "list_samples",
    "load_digits",
    "load_model",
    "objective",
    "render_features",
    "run_demo",
    "train",
]


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'streamae' has no attribute {name!r}")
    if name in _CONFIGURES:
        from streamae.runtime.process import configure

        configure()
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        if name != "SparseAutoencoder" or str(error.name).split(".")[0] != "sklearn":
            raise
        raise ImportError(
            'streamae.SparseAutoencoder needs scikit-learn: pip install "streamae[sklearn]".'
        ) from error
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # for type checkers and editors; never run
    from streamae.compute.parameters import Hyperparameters
    from streamae.demo import run_demo
    from streamae.encoding import encode
    from streamae.errors import StreamaeError
    from streamae.estimator import SparseAutoencoder
    from streamae.export import export_weights
    from streamae.extraction.pipeline import extract
    from streamae.io.modelfile import Model, load_model
    from streamae.options import (
        EncodeOptions,
        ExportOptions,
        ExtractOptions,
        GradcheckOptions,
        TrainOptions,
        VisualizeOptions,
    )
    from streamae.render import render_features
    from streamae.sampledata import copy_samples, list_samples, load_digits
    from streamae.training.evaluate import objective
    from streamae.training.gradcheck import gradcheck
    from streamae.training.session import train
