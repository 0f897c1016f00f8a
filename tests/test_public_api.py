"""The public API of ``streamae/__init__.py`` survives importing every submodule.

Importing ``streamae.x`` sets the attribute ``x`` on the package, so a submodule named
like a public function (``streamae/train.py``) would silently replace ``streamae.train``
by a module.  Here every submodule is imported first, then every public name is checked
to still be the function or class the README documents, defined where it says.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import streamae

# Public name -> (kind, module that defines it).
DOCUMENTED = {
    "EncodeOptions": ("class", "streamae.options"),
    "ExportOptions": ("class", "streamae.options"),
    "ExtractOptions": ("class", "streamae.options"),
    "GradcheckOptions": ("class", "streamae.options"),
    "TrainOptions": ("class", "streamae.options"),
    "VisualizeOptions": ("class", "streamae.options"),
    "Hyperparameters": ("class", "streamae.compute.parameters"),
    "Model": ("class", "streamae.io.modelfile"),
    "StreamaeError": ("class", "streamae.errors"),
    "encode": ("function", "streamae.encoding"),
    "export_weights": ("function", "streamae.export"),
    "extract": ("function", "streamae.extraction.pipeline"),
    "gradcheck": ("function", "streamae.training.gradcheck"),
    "load_model": ("function", "streamae.io.modelfile"),
    "objective": ("function", "streamae.training.evaluate"),
    "render_features": ("function", "streamae.render"),
    "run_demo": ("function", "streamae.demo"),
    "train": ("function", "streamae.training.session"),
    "SparseAutoencoder": ("class", "streamae.estimator"),
    "copy_samples": ("function", "streamae.sampledata"),
    "list_samples": ("function", "streamae.sampledata"),
    "load_digits": ("function", "streamae.sampledata"),
}


def all_submodules() -> list[str]:
    """The dotted names of every module and package below ``streamae`` (the CLI included).

    ``streamae.cli`` is installed from ``cli/`` (package-dir), so it is walked on its own.
    """
    import streamae.cli

    names = ["streamae.cli"]
    for package in (streamae, streamae.cli):
        prefix = package.__name__ + "."
        names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix=prefix)]
    return sorted(set(names))


@pytest.fixture(scope="module")
def imported() -> list[str]:
    """Import every submodule (the trap springs on import) and return their names."""
    names = all_submodules()
    for name in names:
        importlib.import_module(name)
    return names


def test_the_walk_finds_the_subpackages(imported):
    # Guards the test itself: a walk that found nothing would check nothing.
    for name in ("streamae.cli.main", "streamae.training.session", "streamae.extraction.readers"):
        assert name in imported


def test_all_lists_exactly_the_documented_names():
    assert sorted(streamae.__all__) == sorted([*DOCUMENTED, "__version__"])


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_public_name_is_still_the_documented_object(imported, name):
    kind, module = DOCUMENTED[name]
    value = getattr(streamae, name)
    assert not inspect.ismodule(value), f"streamae.{name} was replaced by the module {value.__name__}"
    assert inspect.isclass(value) if kind == "class" else inspect.isfunction(value), (name, value)
    assert value.__module__ == module
    assert value is getattr(importlib.import_module(module), name)
    assert value.__doc__, f"streamae.{name} has no docstring"


def test_version_is_a_string(imported):
    assert isinstance(streamae.__version__, str) and streamae.__version__[0].isdigit()


def test_no_submodule_is_named_like_a_public_name(imported):
    # Only a direct child sets an attribute on ``streamae`` itself when imported;
    # ``streamae.compute.objective`` or ``streamae.cli.train`` set one on their own package.
    public = set(streamae.__all__)
    children = [name for name in imported if name.count(".") == 1]
    assert "streamae.training" in children
    clashes = [name for name in children if name.rsplit(".", 1)[-1] in public]
    assert not clashes, f"modules named like public names: {clashes}"
