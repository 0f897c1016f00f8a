"""Full-batch L-BFGS with a strong-Wolfe line search and a serialisable state.

The notes' exercise used minFunc's L-BFGS: 100 stored correction pairs, a Wolfe line
search with c1 = 1e-4 and c2 = 0.9 and cubic interpolation, an initial step of
min(1, 1/‖g‖₁) on the first iteration and 1 afterwards.  This is the same method.

Everything the next iteration depends on lives in :class:`LbfgsState`: the point, its
J and ∇J, the correction pairs, and the counters.  :meth:`LbfgsState.to_arrays` and
:meth:`LbfgsState.from_arrays` turn it into plain arrays and scalars for a checkpoint,
and an iteration started from a restored state is bit-for-bit the iteration the
original run would have made: resume is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamae.compute.direction import PROJECT_BATCH, combine, compact_weights, project
from streamae.options import DEFAULT_LBFGS_PAIRS, DEFAULT_TOLERANCE_WINDOW

# minFunc's defaults for the notes' exercise (the pairs kept: DEFAULT_LBFGS_PAIRS).
# The relative-progress rule's window (iterations), see relative_progress_reason.
DEFAULT_WINDOW = DEFAULT_TOLERANCE_WINDOW
DEFAULT_C1 = 1e-4
DEFAULT_C2 = 0.9
# Skip a correction pair whose curvature y·s is this small (minFunc's rule): it would
# make the inverse-Hessian estimate indefinite or wildly scaled.
CURVATURE_EPSILON = 1e-10

# A function returning (J, ∇J) at a point: theta (p,) -> (float, (p,) float64).
ValueAndGradient = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class StopRules:
    """When the optimisation ends (whichever comes first).

    ``max_iter`` is the iteration number at which to stop, counted over the whole run;
    ``first_iteration`` is where the iterations this budget counts begin (a warm start's
    later stage begins after the earlier stages' iterations), and ``counted`` names them
    in the finish line ("full-data iterations").  ``tolerance`` and ``window``: the
    relative-progress rule (:func:`relative_progress_reason`); 0 turns it off.
    """

    max_iter: int = 400
    grad_tol: float = 1e-5  # on max |∇J|, minFunc's optTol
    progress_tol: float = 1e-9  # on |ΔJ| and on max |Δθ|, minFunc's progTol
    max_line_evals: int = 25
    c1: float = DEFAULT_C1
    c2: float = DEFAULT_C2
    tolerance: float = 0.0
    window: int = DEFAULT_WINDOW
    first_iteration: int = 0
    counted: str = "iterations"

    @property
    def budget(self) -> int:
        """The iterations this budget allows from ``first_iteration`` on."""
        return self.max_iter - self.first_iteration


def relative_progress_reason(costs: Sequence[float], rules: StopRules) -> str:
    """Why to stop when J fell by less than ``rules.tolerance`` of its value over the last
    ``rules.window`` iterations, else "".

    ``costs``: J after each iteration counted by ``rules`` (the stage's own, oldest
    first); the rule needs ``window + 1`` of them.  minFunc's absolute |ΔJ| < 1e-9 never
    stops a run on 10⁶ rows, whose J still moves by ~1e-6 per iteration long after the
    model stopped changing in any way that matters; a relative drop over several
    iterations does, and does not fire on one short step of a run that is still falling.
    """
    if rules.tolerance <= 0.0 or len(costs) <= rules.window:
        return ""
    before, now = float(costs[-1 - rules.window]), float(costs[-1])
    drop = (before - now) / max(abs(now), 1e-300)
    if drop >= rules.tolerance:
        return ""
    return (
        f"J fell by {max(drop, 0.0):.2g} of its value over the last {rules.window} {rules.counted}, "
        f"less than the tolerance {rules.tolerance:g}: the model is done"
    )


@dataclass
class LbfgsState:
    """The optimizer's complete state at an iteration boundary.

    x, g: (p,) float64 point and gradient; f: J there.  s_pairs, y_pairs: (memory, p)
    ring buffers of the correction pairs, the newest at ``(head - 1) % memory``;
    ``pairs`` of them are valid.  sy, yy: (memory, memory) Gram matrices of the pairs by
    ring slot, sy[i, j] = s_i·y_j and yy[i, j] = y_i·y_j, filled in for a slot j whose
    ``projected[j]`` is set (see :mod:`streamae.compute.direction`); they are derived
    from the pairs, so a checkpoint does not store them.
    """

    x: np.ndarray
    f: float
    g: np.ndarray
    s_pairs: np.ndarray
    y_pairs: np.ndarray
    sy: np.ndarray
    yy: np.ndarray
    projected: np.ndarray
    pairs: int = 0
    head: int = 0
    iteration: int = 0
    evaluations: int = 1
    finished: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def start(cls, x0: np.ndarray, f0: float, g0: np.ndarray, memory: int = DEFAULT_LBFGS_PAIRS):
        """The state before the first iteration, at x0 with J = f0 and ∇J = g0."""
        p = x0.shape[0]
        return cls(
            x=np.array(x0, dtype=np.float64),
            f=float(f0),
            g=np.array(g0, dtype=np.float64),
            s_pairs=np.zeros((memory, p)),
            y_pairs=np.zeros((memory, p)),
            sy=np.zeros((memory, memory)),
            yy=np.zeros((memory, memory)),
            projected=np.zeros(memory, dtype=bool),
        )

    @property
    def memory(self) -> int:
        """How many correction pairs are kept."""
        return self.s_pairs.shape[0]

    def oldest_first(self) -> np.ndarray:
        """The ring slots of the valid pairs, oldest first; (pairs,) int64."""
        return (self.head - self.pairs + np.arange(self.pairs, dtype=np.int64)) % self.memory

    def ordered_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The valid pairs (pairs, p) each, oldest first (copies)."""
        order = self.oldest_first()
        return self.s_pairs[order], self.y_pairs[order]

    def forget_pairs(self) -> None:
        """Drop every pair (a restart from steepest descent); the next is stored in slot 0."""
        self.pairs = 0
        self.head = 0

    def to_arrays(self) -> dict:
        """The state as arrays and scalars for a checkpoint.

        The pairs are the ring's first ``pairs`` rows as they lie, with ``oldest`` the
        slot of the oldest: views, not copies, so that a checkpoint writes 2·pairs·p
        values without first copying them (write them before the next iteration).  The
        valid pairs always start at slot 0: the ring fills from 0, and a restart empties it.
        """
        full = self.pairs == self.memory
        return {
            "x": self.x.copy(),
            "g": self.g.copy(),
            "s_pairs": self.s_pairs[: self.pairs],
            "y_pairs": self.y_pairs[: self.pairs],
            "oldest": int(self.head if full else 0),
            "f": float(self.f),
            "memory": int(self.memory),
            "iteration": int(self.iteration),
            "evaluations": int(self.evaluations),
            "finished": self.finished,
        }

    @classmethod
    def from_arrays(cls, arrays: dict) -> LbfgsState:
        """Rebuild a state written by :meth:`to_arrays` (without ``oldest``, as older
        checkpoints were: the pairs oldest first)."""
        x = np.asarray(arrays["x"], dtype=np.float64)
        memory = int(arrays["memory"])
        state = cls.start(x, float(arrays["f"]), np.asarray(arrays["g"], dtype=np.float64), memory)
        s_valid = np.asarray(arrays["s_pairs"], dtype=np.float64).reshape(-1, x.shape[0])
        y_valid = np.asarray(arrays["y_pairs"], dtype=np.float64).reshape(-1, x.shape[0])
        pairs = s_valid.shape[0]
        state.s_pairs[:pairs] = s_valid
        state.y_pairs[:pairs] = y_valid
        state.pairs = pairs
        state.head = (int(arrays.get("oldest", 0)) + pairs) % memory
        state.iteration = int(arrays["iteration"])
        state.evaluations = int(arrays["evaluations"])
        state.finished = str(arrays.get("finished", ""))
        return state

    def add_pair(self, s: np.ndarray, y: np.ndarray) -> bool:
        """Store a correction pair unless its curvature is too small; True if stored."""
        if _dot(y, s) <= CURVATURE_EPSILON:
            return False
        self.s_pairs[self.head] = s
        self.y_pairs[self.head] = y
        self.projected[self.head] = False
        self.head = (self.head + 1) % self.memory
        self.pairs = min(self.pairs + 1, self.memory)
        return True


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """a·b for (p,) vectors, summed as the direction's sums are (thread-count independent)."""
    out = np.empty((1, 1))
    rows = np.zeros(1, dtype=np.int64)
    project(
        np.ascontiguousarray(a, dtype=np.float64)[None],
        rows,
        np.ascontiguousarray(b, dtype=np.float64)[None],
        out,
    )
    return float(out[0, 0])


def _project(state: LbfgsState, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sᵀ∇J and Yᵀ∇J over the valid pairs (in ``order``), filling in the Gram matrices'
    entries of every pair not yet projected in the same sweeps."""
    pending = [int(slot) for slot in order if not state.projected[slot]]
    while True:
        batch, pending = pending[:PROJECT_BATCH], pending[PROJECT_BATCH:]
        vectors = np.empty((len(batch) + 1, state.g.shape[0]))
        vectors[: len(batch)] = state.y_pairs[batch]
        vectors[-1] = state.g
        s_products = np.empty((order.shape[0], vectors.shape[0]))
        y_products = np.empty_like(s_products)
        project(state.s_pairs, order, vectors, s_products)
        project(state.y_pairs, order, vectors, y_products)
        for column, slot in enumerate(batch):
            state.sy[order, slot] = s_products[:, column]
            state.yy[order, slot] = y_products[:, column]
            state.yy[slot, order] = y_products[:, column]
            state.projected[slot] = True
        if not pending:
            return s_products[:, -1], y_products[:, -1]


def search_direction(state: LbfgsState) -> np.ndarray:
    """−H∇J from the stored pairs (L-BFGS's inverse-Hessian estimate, H₀ = γI); (p,).

    γ = s·y / y·y of the newest pair, as in the two-loop recursion; the compact form
    computes the same product in two sweeps over the pairs (see
    :mod:`streamae.compute.direction`).
    """
    if state.pairs == 0:
        return -state.g
    order = state.oldest_first()
    s_gradient, y_gradient = _project(state, order)
    newest = order[-1]
    gamma = state.sy[newest, newest] / state.yy[newest, newest]
    grid = np.ix_(order, order)
    s_weights, y_weights = compact_weights(state.sy[grid], state.yy[grid], s_gradient, y_gradient, gamma)
    return combine(state.g, gamma, state.s_pairs, s_weights, state.y_pairs, y_weights, order)


@dataclass(frozen=True)
class LineSearchResult:
    """The accepted step: t, J and ∇J at x + t·d, and how many evaluations it took."""

    step: float
    f: float
    g: np.ndarray
    evaluations: int
    satisfied: bool


def cubic_minimizer(t1: float, f1: float, d1: float, t2: float, f2: float, d2: float) -> float:
    """Minimiser of the cubic through (t1, f1, d1) and (t2, f2, d2); NaN if it has none."""
    if t1 == t2:
        return math.nan
    theta = d1 + d2 - 3.0 * (f1 - f2) / (t1 - t2)
    radicand = theta * theta - d1 * d2
    if radicand < 0.0:
        return math.nan
    gamma = math.copysign(math.sqrt(radicand), t2 - t1)
    denominator = d2 - d1 + 2.0 * gamma
    if denominator == 0.0:
        return math.nan
    return t2 - (t2 - t1) * (d2 + gamma - theta) / denominator


def _interpolate(lo: tuple, hi: tuple, low_bound: float, high_bound: float) -> float:
    """A cubic-interpolated trial step inside [low_bound, high_bound], else the middle."""
    trial = cubic_minimizer(*lo, *hi)
    if not math.isfinite(trial) or not (low_bound <= trial <= high_bound):
        return 0.5 * (low_bound + high_bound)
    return trial


def _extrapolate(previous: tuple, current: tuple, low_bound: float, high_bound: float) -> float:
    """A cubic-extrapolated longer step, clamped to [low_bound, high_bound] (minFunc's rule)."""
    trial = cubic_minimizer(*previous, *current)
    if not math.isfinite(trial):
        return high_bound
    return min(max(trial, low_bound), high_bound)


def wolfe_line_search(
    fun: ValueAndGradient,
    x: np.ndarray,
    f0: float,
    g0: np.ndarray,
    direction: np.ndarray,
    step: float,
    rules: StopRules,
) -> LineSearchResult:
    """A step satisfying the strong Wolfe conditions along ``direction`` (Nocedal & Wright 3.5).

    Brackets an acceptable step by extrapolation, then zooms with safeguarded cubic
    interpolation.  A trial with a non-finite J is treated as too long.  If the
    evaluation budget runs out, the best point found is returned with
    ``satisfied=False`` (it may be no better than x).
    """
    slope0 = float(g0 @ direction)
    best = (0.0, f0, g0)
    previous = (0.0, f0, slope0)
    evaluations = 0
    bracket: tuple[tuple, tuple] | None = None

    def evaluate(t: float) -> tuple[float, np.ndarray, float]:
        f, g = fun(x + t * direction)
        return f, g, float(g @ direction) if math.isfinite(f) else math.nan

    # Phase 1: find a bracket or an acceptable step.
    while evaluations < rules.max_line_evals:
        f, g, slope = evaluate(step)
        evaluations += 1
        if not (math.isfinite(f) and math.isfinite(slope)):
            step = 0.5 * (previous[0] + step)  # too far: back off towards the last good step
            continue
        if f < best[1]:
            best = (step, f, g)
        if f > f0 + rules.c1 * step * slope0 or (evaluations > 1 and f >= previous[1]):
            bracket = (previous, (step, f, slope))
            break
        if abs(slope) <= -rules.c2 * slope0:
            return LineSearchResult(step, f, g, evaluations, True)
        if slope >= 0.0:
            bracket = ((step, f, slope), previous)
            break
        current = (step, f, slope)
        low, high = step + 0.01 * (step - previous[0]), 10.0 * step
        step = _extrapolate(previous, current, low, high)
        previous = current

    # Phase 2: zoom inside the bracket (lo always has the lower J of the two ends).
    while bracket is not None and evaluations < rules.max_line_evals:
        lo, hi = bracket
        width = abs(hi[0] - lo[0])
        if width * float(np.max(np.abs(direction))) < 1e-15:
            break
        left, right = min(lo[0], hi[0]), max(lo[0], hi[0])
        # Keep trials away from the ends so the bracket shrinks each time.
        margin = 0.1 * (right - left)
        step = _interpolate(lo, hi, left + margin, right - margin)
        f, g, slope = evaluate(step)
        evaluations += 1
        if not (math.isfinite(f) and math.isfinite(slope)):
            bracket = (lo, (step, math.inf, math.nan))
            continue
        if f < best[1]:
            best = (step, f, g)
        if f > f0 + rules.c1 * step * slope0 or f >= lo[1]:
            bracket = (lo, (step, f, slope))
            continue
        if abs(slope) <= -rules.c2 * slope0:
            return LineSearchResult(step, f, g, evaluations, True)
        if slope * (hi[0] - lo[0]) >= 0.0:
            hi = lo
        bracket = ((step, f, slope), hi)
    return LineSearchResult(best[0], best[1], best[2], evaluations, False)


@dataclass(frozen=True)
class StepReport:
    """What one iteration did."""

    iteration: int
    f: float
    grad_norm: float
    step: float
    evaluations: int
    finished: str


def lbfgs_iteration(fun: ValueAndGradient, state: LbfgsState, rules: StopRules) -> StepReport:
    """Advance ``state`` by one L-BFGS iteration in place and report it.

    Sets ``state.finished`` to the reason when a stopping rule is met (the iteration
    that meets it is still taken when it makes progress).
    """
    direction = search_direction(state)
    slope = float(state.g @ direction)
    if not slope < 0.0:
        # The model lost descent (rounding in float32 sums): restart from steepest descent.
        state.forget_pairs()
        direction = -state.g.copy()
        slope = float(state.g @ direction)
    step = 1.0
    if state.iteration == 0 and state.pairs == 0:
        step = min(1.0, 1.0 / max(float(np.sum(np.abs(state.g))), 1e-300))
    result = wolfe_line_search(fun, state.x, state.f, state.g, direction, step, rules)
    state.evaluations += result.evaluations
    if result.step == 0.0 or not result.f < state.f:
        state.finished = "line search found no lower J"
        return StepReport(state.iteration, state.f, _norm(state.g), 0.0, result.evaluations, state.finished)

    s = result.step * direction
    y = result.g - state.g
    f_change = state.f - result.f
    state.add_pair(s, y)
    state.x = state.x + s
    state.f = result.f
    state.g = result.g
    state.iteration += 1
    if float(np.max(np.abs(state.g))) <= rules.grad_tol:
        state.finished = f"gradient below {rules.grad_tol:g}"
    elif f_change < rules.progress_tol:
        state.finished = f"change in J below {rules.progress_tol:g}"
    elif float(np.max(np.abs(s))) < rules.progress_tol:
        state.finished = f"step below {rules.progress_tol:g}"
    elif state.iteration >= rules.max_iter:
        state.finished = f"reached {rules.budget} {rules.counted}"
    return StepReport(
        state.iteration, state.f, _norm(state.g), result.step, result.evaluations, state.finished
    )


def _norm(vector: np.ndarray) -> float:
    return float(np.linalg.norm(vector))


def minimize(
    fun: ValueAndGradient,
    x0: np.ndarray,
    rules: StopRules | None = None,
    memory: int = DEFAULT_LBFGS_PAIRS,
    callback: Callable[[LbfgsState, StepReport], None] | None = None,
) -> LbfgsState:
    """Minimise ``fun`` from x0 (p,) by L-BFGS; returns the final state.

    ``callback(state, report)`` runs after each iteration (history, checkpoints).
    """
    rules = rules or StopRules()
    f0, g0 = fun(np.asarray(x0, dtype=np.float64))
    state = LbfgsState.start(x0, f0, g0, memory)
    if rules.max_iter <= 0:
        state.finished = "no iterations asked"
    costs: list[float] = []
    while not state.finished:
        report = lbfgs_iteration(fun, state, rules)
        if report.step > 0.0:
            costs.append(state.f)
            state.finished = state.finished or relative_progress_reason(costs, rules)
        if callback is not None:
            callback(state, report)
    return state
