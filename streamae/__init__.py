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

from streamae._version import __version__
from streamae.compute.parameters import Hyperparameters
from streamae.demo import run_demo
from streamae.encoding import encode
from streamae.errors import StreamaeError
from streamae.export import export_weights
from streamae.extraction.pipeline import extract
from streamae.io.modelfile import Model, load_model
from streamae.render import render_features
from streamae.training.session import gradcheck, objective, train

__all__ = [
    "Hyperparameters",
    "Model",
    "StreamaeError",
    "__version__",
    "encode",
    "export_weights",
    "extract",
    "gradcheck",
    "load_model",
    "objective",
    "render_features",
    "run_demo",
    "train",
]
