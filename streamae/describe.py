"""A readable summary of any streamae file: patch files, model files, features files.

:func:`describe` returns a plain dict (JSON-ready: only str, int, float, bool, None,
lists and dicts) without reading the data itself, only metadata and the small model
arrays; :func:`format_description` turns it into the text ``streamae info`` prints.
Any other HDF5 file is described by what it holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from streamae.io.hdf5 import (
    FEATURES_FORMAT,
    MODEL_FORMAT,
    PATCH_FORMAT,
    PATCHES_DATASET,
    decode_attribute,
    json_attribute,
    open_hdf5,
)
from streamae.io.modelfile import load_model
from streamae.io.patchfile import inspect_patch_file
from streamae.options import TRAIN, dataset_path, resumable, stored_value
from streamae.text import printable

MAX_LISTED = 50  # datasets listed for a foreign HDF5 file before "... and N more"
# Longest string and most entries of a list or dict taken from a file into a description:
# enough for any real path, JSON setting or source list, short of flooding a terminal.
MAX_TEXT = 300
MAX_ITEMS = 100
_LISTINGS = ("datasets", "other_datasets")


def describe(path: str | os.PathLike, dataset: str | None = None) -> dict:
    """What the HDF5 file at ``path`` holds, as a JSON-ready dict with a ``kind`` key.

    ``kind`` is ``"patches"``, ``"model"``, ``"features"`` or ``"hdf5"`` (anything
    else).  Raises :class:`~streamae.errors.InputFileError` for a missing, unreadable or
    non-HDF5 file, and for a damaged patch or model file.  ``dataset`` describes that
    2-D dataset of any HDF5 file as training data (``kind`` ``"patches"``), checked as
    ``train`` checks it.
    """
    path = Path(path)
    if dataset is not None:
        base = {"path": str(path), "size_bytes": path.stat().st_size if path.exists() else None}
        return bounded(base | _describe_patches(path, dataset_path(dataset)))
    with open_hdf5(path) as handle:
        fmt = decode_attribute(handle.attrs.get("format"))
        is_patches = fmt == PATCH_FORMAT or (fmt is None and PATCHES_DATASET in handle)
        listing = _dataset_listing(handle)
    base = {"path": str(path), "size_bytes": path.stat().st_size}
    if fmt == MODEL_FORMAT:
        description = base | _describe_model(path)
    elif is_patches:
        description = base | _describe_patches(path)
    elif fmt == FEATURES_FORMAT:
        description = base | _describe_features(path)
    else:
        description = base | {"kind": "hdf5", "format": fmt, "datasets": listing}
    return bounded(description)


def bounded(value: object, *, whole_lists: bool = False) -> object:
    """``value`` with every string safe and short enough to print, recursively.

    Everything a file holds is untrusted: an attribute may be megabytes long or carry
    terminal escape sequences.  Control characters become "?", strings are cut at
    ``MAX_TEXT`` characters and lists and dicts at ``MAX_ITEMS`` entries, each cut saying
    how long the original was.  The dataset listings keep every entry (the text output
    shortens them itself, saying how many are left out).
    """
    if isinstance(value, str):
        text = printable(value, None, mark="?")
        return text if len(text) <= MAX_TEXT else f"{text[:MAX_TEXT]}... ({len(text):,} characters)"
    if isinstance(value, dict):
        items = list(value.items())
        result = {
            bounded(str(key)): bounded(item, whole_lists=key in _LISTINGS) for key, item in items[:MAX_ITEMS]
        }
        if len(items) > MAX_ITEMS:
            result["..."] = f"{len(items) - MAX_ITEMS:,} more entries"
        return result
    if isinstance(value, list | tuple):
        shown = value if whole_lists else value[:MAX_ITEMS]
        result = [bounded(item) for item in shown]
        if len(value) > len(shown):
            result.append(f"... {len(value) - len(shown):,} more items")
        return result
    return value


def _jsonable(value: object) -> object:
    """Plain Python from attribute values and NumPy scalars (for json.dumps)."""
    value = decode_attribute(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _dataset_listing(group: h5py.Group) -> list[dict]:
    """Every dataset below ``group``: name, shape, dtype (sorted by name)."""
    found: list[dict] = []

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            shape = list(item.shape) if item.shape is not None else None  # None: a null dataspace
            found.append({"name": "/" + name, "shape": shape, "dtype": str(item.dtype)})

    group.visititems(visit)
    return sorted(found, key=lambda entry: entry["name"])


def _storage(dataset: h5py.Dataset) -> dict:
    """Chunking and compression of a dataset."""
    return {
        "chunks": list(dataset.chunks) if dataset.chunks is not None else None,
        "compression": dataset.compression,
        "compression_opts": _jsonable(dataset.compression_opts),
    }


def _describe_patches(path: Path, dataset: str = "/" + PATCHES_DATASET) -> dict:
    layout = inspect_patch_file(path, dataset)  # validates the dataset, with one-sentence errors
    attrs = layout.attributes
    with open_hdf5(path) as handle:
        storage = _storage(handle[layout.dataset])
        # Arrays beside the patches: the normalisation's parameters (/zca/*, /zscore/*).
        others = [entry for entry in _dataset_listing(handle) if entry["name"] != layout.dataset]
        normalization = json_attribute(handle.attrs.get("normalization"))
        sources = json_attribute(handle.attrs.get("sources"))
        sampling = json_attribute(handle.attrs.get("sampling"))
    return {
        "kind": "patches",
        "dataset": layout.dataset,
        "format": attrs.get("format"),
        "shape": [layout.n_rows, layout.n_features],
        "dtype": str(layout.dtype),
        **storage,
        "patch_shape": list(layout.patch_shape) if layout.patch_shape else None,
        "normalization": normalization if normalization is not None else attrs.get("normalization"),
        "seed": _jsonable(attrs.get("seed")),
        "sampling": sampling if sampling is not None else attrs.get("sampling"),
        "color": _jsonable(attrs.get("color")),
        "images": _jsonable(attrs.get("images")),
        "sources": sources if sources is not None else attrs.get("sources"),
        "other_datasets": others,
        "streamae_version": attrs.get("streamae_version"),
    }


def _last(history: dict, key: str) -> float | None:
    values = history.get(key)
    return float(values[-1]) if values is not None and len(values) else None


def _time_split(entry: object) -> dict | None:
    """Per-evaluation waiting/computing seconds from a model's info (None in older files)."""
    if not isinstance(entry, dict):
        return None
    values = [entry.get(key) for key in ("evaluations", "waiting_seconds", "computing_seconds")]
    if not all(isinstance(value, int | float) and value >= 0 for value in values) or values[0] < 1:
        return None
    count, waiting, computing = values
    split = {
        "evaluations": int(count),
        "waiting_seconds": waiting / count,
        "computing_seconds": computing / count,
    }
    besides = entry.get("besides_seconds")  # absent in older files
    if isinstance(besides, int | float) and besides >= 0:  # the check the other values pass
        total = waiting + computing + besides
        split["besides_share"] = besides / total if total > 0 else 0.0
    start = entry.get("start_seconds")  # absent in older files, where the start is counted above
    if isinstance(start, int | float) and start >= 0:
        split["start_seconds"] = start
    return split


