"""streamae: the UFLDL sparse autoencoder, trained on patch files far larger than memory.

The Python API mirrors the command line::

    import streamae
    model = streamae.train("patches.h5", hidden=25, max_iter=400)
    model = streamae.load_model("model.h5")

Heavy modules (Numba kernels, h5py) load on first use, so ``import streamae`` is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it; imported lazily on first attribute access.
_PUBLIC = {
    "extract": "workflows_extract",
    "train": "workflows",
    "encode": "encoding",
    "render_features": "render",
    "run_demo": "demo",
    "gradcheck": "workflows",
    "objective": "workflows",
    "load_model": "modelfile",
    "Model": "modelfile",
    "Hyperparameters": "model",
    "StreamaeError": "errors",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'streamae' has no attribute {name!r}")
