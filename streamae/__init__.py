"""streamae: the UFLDL sparse autoencoder, trained on patch files far larger than memory.

The Python API mirrors the command line::

    import streamae
    streamae.extract(["photos/"], "patches.h5", num_patches=100_000)
    model = streamae.train("patches.h5", "model.h5", hidden=25, max_iter=400)
    model = streamae.load_model("model.h5")

The public names below are imported explicitly.  No submodule is named like a public
function (``streamae.encoding`` holds ``encode``, ``streamae.training.session`` holds
``train``), so importing a submodule can never replace one of these names; a test checks it.
"""

# Before anything imports Numba: a bad NUMBA_NUM_THREADS must not reach it (see runtime/threads),
# and on AVX-512 hosts the kernels are compiled for full-width vectors (see runtime/cpu).
from streamae.runtime.cpu import prefer_full_width
from streamae.runtime.threads import set_aside_bad_thread_settings

set_aside_bad_thread_settings()
prefer_full_width()

from streamae._version import __version__  # noqa: E402
from streamae.compute.parameters import Hyperparameters  # noqa: E402
from streamae.demo import run_demo  # noqa: E402
from streamae.encoding import encode  # noqa: E402
from streamae.errors import StreamaeError  # noqa: E402
from streamae.export import export_weights  # noqa: E402
from streamae.extraction.pipeline import extract  # noqa: E402
from streamae.io.modelfile import Model, load_model  # noqa: E402
from streamae.options import (  # noqa: E402
    EncodeOptions,
    ExportOptions,
    ExtractOptions,
    GradcheckOptions,
    TrainOptions,
    VisualizeOptions,
)
from streamae.render import render_features  # noqa: E402
from streamae.sampledata import copy_samples, list_samples, load_digits  # noqa: E402
from streamae.training.evaluate import objective  # noqa: E402
from streamae.training.gradcheck import gradcheck  # noqa: E402
from streamae.training.session import train  # noqa: E402

__all__ = [
    "EncodeOptions",
    "ExportOptions",
    "ExtractOptions",
    "GradcheckOptions",
    "TrainOptions",
    "VisualizeOptions",
    "Hyperparameters",
    "Model",
    "StreamaeError",
    "SparseAutoencoder",
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
    """``streamae.SparseAutoencoder``, imported on first use: it needs scikit-learn, the rest never does."""
    if name == "SparseAutoencoder":
        try:
            from streamae.estimator import SparseAutoencoder
        except ModuleNotFoundError as error:
            if error.name != "sklearn" and not str(error.name).startswith("sklearn."):
                raise
            raise ImportError(
                'streamae.SparseAutoencoder needs scikit-learn: pip install "streamae[sklearn]".'
            ) from error
        return SparseAutoencoder
    raise AttributeError(f"module 'streamae' has no attribute {name!r}")