def _final_grad_norm(model, history: dict) -> float | None:
    """|∇J| at the parameters the file holds: the kept point's after an early stop."""
    kept = model.info.get("grad_norm") if "best_iteration" in model.info else None
    return float(kept) if isinstance(kept, int | float) else _last(history, "grad_norm")


def _describe_model(path: Path) -> dict:
    model = load_model(path)  # validates weights and shapes, with one-sentence errors
    history = model.history
    final = {key: _last(history, key) for key in ("cost", "reconstruction", "weight_decay", "sparsity")}
    # A model saved before its first iteration has no history; the trainer also keeps
    # the final terms in the ``info`` attribute, so use those instead.
    kept = "best_iteration" in model.info  # an early stop kept an earlier point: its own J
    for key, value in final.items():
        if (value is None or kept) and isinstance(model.info.get(key), int | float):
            final[key] = float(model.info[key])
    rho_hat = model.rho_hat
    return {
        "kind": "model",
        "format": MODEL_FORMAT,
        "inputs": model.n_visible,
        "hidden": model.n_hidden,
        "patch_shape": list(model.patch_shape) if model.patch_shape else None,
        "hyperparameters": model.hyper.as_attributes(),
        "iterations": model.iterations,
        "final": final | {"grad_norm": _final_grad_norm(model, history)},
        "seconds": _last(history, "seconds"),
        "finished": model.info.get("finished"),
        "evaluation_time": _time_split(model.info.get("time_split")),
        "rho_hat": None
        if rho_hat is None
        else {
            "mean": float(np.mean(rho_hat)),
            "min": float(np.min(rho_hat)),
            "max": float(np.max(rho_hat)),
        },
        "data": model.data or None,
        "resumable": model.optimizer is not None,
        "normalization": model.normalization,
        "validation": _held_out_summary(model.validation),
        "warm_start": _warm_start_summary(model),
        "settings": _training_settings(model),
        "info": model.info,
    }


