"""The relative-progress tolerance a run stops by, when the user gave none.

J falling by less than ``tolerance`` of its value over the last ``tolerance_window``
full-data iterations ends a run (:func:`streamae.compute.lbfgs.relative_progress_reason`).
One tolerance does not fit every data size (docs/time-to-model.md, "How the defaults were
chosen"): with at least one row per parameter, ``1e-4`` stops every measured default run
within 0.1% of the notes' 400-iteration J (10⁶ photo patches: +0.065% after 71 passes;
``2e-4`` already ends 5·10⁴ patches +0.12% above).  With fewer rows than parameters (MNIST's
10⁴ digits, 308,308 parameters) J keeps falling by 2-5e-4 per 10 iterations for hundreds of
iterations after it has passed the notes' J400 (1e-4 ends at 363 passes, 0.5% below it;
3e-4 at 196 passes, 0.19% below it; on 8,000 of the digits the J of the other 2,000 moved
by under 0.2% after that point): there ``3e-4``.
"""

from __future__ import annotations

from streamae.options import DEFAULT_TOLERANCE, FEW_ROWS_TOLERANCE


def choose_tolerance(tolerance: float | None, n_rows: int, n_parameters: int) -> tuple[float, str]:
    """The tolerance a run uses and why, in words for the run header.

    ``tolerance`` None (the default): ``DEFAULT_TOLERANCE`` when the data holds at least
    one row per parameter, ``FEW_ROWS_TOLERANCE`` when fewer; a number is the caller's (or a
    resumed checkpoint's).
    """
    if tolerance is not None:
        return float(tolerance), f"{tolerance:g}, as set (by the caller, or by the checkpoint resumed)"
    if n_rows < n_parameters:
        return FEW_ROWS_TOLERANCE, (
            f"{FEW_ROWS_TOLERANCE:g} because the data holds fewer rows than the model has "
            f"parameters ({n_rows:,} < {n_parameters:,}): J falls slowly for long after the model "
            "has settled"
        )
    return DEFAULT_TOLERANCE, f"{DEFAULT_TOLERANCE:g} (the data holds at least one row per parameter)"
