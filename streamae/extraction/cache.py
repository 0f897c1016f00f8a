"""The decoded-image cache: runs of images decoded into one packed float32 buffer, reused.

The images are split into consecutive runs whose decoded size fits a memory budget
(:func:`group_by_budget`); :class:`ImageCache` decodes one run at a time, in the output
colour, into a buffer allocated once for the largest run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamae.errors import DataError
from streamae.extraction import readers
from streamae.extraction.color import COLOR_CHANNELS, to_color
from streamae.extraction.readers import ImageEntry


def decoded_bytes(entry: ImageEntry, color: str) -> int:
    """Bytes one image takes decoded to float32 in ``color``."""
    return entry.height * entry.width * COLOR_CHANNELS[color] * 4


def group_by_budget(entries: Sequence[ImageEntry], color: str, budget: int) -> list[tuple[int, int]]:
    """Split the entries into consecutive runs ``[first, stop)`` whose decoded size fits ``budget``.

    An image larger than the budget alone forms a run of its own.
    """
    groups: list[tuple[int, int]] = []
    first, used = 0, 0
    for i, entry in enumerate(entries):
        size = decoded_bytes(entry, color)
        if i > first and used + size > budget:
            groups.append((first, i))
            first, used = i, 0
        used += size
    if entries:
        groups.append((first, len(entries)))
    return groups


class ImageCache:
    """Decodes runs of images into one packed float32 buffer, reused for every run.

    ``load(first, stop)`` returns ``(pixels, offsets, widths)``: pixels is a flat float32
    array holding image ``first + k`` as (H, W, C) in C order from ``offsets[k]``;
    widths (k,) int64.  Loading the run already held costs nothing, so with a single run
    (all images within the budget) every image is decoded once for the whole extract.
    Values are divided by each image's full-intensity value when ``unit_scale`` is set.
    """

    def __init__(
        self,
        entries: Sequence[ImageEntry],
        color: str,
        groups: Sequence[tuple[int, int]],
        *,
        unit_scale: bool,
    ) -> None:
        self.entries = list(entries)
        self.color = color
        self.channels = COLOR_CHANNELS[color]
        self.unit_scale = unit_scale
        largest = max((sum(decoded_bytes(e, color) for e in self.entries[a:b]) for a, b in groups), default=0)
        self._pixels = np.empty(largest // 4, dtype=np.float32)
        self._held: tuple[int, int] | None = None
        self._offsets = np.zeros(0, dtype=np.int64)
        self._widths = np.zeros(0, dtype=np.int64)
        self.decoded = 0  # images decoded so far, for tests and progress

    def load(self, first: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode images [first, stop) (unless already held) and return the packed buffer."""
        if self._held != (first, stop):
            run = self.entries[first:stop]
            sizes = np.array([e.height * e.width * self.channels for e in run], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            self._held = None  # a failure part-way leaves nothing claimed as held
            # Looked up on the module at call time, so tests can count the decodes.
            for k, raw in readers.read_entries(run, self.color):
                image = to_color(raw, self.color)
                if image.dtype.kind == "f" and not np.isfinite(image).all():
                    # One NaN would turn sigma, the mean or the covariance into NaN everywhere.
                    raise DataError(
                        f"{run[k].label}: the image holds NaN or infinite values; replace them "
                        "(for example with numpy.nan_to_num) or leave the image out."
                    )
                if self.unit_scale:
                    # Division (not a multiplied reciprocal) so 8-bit v/255 is exactly float32(v/255).
                    image /= np.float32(run[k].scale)
                target = self._pixels[offsets[k] : offsets[k] + sizes[k]]
                target[:] = image.ravel()
                self.decoded += 1
            self._offsets = offsets
            self._widths = np.array([e.width for e in run], dtype=np.int64)
            self._held = (first, stop)
        return self._pixels, self._offsets, self._widths