def _training_settings(model) -> dict:
    """The training settings the model records besides its hyperparameters (from the specs)."""
    sections = {"info": model.info, "data": model.data or {}}
    return {
        option.name: stored_value(option, sections)
        for option in resumable(TRAIN)
        if option.stored_path[0] == "info" and stored_value(option, sections) is not None
    }


def _held_out_summary(validation: dict) -> dict | None:
    """The held-out evaluations of a model: how many, the last and the best (or None)."""
    costs = validation.get("cost")
    if costs is None or len(costs) == 0:
        return None
    best = int(np.argmin(costs))
    return {
        "evaluations": len(costs),
        "last": {key: float(values[-1]) for key, values in validation.items()},
        "best_cost": float(costs[best]),
        "best_iteration": int(validation["iteration"][best]) if "iteration" in validation else None,
    }


def _warm_start_summary(model) -> dict | None:
    """The schedule as recorded and, per stage in the history, its rows and iterations."""
    record = model.info.get("warm_start")
    stage = model.history.get("stage")
    rows = model.history.get("sample_rows")
    if not isinstance(record, dict) and stage is None:
        return None
    stages = []
    if stage is not None and rows is not None and len(stage) == len(rows):
        for number in dict.fromkeys(int(v) for v in stage):  # in order of appearance
            mask = np.asarray(stage) == number
            stages.append(
                {"stage": number, "rows": int(np.asarray(rows)[mask][0]), "iterations": int(mask.sum())}
            )
    schedule = record.get("schedule") if isinstance(record, dict) else None
    return {"schedule": printable(schedule, 60, mark="?") if schedule is not None else None, "stages": stages}


def _describe_features(path: Path) -> dict:
    with open_hdf5(path) as handle:
        attrs = {key: _jsonable(value) for key, value in handle.attrs.items()}
        datasets = {
            name: {
                "shape": list(handle[name].shape),
                "dtype": str(handle[name].dtype),
                **_storage(handle[name]),
            }
            for name in ("features", "reconstruction")
            if isinstance(handle.get(name), h5py.Dataset)
        }
        mean = handle.get("mean_activation")
        mean_activation = float(np.mean(mean[()])) if isinstance(mean, h5py.Dataset) else None
    return {
        "kind": "features",
        "format": FEATURES_FORMAT,
        "datasets": datasets,
        "model": json_attribute(attrs.get("model")),
        "data": json_attribute(attrs.get("data")),
        "patch_shape": attrs.get("patch_shape"),
        "mean_activation": mean_activation,
        "reconstruction": attrs.get("reconstruction"),
        "streamae_version": attrs.get("streamae_version"),
    }


# --------------------------------------------------------------------------- text


