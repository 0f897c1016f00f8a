"""``extract``: image sources in, a chunked patch file out, in one or two streaming passes.

Pass 1 cuts the sampled patches block by block and gathers the statistics the
normalisation needs (σ for ufldl, per-pixel moments for zscore, mean and covariance for
zca; skipped for unit and none).  Pass 2 cuts the same patches again (the positions are
reproducible from the seed), normalises each block and writes it.  Memory holds the
decoded images (within ``cache_bytes``) and a few blocks, never all patches.  The file
is written through :func:`streamae.io.atomic.atomic_output`: a failure or a kill leaves no
file at the target.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamae._version import __version__
from streamae.errors import DataError, UsageError
from streamae.extraction.cache import ImageCache, group_by_budget
from streamae.extraction.color import COLOR_CHANNELS
from streamae.extraction.normalize import Normalizer, Statistics, check_finite_rows
from streamae.extraction.readers import ImageEntry, RawLayout, inventory
from streamae.extraction.sampling import SamplingPlan, cut_patches, plan_sampling
from streamae.extraction.sources import expand_sources
from streamae.io.atomic import atomic_output, check_output_path, check_written, hdf5_output
from streamae.io.hdf5 import PATCH_FORMAT, PATCHES_DATASET
from streamae.io.inputs import check_regular_input
from streamae.options import DEFAULT_NUM_PATCHES, ExtractOptions, said, setting
from streamae.runtime.process import configure
from streamae.text import printable

# Default HDF5 chunk: about 1 MiB of rows.  Big enough for fast sequential reads, small
# enough that h5py's default 1 MiB chunk cache holds one.
DEFAULT_CHUNK_BYTES = 1 << 20
# Rows cut, normalised and written at a time: about this many bytes of float32 patches
# (rounded to whole chunks), so the working set stays small whatever m is.
BLOCK_BYTES = 8 << 20
# Decoded images kept in memory at once (float32).  Collections larger than this are
# decoded in groups, once per pass.
DEFAULT_CACHE_BYTES = 256 << 20
GZIP_LEVEL = 4

# progress(stage, rows_done, rows_total); stage is "statistics" or "writing".
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExtractResult:
    """What ``extract`` wrote; usable wherever a path is (``os.fspath(result)``)."""

    path: Path
    rows: int
    patch_shape: tuple[int, int, int]
    images: int
    normalization: dict
    seconds: float
    skipped: tuple[str, ...] = ()

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def default_chunk_rows(n_features: int, n_rows: int) -> int:
    """Rows per HDF5 chunk: about ``DEFAULT_CHUNK_BYTES`` of float32 rows, at most ``n_rows``."""
    return max(1, min(n_rows, DEFAULT_CHUNK_BYTES // (4 * n_features)))


def extract(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    options: ExtractOptions | None = None,
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    **values: object,
) -> ExtractResult | dict:
    """Cut patches from ``sources`` and write them, normalised, to the patch file ``output``.

    The options come from ``options`` (a frozen :class:`~streamae.options.ExtractOptions`)
    and/or keyword arguments, checked against :data:`streamae.options.EXTRACT`:
    ``patch_size`` ((height, width), one int for squares, or text such as ``"12x8"``),
    ``num_patches`` (random patches, as the notes' sampleIMAGES; default 10,000) or
    ``stride`` (every patch of a grid; excludes ``num_patches``), ``color``, ``normalize``,
    ``zca_epsilon``, ``seed``, ``chunk_rows``, ``compression``, ``variable`` and ``force``;
    ``raw_shape`` (height, width) and ``raw_dtype`` read files of no known type as raw
    pixels (Olshausen's images: ``raw_shape=(512, 512)``, ``raw_dtype="float32-be"``).
    The file holds ``/patches`` (m, h·w·c) float32, each row a patch flattened in C order
    of (h, w, c), chunked (chunk_rows, h·w·c).  Raises
    :class:`~streamae.errors.StreamaeError` subclasses for bad inputs and options (a
    :class:`~streamae.errors.UsageError` naming the parameter for a bad option).

    ``sources`` is a list of paths, folders and glob patterns, or one of them (a single
    str or path is one source, never a sequence of characters).  ``normalize_like`` is an
    earlier patch file whose stored normalisation (ufldl σ, z-score statistics, ZCA mean
    and matrix) is applied instead of fitting a new one (``normalize`` is then ignored).
    ``skip_bad``: a source that cannot be read is skipped with one warning
    (``warn(text)``, default :func:`warnings.warn`) instead of ending the run; the
    skipped files are listed in the file's ``skipped_sources`` attribute and the result.
    ``vectors``: FILE.npy or FILE.h5:DATASET, whose rows are written as they are (no
    sources then; see :func:`streamae.extraction.vectors.extract_vectors`, whose summary
    dict is returned).
    """
    configure()  # the process set up for the kernels, unless the caller did it (idempotent)
    started = time.perf_counter()
    o = ExtractOptions.build(options, values)
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    if o.vectors is not None:
        return _extract_vectors(o, sources, output)
    refuse_unused(o.as_dict(), IMAGES_TAKE, "image sources")
    num_patches = _sample_count(o, sources)
    like = [o.normalize_like] if o.normalize_like is not None else []
    for reference in like:  # a FIFO, device, folder or loop is refused before any work
        check_regular_input(reference, "a patch file written by streamae extract")
    check_output_path(output, force=o.force, inputs=[*_existing(sources), *like])
    files, entries, skipped = _images(o, sources, warn)
    groups = group_by_budget(entries, o.color, cache_bytes)
    plan = _plan(entries, groups, o, num_patches)
    shape = (o.patch_size[0], o.patch_size[1], COLOR_CHANNELS[o.color])
    stored = None
    if o.normalize_like is not None:
        stored = stored_normalizer(o.normalize_like, shape)
        refuse_other_mode(o.normalize, stored.mode, o.normalize_like)
    normalize = stored.mode if stored is not None else o.normalize
    chunk, buffer = _buffers(o.chunk_rows, plan.total_rows, math.prod(shape))
    cache = ImageCache(entries, o.color, groups, unit_scale=normalize != "none")
    # With normalize_like there is no statistics pass: the earlier file's normalisation applies.
    normalizer = stored or _fitted(normalize, plan, cache, buffer, progress, o.zca_epsilon)
    attributes = _attributes(o, sources, shape, normalizer, plan.total_rows, len(entries), skipped)
    with atomic_output(output, force=o.force, inputs=[*files, *like]) as temporary:
        _write(temporary, plan, cache, buffer, normalizer, chunk=chunk,
               compression=(o.compression, np.dtype(o.storage)), attributes=attributes,
               progress=progress)  # fmt: skip
    return ExtractResult(
        path=Path(output),
        rows=plan.total_rows,
        patch_shape=shape,
        images=len(entries),
        normalization=normalizer.describe(),
        seconds=time.perf_counter() - started,
        skipped=tuple(entry["path"] for entry in skipped),
    )


def _images(o: ExtractOptions, sources: Sequence, warn) -> tuple[list, list[ImageEntry], list[dict]]:
    """The source files, the images read from them and the skipped ones (with ``skip_bad``)."""
    raw = None if o.raw_shape is None else RawLayout(*o.raw_shape, dtype=o.raw_dtype)
    files = expand_sources(sources, raw=raw is not None)
    skipped: list[dict] = []
    if o.skip_bad:
        entries = _readable_entries(files, o.variable, o.color, skipped, warn, raw)
    else:
        entries = inventory(files, variable=o.variable, raw=raw)
    _check_sizes(entries, o.patch_size)
    return files, entries, skipped


def _extract_vectors(o: ExtractOptions, sources: Sequence, output: str | os.PathLike) -> dict:
    """extract with vectors=FILE: its rows as they are (no sources, no normalisation)."""
    from streamae.extraction.vectors import extract_vectors

    if sources:
        raise UsageError(
            f"{setting('vectors', 'FILE', 'FILE')} takes no sources; give either images or vectors.",
            parameter="vectors",
        )
    refuse_unused(
        o.as_dict(), VECTORS_TAKE, f"{setting('vectors', 'FILE', 'FILE')} (its rows are written as they are)"
    )
    return extract_vectors(
        o.vectors, output, chunk_rows=o.chunk_rows, force=o.force, compression=o.compression
    )


def _sample_count(o: ExtractOptions, sources: Sequence) -> int | None:
    """The number of random patches (None for a grid), checking sources, count and stride agree."""
    if not sources:
        raise UsageError(
            "give the images to cut patches from (sources), or vectors=FILE.", parameter="vectors"
        )
    if o.stride is not None and o.num_patches is not None:
        raise UsageError(
            "num_patches=N and stride=S exclude each other; give one of them.", parameter="num_patches"
        )
    if o.stride is None:
        return DEFAULT_NUM_PATCHES if o.num_patches is None else o.num_patches
    return None


def _plan(entries: Sequence[ImageEntry], groups, o: ExtractOptions, num_patches: int | None) -> SamplingPlan:
    """Where every patch is cut (random or a grid); refuses a grid that holds none."""
    plan = plan_sampling(
        [e.height for e in entries],
        [e.width for e in entries],
        o.patch_size,
        groups,
        num_patches=num_patches,
        stride=o.stride,
        seed=o.seed,
    )
    if plan.total_rows < 1:
        raise UsageError(
            "the grid holds no patches; choose a smaller stride=S or patch_size=HxW.", parameter="stride"
        )
    return plan


def _buffers(chunk_rows: int | None, m: int, n: int) -> tuple[int, np.ndarray]:
    """(rows per HDF5 chunk, the one block buffer (block_rows, n) float32): whole chunks per block."""
    chunk = min(int(chunk_rows), m) if chunk_rows else default_chunk_rows(n, m)
    block_rows = max(chunk, BLOCK_BYTES // (4 * n) // chunk * chunk)
    block_rows = min(block_rows, -(-m // chunk) * chunk)
    return chunk, np.empty((block_rows, n), dtype=np.float32)


def _fitted(normalize: str, plan: SamplingPlan, cache: ImageCache, buffer: np.ndarray, progress,
            epsilon: float) -> Normalizer:  # fmt: skip
    """Pass 1: the normalisation fitted over every patch (skipped for modes without statistics)."""
    statistics = Statistics(normalize, buffer.shape[1], buffer.shape[0])
    if statistics.needed:
        for _, block in _cut_blocks(plan, cache, buffer, progress, "statistics"):
            statistics.add(block)
    return statistics.finish(epsilon=epsilon)


def _attributes(o: ExtractOptions, sources: Sequence, shape: tuple[int, int, int], normalizer: Normalizer,
                m: int, images: int, skipped: list[dict]) -> dict:  # fmt: skip
    """The patch file's attributes (DESIGN's Files section)."""
    grid = o.stride
    return {
        "patch_shape": np.array(shape, dtype=np.int64),
        "normalization": json.dumps(normalizer.describe()),
        "seed": int(o.seed),
        "sources": json.dumps([os.fspath(s) for s in sources]),
        "sampling": json.dumps(
            {"mode": "grid", "stride": list(grid)} if grid else {"mode": "random", "num_patches": m}
        ),
        "color": o.color,
        "images": images,
        "skipped_sources": json.dumps(skipped),
    }


# The options of extract that image sources use (channels is audio's).
IMAGES_TAKE = ("patch_size", "num_patches", "stride", "color", "normalize", "zca_epsilon", "seed",
               "chunk_rows", "compression", "variable", "normalize_like", "skip_bad", "vectors",
               "force", "storage", "raw_shape", "raw_dtype")  # fmt: skip
# The options of extract that vectors=FILE uses (its rows are written as they are).
VECTORS_TAKE = ("vectors", "chunk_rows", "compression", "force")


def refuse_unused(values: dict, takes: Sequence[str], what: str) -> None:
    """Refuse an option given (not at its default) that ``what`` does not use: none is ignored."""
    from streamae.options import EXTRACT

    for option in EXTRACT.library_options():
        if option.name in takes or option.name not in values:
            continue
        default = option.default
        if option.parse is not None and default is not None:
            default = option.parse(default)  # "8" as the options hold it: (8, 8)
        if values[option.name] not in (default, option.default):
            raise UsageError(f"{option.name} does not apply to {what}; leave it out.", parameter=option.name)


def refuse_other_mode(normalize: str, stored: str, reference: str | os.PathLike) -> None:
    """Refuse normalize=MODE given beside normalize_like=FILE that records another mode."""
    from streamae.options import EXTRACT

    if normalize != EXTRACT["normalize"].default and normalize != stored:
        raise UsageError(
            f"{printable(reference)}: records the {stored} normalisation, but "
            f"{setting('normalize', normalize)} was given too; leave {said('normalize')} out (the file's "
            "mode applies).",
            parameter="normalize",
        )


def _readable_entries(
    files: Sequence[Path],
    variable: str | None,
    color: str,
    skipped: list[dict],
    warn: Callable[[str], None] | None,
    raw: RawLayout | None = None,
) -> list[ImageEntry]:
    """The entries of the files that can be read, each image decoded once to be sure.

    A file that fails (its header or its pixels) is left out with one warning and
    appended to ``skipped`` as ``{"path", "reason"}``; decoding now means a bad file
    cannot end the run half-way through a pass.
    """

    from streamae.errors import InputFileError
    from streamae.extraction.readers import KIND_PILLOW, read_entries

    entries: list[ImageEntry] = []
    for path in files:
        try:
            found = inventory([path], variable=variable, raw=raw)
            for _ in read_entries([e for e in found if e.kind == KIND_PILLOW], color):
                pass
        except InputFileError as error:
            skip_with_warning(path, error, skipped, warn)
            continue
        entries.extend(found)
    if not entries:
        raise none_readable(len(files), "source files", skipped)
    return entries


def skip_with_warning(
    path: Path, error: Exception, skipped: list[dict], warn: Callable[[str], None] | None
) -> None:
    """Record a skipped source in ``skipped`` and say it once (``warn``, else :func:`warnings.warn`).

    The text is made printable: file names come from a folder listing anyone may have written.
    """
    import warnings

    skipped.append({"path": os.fspath(path), "reason": str(error)})
    text = f"skipped {printable(error, None)}"
    if warn is not None:
        warn(text)
    else:
        warnings.warn(text, stacklevel=4)


def none_readable(count: int, what: str, skipped: list[dict]):
    """The error for ``skip_bad`` when every one of ``count`` sources was skipped."""
    from streamae.errors import InputFileError

    return InputFileError(
        f"none of the {count} {what} could be read ({printable(skipped[0]['path'])} was the first); "
        "check the files."
    )


def stored_normalizer(path: str | os.PathLike, patch_shape: tuple[int, int, int]) -> Normalizer:
    """The normalizer recorded in the patch file ``path``, for patches of ``patch_shape``.

    Raises :class:`UsageError` naming the file when it records none, or records one for
    patches of another shape.
    """
    from streamae.io.normalization import read_normalization
    from streamae.io.patchfile import inspect_patch_file

    layout = inspect_patch_file(path)
    shown = "x".join(map(str, patch_shape))
    if layout.patch_shape is not None and tuple(layout.patch_shape) != tuple(patch_shape):
        raise UsageError(
            f"{path}: its patches are {'x'.join(map(str, layout.patch_shape))}, not {shown}; "
            "extract with the same patch size and colour as the file whose normalisation you reuse.",
            parameter="normalize_like",
        )
    if layout.n_features != math.prod(patch_shape):
        raise UsageError(
            f"{path}: its patches hold {layout.n_features} values, not {math.prod(patch_shape)} "
            f"({shown}); extract with the same patch size and colour as that file.",
            parameter="normalize_like",
        )
    description, arrays = read_normalization(path, n_features=math.prod(patch_shape))
    if description is None:
        raise UsageError(
            f"{path}: the file records no normalization to reuse; give a patch file written by "
            "`streamae extract`.",
            parameter="normalize_like",
        )
    try:
        return Normalizer.from_stored(description, arrays)
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(
            f"{path}: its normalization attribute is incomplete ({type(error).__name__}: "
            f"{str(error)[:60]}); extract that file again.",
            parameter="normalize_like",
        ) from error


def _write(
    temporary: Path,
    plan: SamplingPlan,
    cache: ImageCache,
    buffer: np.ndarray,
    normalizer: Normalizer,
    *,
    chunk: int,
    compression: tuple[str, np.dtype],
    attributes: dict,
    progress: Progress | None,
) -> None:
    """Pass 2: cut, normalise and write every block into a new HDF5 file at ``temporary``.

    ``compression``: the HDF5 filter and the stored type (float32, or float16: each block
    rounded to nearest by NumPy before it is written, refused if a value overflows)."""

    m, n = plan.total_rows, buffer.shape[1]
    compression, storage = compression
    stored = buffer if storage == buffer.dtype else np.empty(buffer.shape, dtype=storage)
    options = {} if compression == "none" else {"compression": compression}
    if compression == "gzip":
        options["compression_opts"] = GZIP_LEVEL
    # Blocks are whole chunks (except the last), so each chunk is written once, whole;
    # the cache only needs to hold one.
    with hdf5_output(temporary, rdcc_nbytes=max(1 << 20, 2 * chunk * n * 4)) as handle:
        dataset = handle.create_dataset(
            PATCHES_DATASET, shape=(m, n), dtype=storage, chunks=(chunk, n), **options
        )
        for start, block in _cut_blocks(plan, cache, buffer, progress, "writing"):
            normalizer.apply(block)
            check_finite_rows(block, start, normalizer)
            block = _stored_as(block, stored[: block.shape[0]], start)
            dataset.write_direct(block, dest_sel=np.s_[start : start + block.shape[0]])
            check_written(handle)  # a full disk ends the run now, not after the last block
        for name, array in normalizer.datasets().items():
            handle.create_dataset(name, data=array)
        handle.attrs["format"] = PATCH_FORMAT
        for key, value in attributes.items():
            handle.attrs[key] = value
        handle.attrs["streamae_version"] = __version__


def _stored_as(block: np.ndarray, out: np.ndarray, first_row: int) -> np.ndarray:
    """``block`` (rows, n) float32 in ``out``'s type (rounded to nearest), or ``block``
    itself when the types agree; raises DataError when a value overflows float16."""
    if out.dtype == block.dtype:
        return block
    with np.errstate(over="ignore"):
        np.copyto(out, block, casting="same_kind")
    if not np.all(np.isfinite(out)):
        row = first_row + int(np.flatnonzero(~np.all(np.isfinite(out), axis=1))[0])
        raise DataError(
            f"patch {row} holds a value beyond {out.dtype}'s range (largest {np.finfo(out.dtype).max:g}) "
            "after normalisation; extract with storage=float32 or a normalize mode that bounds the values."
        )
    return out


def _cut_blocks(
    plan: SamplingPlan, cache: ImageCache, buffer: np.ndarray, progress: Progress | None, stage: str
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_row, block)``: the plan's patches in row order, ``buffer``'s rows at a time.

    block is a (rows, n) view of ``buffer``, overwritten by the next block.  Groups of
    images are decoded in order, each once; a block may take rows from two groups.
    """
    m, block_rows = plan.total_rows, buffer.shape[0]
    ph, pw = plan.patch
    block_start, block_stop = 0, min(block_rows, m)
    for g, group in enumerate(plan.groups):
        if group.stop_row == group.start_row:
            continue
        pixels, offsets, widths = cache.load(group.first_image, group.stop_image)
        row = group.start_row
        while row < group.stop_row:
            piece_stop = min(group.stop_row, block_stop)
            image, top, left = plan.positions(g, row - group.start_row, piece_stop - group.start_row)
            cut_patches(
                pixels,
                offsets,
                widths,
                cache.channels,
                image,
                top,
                left,
                ph,
                pw,
                buffer[row - block_start : piece_stop - block_start],
            )
            row = piece_stop
            if row == block_stop:
                yield block_start, buffer[: block_stop - block_start]
                if progress is not None:
                    progress(stage, block_stop, m)
                block_start, block_stop = block_stop, min(block_stop + block_rows, m)


def _existing(sources: Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    return [s for s in sources if Path(s).is_file()]


def _check_sizes(entries: Sequence[ImageEntry], patch: tuple[int, int]) -> None:
    """Refuse an image smaller than the patch, naming the image and both sizes."""
    for entry in entries:
        if entry.height < patch[0] or entry.width < patch[1]:
            raise UsageError(
                f"{entry.label}: the image is {entry.height}x{entry.width} pixels (height x width), "
                f"smaller than the {patch[0]}x{patch[1]} patch; choose a smaller "
                f"{setting('patch_size', 'HxW', 'HxW')} or leave the image out."
            )
