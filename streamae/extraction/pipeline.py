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
from streamae.errors import UsageError
from streamae.extraction.cache import ImageCache, group_by_budget
from streamae.extraction.color import COLOR_CHANNELS
from streamae.extraction.normalize import Normalizer, Statistics
from streamae.extraction.readers import ImageEntry, RawLayout, inventory
from streamae.extraction.sampling import SamplingPlan, cut_patches, plan_sampling
from streamae.extraction.sources import expand_sources
from streamae.io.atomic import atomic_output, check_output_path, check_written, hdf5_output
from streamae.io.hdf5 import PATCH_FORMAT, PATCHES_DATASET
from streamae.options import DEFAULT_NUM_PATCHES, ExtractOptions, setting
from streamae.runtime.process import configure

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
    patch, grid, num_patches = o.patch_size, o.stride, o.num_patches
    color, normalize, zca_epsilon, seed = o.color, o.normalize, o.zca_epsilon, o.seed
    chunk_rows, compression, variable, force = o.chunk_rows, o.compression, o.variable, o.force
    normalize_like, skip_bad = o.normalize_like, o.skip_bad
    raw = None if o.raw_shape is None else RawLayout(*o.raw_shape, dtype=o.raw_dtype)
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    if o.vectors is not None:
        if sources:
            raise UsageError(
                "vectors=FILE takes no sources; give either images or vectors.", parameter="vectors"
            )
        from streamae.extraction.vectors import extract_vectors

        return extract_vectors(o.vectors, output, chunk_rows=chunk_rows, force=force)
    if not sources:
        raise UsageError(
            "give the images to cut patches from (sources), or vectors=FILE.", parameter="vectors"
        )
    if grid is not None and num_patches is not None:
        raise UsageError(
            "num_patches=N and stride=S exclude each other; give one of them.", parameter="num_patches"
        )
    if grid is None:
        num_patches = DEFAULT_NUM_PATCHES if num_patches is None else num_patches
    like = [normalize_like] if normalize_like is not None else []
    check_output_path(output, force=force, inputs=[*_existing(sources), *like])

    files = expand_sources(sources, raw=raw is not None)
    skipped: list[dict] = []
    if skip_bad:
        entries = _readable_entries(files, variable, color, skipped, warn, raw)
    else:
        entries = inventory(files, variable=variable, raw=raw)
    _check_sizes(entries, patch)
    groups = group_by_budget(entries, color, cache_bytes)
    plan = plan_sampling(
        [e.height for e in entries],
        [e.width for e in entries],
        patch,
        groups,
        num_patches=num_patches,
        stride=grid,
        seed=seed,
    )
    m = plan.total_rows
    if m < 1:
        raise UsageError(
            "the grid holds no patches; choose a smaller stride=S or patch_size=HxW.", parameter="stride"
        )
    channels = COLOR_CHANNELS[color]
    n = patch[0] * patch[1] * channels
    stored = None
    if normalize_like is not None:
        stored = stored_normalizer(normalize_like, (patch[0], patch[1], channels))
        normalize = stored.mode
    chunk = min(int(chunk_rows), m) if chunk_rows else default_chunk_rows(n, m)
    block_rows = max(chunk, BLOCK_BYTES // (4 * n) // chunk * chunk)
    block_rows = min(block_rows, -(-m // chunk) * chunk)

    cache = ImageCache(entries, color, groups, unit_scale=normalize != "none")
    buffer = np.empty((block_rows, n), dtype=np.float32)
    if stored is not None:
        normalizer = stored  # no statistics pass: the earlier file's normalisation applies
    else:
        statistics = Statistics(normalize, n, block_rows)
        if statistics.needed:
            for _, block in _cut_blocks(plan, cache, buffer, progress, "statistics"):
                statistics.add(block)
        normalizer = statistics.finish(epsilon=zca_epsilon)

    with atomic_output(output, force=force, inputs=[*files, *like]) as temporary:
        _write(
            temporary,
            plan,
            cache,
            buffer,
            normalizer,
            chunk=chunk,
            compression=compression,
            attributes={
                "patch_shape": np.array([patch[0], patch[1], channels], dtype=np.int64),
                "normalization": json.dumps(normalizer.describe()),
                "seed": int(seed),
                "sources": json.dumps([os.fspath(s) for s in sources]),
                "sampling": json.dumps(
                    {"mode": "grid", "stride": list(grid)} if grid else {"mode": "random", "num_patches": m}
                ),
                "color": color,
                "images": len(entries),
                "skipped_sources": json.dumps(skipped),
            },
            progress=progress,
        )
    return ExtractResult(
        path=Path(output),
        rows=m,
        patch_shape=(patch[0], patch[1], channels),
        images=len(entries),
        normalization=normalizer.describe(),
        seconds=time.perf_counter() - started,
        skipped=tuple(entry["path"] for entry in skipped),
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
    import warnings

    from streamae.errors import InputFileError
    from streamae.extraction.readers import KIND_PILLOW, read_entries

    entries: list[ImageEntry] = []
    for path in files:
        try:
            found = inventory([path], variable=variable, raw=raw)
            for _ in read_entries([e for e in found if e.kind == KIND_PILLOW], color):
                pass
        except InputFileError as error:
            skipped.append({"path": os.fspath(path), "reason": str(error)})
            text = f"skipped {error}"
            if warn is not None:
                warn(text)
            else:
                warnings.warn(text, stacklevel=3)
            continue
        entries.extend(found)
    if not entries:
        raise InputFileError(
            f"none of the {len(files)} source files could be read ({skipped[0]['path']} was the "
            "first); check the files."
        )
    return entries


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
    description, arrays = read_normalization(path)
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
    compression: str,
    attributes: dict,
    progress: Progress | None,
) -> None:
    """Pass 2: cut, normalise and write every block into a new HDF5 file at ``temporary``."""

    m, n = plan.total_rows, buffer.shape[1]
    options = {} if compression == "none" else {"compression": compression}
    if compression == "gzip":
        options["compression_opts"] = GZIP_LEVEL
    # Blocks are whole chunks (except the last), so each chunk is written once, whole;
    # the cache only needs to hold one.
    with hdf5_output(temporary, rdcc_nbytes=max(1 << 20, 2 * chunk * n * 4)) as handle:
        dataset = handle.create_dataset(
            PATCHES_DATASET, shape=(m, n), dtype=np.float32, chunks=(chunk, n), **options
        )
        for start, block in _cut_blocks(plan, cache, buffer, progress, "writing"):
            normalizer.apply(block)
            dataset.write_direct(block, dest_sel=np.s_[start : start + block.shape[0]])
            check_written(handle)  # a full disk ends the run now, not after the last block
        for name, array in normalizer.datasets().items():
            handle.create_dataset(name, data=array)
        handle.attrs["format"] = PATCH_FORMAT
        for key, value in attributes.items():
            handle.attrs[key] = value
        handle.attrs["streamae_version"] = __version__


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