def _number(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _shape(values: list | None) -> str:
    return "x".join(str(v) for v in values) if values else "-"


def _storage_text(entry: dict) -> str:
    chunks = f"chunks of {_shape(entry['chunks'])}" if entry.get("chunks") else "contiguous (not chunked)"
    if entry.get("compression"):
        options = entry.get("compression_opts")
        compression = entry["compression"] + (f" (level {options})" if options is not None else "")
    else:
        compression = "no compression"
    return f"{chunks}, {compression}"


def _data_text(data: dict | None) -> str:
    if not data:
        return "not recorded"
    shape = data.get("shape")
    rows = f"{shape[0]:,} x {shape[1]}" if isinstance(shape, list) and len(shape) == 2 else "?"
    return f"{data.get('path', '?')} ({rows}, {data.get('dtype', '?')})"


def format_description(info: dict) -> str:
    """The text ``streamae info`` prints for a :func:`describe` dict (several lines)."""
    kind = info["kind"]
    default = "/" + PATCHES_DATASET
    chosen = info.get("dataset", default) if kind == "patches" else default
    lines = [
        f"{info['path']}: "
        + (f"{chosen}, a dataset of training examples" if chosen != default else "")
        + {
            "patches": "streamae patch file" if chosen == default else "",
            "model": "streamae model file",
            "features": "streamae features file (written by `streamae encode`)",
            "hdf5": "HDF5 file, not a streamae file",
        }[kind]
    ]
    text = {"patches": _patches_text, "model": _model_text, "features": _features_text}.get(kind, _hdf5_text)
    return "\n".join(lines + text(info))


def _line(label: str, value: object) -> str:
    """One ``label: value`` line of the text, values aligned."""
    return f"  {label + ':':<18}{value}"


def _patches_text(info: dict) -> list[str]:
    m, n = info["shape"]
    name = info.get("dataset", "/" + PATCHES_DATASET)
    lines = [
        _line(
            "patches" if name == "/" + PATCHES_DATASET else name, f"{m:,} rows of {n} values, {info['dtype']}"
        ),
        _line("storage", _storage_text(info)),
        _line("patch shape", _shape(info["patch_shape"])),
        _line("normalization", _mode_text(info["normalization"])),
        _line("sampling", _mode_text(info["sampling"])),
        _line("seed", _number(info["seed"])),
    ]
    if info["images"] is not None or info["color"] is not None:
        lines.append(_line("images", f"{_number(info['images'])} ({info['color'] or 'colour not recorded'})"))
    sources = info["sources"]
    if isinstance(sources, list):
        shown = ", ".join(str(source) for source in sources[:5])
        lines.append(_line("sources", f"{len(sources)}: {shown}" + (" ..." if len(sources) > 5 else "")))
    else:
        lines.append(_line("sources", _number(sources)))
    lines += [
        _line("also holds", f"{e['name']} {_shape(e['shape'])} {e['dtype']}") for e in info["other_datasets"]
    ]
    return lines


# Hyperparameters said on the "layers" line rather than the "hyperparameters" one.
_ON_LAYERS_LINE = ("hidden", "decoder", "activation")


def _model_text(info: dict) -> list[str]:
    hyper = info["hyperparameters"]
    tanh = hyper.get("activation", "sigmoid") == "tanh"
    units = f"{info['hidden']} tanh hidden" if tanh else f"{info['hidden']} hidden"
    others = [f"{key}={_value(value)}" for key, value in hyper.items() if key not in _ON_LAYERS_LINE]
    finished = f" ({info['finished']})" if info.get("finished") else ""
    final = info["final"]
    lines = [
        _line("layers", f"{info['inputs']} inputs -> {units} ({hyper['decoder']} decoder)"),
        _line("patch shape", _shape(info["patch_shape"])),
        _line("hyperparameters", ", ".join(others)),
        _line("iterations", f"{info['iterations']:,}{finished}"),
        _line(
            "final J",
            f"{_number(final['cost'])} = reconstruction {_number(final['reconstruction'])}"
            f" + weight decay {_number(final['weight_decay'])} + sparsity {_number(final['sparsity'])}",
        ),
        _line("final |grad J|", _number(final["grad_norm"])),
        _line("mean rho_hat", _rho_hat_text(info["rho_hat"], hyper["rho"], tanh)),
    ]
    lines += _evaluation_time_text(info.get("evaluation_time"))
    lines.append(_line("trained on", _data_text(info["data"])))
    if info.get("settings"):
        lines.append(_line("settings", ", ".join(f"{k}={_value(v)}" for k, v in info["settings"].items())))
    lines += _warm_start_text(info.get("warm_start"))
    lines.append(_line("resumable", _resumable_text(info)))
    lines.append(_line("normalization", _mode_text(info.get("normalization"))))
    lines += _held_out_text(info.get("validation"))
    return lines


def _value(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _rho_hat_text(rho_hat: dict | None, rho: float, tanh: bool) -> str:
    if rho_hat is None:
        return "not recorded"
    return (
        f"{rho_hat['mean']:.4g} (min {rho_hat['min']:.4g}, max {rho_hat['max']:.4g}, "
        # tanh: rho targets the mean of (a2 + 1)/2, so the mean of a2 aims at 2·rho − 1.
        + (f"target {2 * rho - 1:g} = 2 rho - 1)" if tanh else f"target {rho:g})")
    )


def _evaluation_time_text(split: dict | None) -> list[str]:
    if split is None:
        return []
    total = split["waiting_seconds"] + split["computing_seconds"]
    share = split["waiting_seconds"] / total if total > 0 else 0.0
    lines = [
        _line(
            "per evaluation",
            f"{split['computing_seconds']:.3g} s computing, {split['waiting_seconds']:.3g} s "
            f"waiting for data ({share:.0%}; {split['evaluations']:,} evaluations)",
        )
    ]
    if "besides_share" in split:
        lines.append(
            _line(
                "not evaluating",
                f"{split['besides_share']:.0%} of the training time (L-BFGS, checkpoints, the log)",
            )
        )
    if "start_seconds" in split:
        start = split["start_seconds"]
        lines.append(_line("first evaluation", f"{start:.3g} s (at the starting point; not counted above)"))
    return lines


def _warm_start_text(warm: dict | None) -> list[str]:
    if warm is None or not (len(warm["stages"]) > 1 or warm["schedule"] not in (None, "none")):
        return []
    parts = [
        f"stage {entry['stage']}: {entry['rows']:,} rows, {entry['iterations']:,} iterations"
        for entry in warm["stages"]
    ]
    return [_line("warm start", f"{warm['schedule'] or 'schedule not recorded'}; " + "; ".join(parts))]


def _resumable_text(info: dict) -> str:
    if info["resumable"]:
        return "yes (optimizer state stored; continue with --resume)"
    if info.get("finished"):
        return "no (a finished model without the optimizer state; train afresh to continue)"
    return "no (no optimizer state stored)"


def _held_out_text(held: dict | None) -> list[str]:
    if not held:
        return []
    last = held["last"]
    return [
        _line(
            "held-out J",
            f"{_number(last.get('cost'))} at iteration {_number(int(last.get('iteration', 0)))} "
            f"(reconstruction {_number(last.get('reconstruction'))}, sparsity "
            f"{_number(last.get('sparsity'))}, mean rho_hat {_number(last.get('rho_hat_mean'))}); "
            f"best {_number(held['best_cost'])} at iteration {_number(held['best_iteration'])}, "
            f"{held['evaluations']} evaluations",
        )
    ]


def _features_text(info: dict) -> list[str]:
    lines = [
        _line(name, f"{_shape(entry['shape'])} {entry['dtype']}, {_storage_text(entry)}")
        for name, entry in info["datasets"].items()
    ]
    model = info["model"] or {}
    lines += [
        _line(
            "model", f"{model.get('path', '?')} ({model.get('inputs', '?')} -> {model.get('hidden', '?')})"
        ),
        _line("data", _data_text(info["data"])),
        _line("mean activation", _number(info["mean_activation"])),
    ]
    if info.get("reconstruction") is not None:
        lines.append(_line("reconstruction", f"{_number(info['reconstruction'])} (mean ½‖a3 − x‖²)"))
    return lines


def _hdf5_text(info: dict) -> list[str]:
    datasets = info["datasets"]
    lines = [] if datasets else [_line("datasets", "none")]
    for entry in datasets[:MAX_LISTED]:
        lines.append(f"  {entry['name']}  {_shape(entry['shape']) or 'scalar'} {entry['dtype']}")
    if len(datasets) > MAX_LISTED:
        lines.append(f"  ... and {len(datasets) - MAX_LISTED} more datasets")
    lines.append("  streamae reads patch files (`streamae extract`) and model files (`streamae train`).")
    return lines


def _mode_text(value: object) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, dict):
        mode = value.get("mode", "?")
        rest = ", ".join(f"{key}={_number(v)}" for key, v in value.items() if key != "mode")
        return f"{mode} ({rest})" if rest else str(mode)
    return str(value)
