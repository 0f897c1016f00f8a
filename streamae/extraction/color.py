"""Output colour: gray by ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) or RGB, as float32."""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma weights, applied in float32 so every source type rounds alike.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

COLOR_CHANNELS = {"gray": 1, "rgb": 3}


def to_color(pixels: np.ndarray, color: str) -> np.ndarray:
    """Convert (H, W) or (H, W, C) values to float32 (H, W, 1) gray or (H, W, 3) RGB.

    Gray from colour is the BT.601 luma of the first three channels (alpha dropped);
    RGB from gray repeats the gray value in all three channels.
    """
    values = np.asarray(pixels)
    if values.ndim == 2:
        values = values[:, :, None]
    channels = values.shape[2]
    if color == "gray":
        if channels < 3:
            return values[:, :, :1].astype(np.float32)
        rgb = values[:, :, :3].astype(np.float32)
        luma = (
            rgb[:, :, 0] * LUMA_WEIGHTS[0] + rgb[:, :, 1] * LUMA_WEIGHTS[1] + rgb[:, :, 2] * LUMA_WEIGHTS[2]
        )
        return luma[:, :, None]
    if channels < 3:
        return np.repeat(values[:, :, :1].astype(np.float32), 3, axis=2)
    return values[:, :, :3].astype(np.float32)
