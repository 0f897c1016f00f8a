"""Settings that are almost surely mistakes: said once at the start of a run, not refused.

Each function returns the sentences to print (none when all is well); the session
prints each once through its monitor, prefixed ``warning:``.
"""

from __future__ import annotations

from streamae.compute.parameters import Hyperparameters

# Data whose values reach this far from zero is not normalised: the linear decoder then
# starts with reconstruction errors of that size squared, and L-BFGS crawls.
FAR_FROM_NORMALISED = 10.0
# More hidden units than this many times the inputs, without sparsity, can copy the input.
OVERCOMPLETE_FACTOR = 2


def data_warnings(hyper: Hyperparameters, n_visible: int, minimum: float, maximum: float) -> list[str]:
    """Warnings about the hyperparameters for data of ``n_visible`` values in [minimum, maximum]."""
    found = []
    if hyper.decoder == "linear" and max(abs(minimum), abs(maximum)) > FAR_FROM_NORMALISED:
        found.append(
            f"the data range [{minimum:.4g}, {maximum:.4g}] is far from normalised; the linear "
            "decoder will take many evaluations per iteration and reach a huge J. Normalise at "
            "extraction (normalize zca, zscore or ufldl) unless this range is intended."
        )
    if hyper.decoder == "sigmoid" and hyper.beta == 0 and hyper.hidden >= OVERCOMPLETE_FACTOR * n_visible:
        found.append(
            f"{hyper.hidden} hidden units for {n_visible} inputs with the sigmoid decoder and no "
            "sparsity (beta 0): the network can learn to copy its input and the features say "
            "little. Give beta > 0 or fewer hidden units."
        )
    return found


def resume_warnings(max_iter: int, iterations_done: int) -> list[str]:
    """Warnings about the stop rules of a resumed run at ``iterations_done`` iterations."""
    if max_iter < iterations_done:
        return [
            f"max_iter {max_iter} is below the {iterations_done} iterations already done, so "
            "nothing will be trained; give a larger max_iter to continue."
        ]
    return []
