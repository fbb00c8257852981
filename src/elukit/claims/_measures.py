"""The measurements that decide claims: theory computations and reads of trained arms.

Each is a `Measurement`: its kind (``theory`` or ``experiments``) and a function of a `Context`
returning `Evidence` rows of paired differences (treatment - baseline). Theory rows come from
elukit's exact functions and Gaussian theory (`elukit.theory`) or from Monte Carlo on random
networks with fixed seeds; depth claims from deep fully connected networks at initialisation
(``deep-fc``, depth >= 32) beside the mean-field prediction; experimental rows from arms trained
until their validation accuracy stops improving, paired by seed: per regime and dataset one row
with each arm at its own tuned rate (tuned on seeds no comparison uses) and one row per grid point
with both arms at the same rate (``lr``: {arm: value} on every row). Every row carries ``depth``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np

from elukit._registry import get, parse
from elukit.claims._context import DEEP_REGIME, REGIMES, Arm, ArmResult, Context, Tuned
from elukit.claims._rules import Evidence
from elukit.theory import alpha_dropout_constants, depth_scales, fixed_point, gain, gradient_gain, moments, propagate


@dataclasses.dataclass(frozen=True)
class Measurement:
    kind: str
    """"theory" or "experiments"."""
    function: Callable[[Context], list[Evidence]]
    description: str

    def __call__(self, context: Context) -> list[Evidence]:
        return self.function(context)


def theory(description: str) -> Callable[[Callable[[Context], list[Evidence]]], Measurement]:
    return lambda function: Measurement("theory", function, description)


def experiments(description: str) -> Callable[[Callable[[Context], list[Evidence]]], Measurement]:
    return lambda function: Measurement("experiments", function, description)


def _one_thread(function):
    """Run `function` with BLAS on one thread (threadpoolctl, where installed): the random networks'
    small matrix products run 25x slower when BLAS threads fight for 2 busy cores (measured)."""
    import contextlib
    import functools

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(1)
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            limits = contextlib.nullcontext()
        with limits:
            return function(*args, **kwargs)

    return wrapped


ALPHAS = (0.5, 1.0, 1.5, 2.0)
STDS = (0.5, 1.0, 2.0)


def _exact(regime: str, comparison: str, treatment, baseline, note: str = "", **row) -> Evidence:
    treatment, baseline = np.asarray(treatment, dtype=np.float64).ravel(), np.asarray(baseline, dtype=np.float64).ravel()
    return Evidence(regime, comparison, treatment - baseline, True, treatment, baseline, note, **row)


def _paired(regime: str, comparison: str, treatment, baseline, note: str = "", **row) -> Evidence:
    """Paired differences by seed; a pair with a non-finite value (a diverged run, a target never
    reached) is dropped and counted in the note, never replaced by a number. `row`: the further
    `Evidence` fields (applies, depth, lr, fields)."""
    treatment, baseline = np.asarray(treatment, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    finite = np.isfinite(treatment) & np.isfinite(baseline)
    if not finite.all():
        dropped = f"{int((~finite).sum())} of {len(finite)} pairs dropped (non-finite)"
        note = f"{note}; {dropped}" if note else dropped
    return Evidence(regime, comparison, treatment[finite] - baseline[finite], False, treatment, baseline, note, **row)


def _settings(context: Context):
    for regime in context.profile.regimes:
        for dataset in context.profile.datasets:
            if context.profile.trains(regime, dataset):
                yield regime, dataset, f"{regime}/{dataset}"


# -- theory ------------------------------------------------------------------------------------------
@theory("P[f'(z) = 0] for z ~ N(0, s^2), s in {0.5, 1, 2}, ELU alpha in {0.5, 1, 1.5, 2}, closed form")
def theory_gradient_sparsity(context: Context) -> list[Evidence]:
    elu = [float(moments("elu", 0.0, s, alpha=a).zero_gradient_probability) for a in ALPHAS for s in STDS]
    relu = [float(moments("relu", 0.0, s).zero_gradient_probability) for a in ALPHAS for s in STDS]
    return [_exact("theory", "elu - relu", elu, relu, "Gaussian pre-activations, every (alpha, std) of the grid")]


SMOOTH_ALPHAS = (0.25, 0.5, 0.9, 1.0, 1.1, 2.0, 4.0)
SMOOTH_STEPS = (1e-4, 1e-5, 1e-6)
SMOOTH_TOLERANCE = 1e-3


def derivative_jump(alpha: float, step: float) -> float:
    """The jump of f' across 0 read from the function alone: the right difference quotient
    (f(h) - f(0)) / h minus the left one (f(0) - f(-h)) / h, in float64. For ELU it is
    1 - alpha (1 - h/2 + O(h^2)); the kernel's convention for f'(0) plays no part."""
    f = get("elu", alpha=alpha).value
    zero = float(f(np.float64(0.0)))
    right = (float(f(np.float64(step))) - zero) / step
    left = (zero - float(f(np.float64(-step)))) / step
    return right - left


@theory(f"jump of f' across 0 from one-sided difference quotients of f (steps {', '.join(f'{h:g}' for h in SMOOTH_STEPS)}), "
        f"alpha in {SMOOTH_ALPHAS}: continuous where |jump| < {SMOOTH_TOLERANCE:g} at every step")
def theory_derivative_jump(context: Context) -> list[Evidence]:
    agreement, jumps = [], {}
    for alpha in SMOOTH_ALPHAS:
        measured = [derivative_jump(alpha, h) for h in SMOOTH_STEPS]
        jumps[f"{alpha:g}"] = measured[-1]
        continuous = all(abs(j) < SMOOTH_TOLERANCE for j in measured)
        agreement.append(1.0 if continuous == (alpha == 1.0) else -1.0)
    return [_exact("theory", "(f' continuous at 0, numerically) == (alpha == 1): +1 agrees, -1 disagrees", agreement,
                   np.zeros(len(SMOOTH_ALPHAS)), "jump at h = 1e-6 per alpha: " + ", ".join(
                       f"{a}: {j:+.3g}" for a, j in jumps.items()), fields={"jump": jumps})]


@theory("|E f(z)| for z ~ N(0, s^2), ELU alpha in {0.5, 1, 1.5, 2} vs ReLU; and E f decreasing in alpha; closed form")
def theory_mean_activation(context: Context) -> list[Evidence]:
    elu = [abs(float(moments("elu", 0.0, s, alpha=a).mean)) for a in ALPHAS for s in STDS]
    relu = [abs(float(moments("relu", 0.0, s).mean)) for a in ALPHAS for s in STDS]
    larger = [float(moments("elu", 0.0, s, alpha=b).mean) for a, b in zip(ALPHAS, ALPHAS[1:]) for s in STDS]
    smaller = [float(moments("elu", 0.0, s, alpha=a).mean) for a, b in zip(ALPHAS, ALPHAS[1:]) for s in STDS]
    return [_exact("theory", "|mean| elu - |mean| relu", elu, relu, "every (alpha, std) of the grid"),
            _exact("theory (alpha)", "mean elu(next alpha) - mean elu(alpha)", larger, smaller,
                   "alpha tunes the mean: it falls as alpha grows")]


VARIANCE_ACTIVATIONS = ("elu", "elu:alpha=2", "selu", "tanh", "gelu", "silu")
VARIANCE_STARTS = (1.0, 0.25, 4.0)
"""Input variances q0: 1 is the fixed point the derived gain is made for; 0.25 and 4 perturb it."""


@_one_thread
def _random_net_log_variance(activation: str, width: int, depth: int, seed: int, gain_value: float,
                             start: float) -> float:
    """ln(variance of the last layer's pre-activations) in one random MLP with N(0, gain^2/width)
    weights and zero biases (float64), fed f(z) for 512 samples of width pre-activations
    z ~ N(0, q0) (at q0 = 1 the first layer starts at the derived gain's fixed point q* = 1)."""
    spec = parse(activation)
    rng = np.random.default_rng([seed, width, depth, int(round(100 * start))])
    z = math.sqrt(start) * rng.standard_normal((512, width))
    for _ in range(depth):
        z = spec.value(z) @ (rng.standard_normal((width, width)) * (gain_value / math.sqrt(width)))
    return math.log(float(z.var()))


@theory("ln q_L, the pre-activation variance after L = the profile's deep depth layers (target 1): elukit.theory.propagate "
        "with the derived gain from inputs f(z), z ~ N(0, q0), q0 in {1, 0.25, 4} (exact), and real random MLPs (the "
        f"profile's width, 512 such inputs, one net per seed) for {', '.join(VARIANCE_ACTIVATIONS)}; each row states "
        "the forward gain and the gain that would keep the gradient's norm (their mismatch)")
def variance_through_depth(context: Context) -> list[Evidence]:
    rows = []
    depth = context.profile.deep_depths[0]
    width = context.profile.random_net_width
    for activation in VARIANCE_ACTIVATIONS:
        spec = parse(activation)
        g, backward = gain(spec), gradient_gain(spec)
        fields = {"forward_gain": g, "gradient_gain": backward,
                  "gain_mismatch": f"forward gain {g:.4f} against gradient gain {backward:.4f}"}
        for start in VARIANCE_STARTS:
            first = moments(spec, 0.0, math.sqrt(start))
            q = propagate(spec, depth, g * g, input_mean=float(first.mean),
                          input_variance=float(first.variance)).preactivation_variance
            where = "" if start == 1.0 else f", q0 = {start:g}"
            rows.append(_exact(f"theory {activation}{where}", "ln q_L", [math.log(q[-1])], [0.0],
                               f"gain {g:.4f}; {fields['gain_mismatch']}", depth=depth, fields=fields))
            values = context.cached(f"variance-depth/{activation}/{width}/{depth}/{start}/{context.profile.seeds}", lambda: [
                _random_net_log_variance(activation, width, depth, seed, g, start) for seed in context.seeds])
            rows.append(_paired(f"random MLP {activation}{where}", "ln q_L", values, np.zeros(len(values)),
                                f"width {width}, gain {g:.4f}", depth=depth, fields=fields))
    return rows


@_one_thread
def _selu_random_net(width: int, depth: int, seed: int, start_mean: float, start_variance: float
                     ) -> tuple[list[float], list[float]]:
    """Per-layer (mean, variance) of SELU activations in a random SELU MLP (N(0, 1/width) weights)
    fed inputs of the given mean and variance."""
    spec = get("selu")
    rng = np.random.default_rng([seed, width, depth, 7])
    h = start_mean + math.sqrt(start_variance) * rng.standard_normal((1024, width))
    means, variances = [], []
    for _ in range(depth):
        h = spec.value(h @ (rng.standard_normal((width, width)) / math.sqrt(width)))
        means.append(float(h.mean()))
        variances.append(float(h.var()))
    return means, variances


SELU_DEPTH = 32


def _distance(mean: float, variance: float) -> float:
    """max(|mean|, |variance - 1|): how far (mean, variance) lies from SELU's fixed point (0, 1)."""
    return max(abs(mean), abs(variance - 1.0))


# -- deep fully connected networks at initialisation --------------------------------------------------
DEEP_SAMPLES = 256


@_one_thread
def deep_network_at_init(activation: str, x: np.ndarray, y: np.ndarray, depth: int, width: int, seed: int
                         ) -> dict[str, float]:
    """One deep MLP (depth hidden layers of `width`, N(0, gain^2/fan_in) weights with the activation's
    derived gain, zero biases; float64) at initialisation on a batch of real inputs: ln(|dL/dh_1| /
    |dL/dh_L|) of the cross-entropy loss (h: pre-activations), and the mean and variance of the last
    hidden layer's activations."""
    spec = parse(activation)
    g = gain(spec)
    rng = np.random.default_rng([seed, depth, width, 19])
    a, pre, weights = x, [], []
    for _ in range(depth):
        w = rng.standard_normal((a.shape[1], width)) * (g / math.sqrt(a.shape[1]))
        weights.append(w)
        pre.append(a @ w)
        a = spec.value(pre[-1])
    out = rng.standard_normal((width, int(y.max()) + 1)) / math.sqrt(width)
    logits = a @ out
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    grad = (p / len(y)) @ out.T * spec.derivative(pre[-1])
    last = float(np.linalg.norm(grad))
    for layer in range(depth - 1, 0, -1):
        grad = (grad @ weights[layer].T) * spec.derivative(pre[layer - 1])
    first = float(np.linalg.norm(grad))
    return {"log_ratio": math.log(first / last), "mean": float(a.mean()), "variance": float(a.var())}


def _deep_batch(context: Context) -> tuple[np.ndarray, np.ndarray]:
    split = context.split(context.profile.datasets[0])
    return split.train.x_train[:DEEP_SAMPLES].astype(np.float64), split.train.y_train[:DEEP_SAMPLES].astype(np.int64)


def _deep(context: Context, activation: str, depth: int) -> list[dict[str, float]]:
    width = context.profile.random_net_width

    def compute():
        x, y = _deep_batch(context)
        return [deep_network_at_init(activation, x, y, depth, width, seed) for seed in context.seeds]

    return context.cached(f"deep-init/{activation}/{depth}/{width}/{context.profile.datasets[0]}/{context.profile.seeds}",
                          compute)


def predicted_log_ratio(activation: str, depth: int) -> float:
    """Mean field: ln(|g_1| / |g_L|) = 0.5 (L - 1) ln chi_1 at the derived gain's fixed point
    (`elukit.theory.depth_scales`)."""
    spec = parse(activation)
    return 0.5 * (depth - 1) * math.log(depth_scales(spec, gain(spec) ** 2).chi_1)


def _deep_where(context: Context, depth: int) -> str:
    return f"{DEEP_REGIME} L={depth}/{context.profile.datasets[0]}"


@theory(f"max(|mean|, |var - 1|) of SELU activations: the map's fixed point (exact), the last of {SELU_DEPTH} layers of "
        "random SELU MLPs started at N(0, 1), and the last hidden layer of deep SELU MLPs (the profile's deep depths) "
        "at initialisation on real inputs")
def selu_normalization_theory(context: Context) -> list[Evidence]:
    point = fixed_point("selu")
    rows = [_exact("theory", "distance of the fixed point from (0, 1)", [_distance(point.mean, point.variance)], [0.0])]
    width = context.profile.random_net_width
    values = context.cached(f"selu-random/{width}/{context.profile.seeds}/0/1", lambda: [
        _selu_random_net(width, SELU_DEPTH, seed, 0.0, 1.0) for seed in context.seeds])
    distances = [_distance(means[-1], variances[-1]) for means, variances in values]
    rows.append(_paired("random SELU MLP", "distance from (0, 1) at the last layer", distances, np.zeros(len(distances)),
                        f"width {width}, depth {SELU_DEPTH}, Gaussian inputs", depth=SELU_DEPTH))
    for depth in context.profile.deep_depths:
        deep = _deep(context, "selu", depth)
        distances = [_distance(v["mean"], v["variance"]) for v in deep]
        rows.append(_paired(_deep_where(context, depth), "distance from (0, 1) at the last layer", distances,
                            np.zeros(len(distances)), f"width {width}, LeCun normal, real inputs", depth=depth))
    return rows


@theory("spectral radius of the mean/variance map's Jacobian at SELU's fixed point minus 1 (exact); and in random "
        f"SELU MLPs started at (mean 1, variance 3): distance from (0, 1) after {SELU_DEPTH} layers minus after 1")
def selu_attraction(context: Context) -> list[Evidence]:
    point = fixed_point("selu")
    rows = [_exact("theory", "spectral radius - 1", [point.spectral_radius], [1.0],
                   f"fixed point ({point.mean:.2e}, {point.variance:.6f})")]
    width = context.profile.random_net_width
    values = context.cached(f"selu-random/{width}/{context.profile.seeds}/1/3", lambda: [
        _selu_random_net(width, SELU_DEPTH, seed, 1.0, 3.0) for seed in context.seeds])
    last = [_distance(m[-1], v[-1]) for m, v in values]
    first = [_distance(m[0], v[0]) for m, v in values]
    rows.append(_paired("random SELU MLP", f"distance after layer {SELU_DEPTH} - after layer 1", last, first,
                        f"width {width}", depth=SELU_DEPTH))
    return rows


DROPOUT_RATE = 0.1


@_one_thread
def _alpha_dropout_sample(seed: int, samples: int) -> float:
    """max(|mean|, |var - 1|) after alpha dropout (rate `DROPOUT_RATE`, Klambauer's a, b) of SELU(z),
    z ~ N(0, 1): one Monte Carlo sample of `samples` values."""
    rng = np.random.default_rng([seed, samples, 11])
    x = get("selu").value(rng.standard_normal(samples))
    a, b, saturation = alpha_dropout_constants(DROPOUT_RATE)
    kept = rng.random(samples) >= DROPOUT_RATE
    y = a * np.where(kept, x, saturation) + b
    return _distance(float(y.mean()), float(y.var()))


@theory(f"max(|mean|, |var - 1|) of SELU(z), z ~ N(0, 1), after alpha dropout (rate {DROPOUT_RATE}), "
        "Monte Carlo with 200,000 samples per seed")
def alpha_dropout_moments(context: Context) -> list[Evidence]:
    values = context.cached(f"alpha-dropout/{context.profile.seeds}", lambda: [
        _alpha_dropout_sample(seed, 200_000) for seed in context.seeds])
    return [_paired("Monte Carlo", "distance from (0, 1) after alpha dropout", values, np.zeros(len(values)))]


DEACTIVATION_SLOPES = (0.01, 0.05, 0.1, 0.2, 0.3)
DEACTIVATION_POINTS = (-3.0, -5.0, -8.0)
DEACTIVATION_NOISE = 0.5


def _std(activation: str, x: float, **params) -> float:
    return math.sqrt(float(moments(activation, x, DEACTIVATION_NOISE, **params).variance))


def crossover(slope: float) -> float:
    """The input x < 0 below which ELU (alpha 1) varies less than Leaky ReLU with `slope` under
    N(0, 0.5^2) input noise (bisection on [-30, -0.01]); -inf if ELU never varies less there."""
    def gap(x: float) -> float:
        return _std("elu", x) - _std("leaky_relu", x, slope=slope)

    low, high = -30.0, -0.01
    if gap(low) >= 0:
        return -math.inf
    if gap(high) < 0:
        return high
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if gap(middle) < 0 else (low, middle)
    return 0.5 * (low + high)


@theory(f"std of f(x + e), e ~ N(0, {DEACTIVATION_NOISE}^2), at x in {DEACTIVATION_POINTS}: ELU (alpha 1) against "
        f"Leaky ReLU for each slope in {DEACTIVATION_SLOPES}, closed form; each row states the crossover input below "
        "which ELU varies less")
def deactivation_noise(context: Context) -> list[Evidence]:
    rows = []
    for slope in DEACTIVATION_SLOPES:
        x_star = crossover(slope)
        elu = [_std("elu", x) for x in DEACTIVATION_POINTS]
        leaky = [_std("leaky_relu", x, slope=slope) for x in DEACTIVATION_POINTS]
        rows.append(_exact(f"theory slope {slope:g}", "std elu - std leaky_relu", elu, leaky,
                           f"ELU varies less below x = {x_star:.3g}", fields={"slope": slope, "crossover": _json(x_star)}))
    return rows


def _json(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# -- timing ------------------------------------------------------------------------------------------
def _step_times(context: Context, regime: str, rounds: int, steps: int = 5, repeats: int = 3) -> list[float]:
    """ln(thread CPU time of `steps` ELU training steps / of `steps` ReLU steps), one value per round:
    within a round the two models alternate, each timed `repeats` times and the minimum kept
    (`time.thread_time`: CPU time of this thread only, so time spent waiting for a core under
    background load does not count)."""
    from elukit.experiments.models import build_model
    from elukit.experiments.train import make_optimizer
    from elukit.torch._torch import torch

    split = context.split(context.profile.datasets[0])
    models = {}
    for name in ("relu", "elu"):
        config = context.study_config(Arm(regime, split.train.name, name))
        model = build_model(config.model, context.seeds, split.train.x_train.shape[1:], split.train.classes,
                            parse(name), config.width, config.depth, config.init, config.batch_norm)
        models[name] = (model, make_optimizer(config.optimizer, model.parameters(), config.lr), config.batch_size)
    members = len(context.seeds)

    def run(name: str) -> float:
        model, optimizer, batch = models[name]
        x = torch.from_numpy(split.train.x_train[:batch]).unsqueeze(0).expand(members, -1, -1)
        y = torch.from_numpy(split.train.y_train[:batch]).unsqueeze(0).expand(members, -1)
        started = time.thread_time()
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x).transpose(1, 2), y, reduction="none").mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.thread_time() - started

    run("relu"), run("elu")  # warm-up
    ratios = []
    for _ in range(rounds):
        times = {"relu": math.inf, "elu": math.inf}
        for _ in range(repeats):
            for name in ("relu", "elu"):
                times[name] = min(times[name], run(name))
        ratios.append(math.log(times["elu"] / times["relu"]))
    return ratios


OPERATIONS = {"relu": (0, 1), "elu": (1, 3)}
"""Per element, forward: (transcendental functions, other operations): ReLU max(x, 0); ELU
x > 0 ? x : alpha (exp(x) - 1), i.e. one exp, a subtraction, a multiplication and a select."""


@experiments("ln(thread CPU time of ELU training steps / ReLU steps), same model, data and thread, interleaved, "
             "minimum of 3 repeats per round, one value per round; and the operation count per element (theory)")
def step_cost(context: Context) -> list[Evidence]:
    rows = [_exact("theory", "transcendental functions per element, elu - relu", [OPERATIONS["elu"][0]],
                   [OPERATIONS["relu"][0]], "ELU: one exp per negative element; ReLU: none")]
    for regime in context.profile.regimes:
        ratios = context.cached(f"step-cost/{regime}", lambda regime=regime: _step_times(
            context, regime, context.profile.timing_rounds))
        rows.append(_paired(f"{regime}/{context.profile.datasets[0]}", "ln(t_elu / t_relu)", ratios,
                            np.zeros(len(ratios)), "thread CPU time; not reproducible bit for bit (kept in the store)",
                            depth=REGIMES[regime].config["depth"]))
    return rows


# -- experiments -------------------------------------------------------------------------------------
def _mean_over_layers(values: np.ndarray) -> np.ndarray:
    """Mean over layers (axis 1) of the finite values; NaN (without numpy's empty-slice warning)
    for a seed with none, e.g. a run that diverged."""
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    total = np.where(finite, values, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _layer_mean(result: ArmResult, name: str, transform=lambda v: v) -> np.ndarray:
    return _mean_over_layers(transform(result.layers_at(name)))


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of a training comparison: an activation with its variant and seeds."""

    activation: str
    batch_norm: bool = False
    init: str | None = None
    seed_offset: int = 0

    @property
    def name(self) -> str:
        parts = [self.activation] + (["bn"] if self.batch_norm else []) + ([f"init={self.init}"] if self.init else [])
        if self.seed_offset:
            parts.append(f"seeds+{self.seed_offset}")
        return " ".join(parts)

    def tuned(self, context: Context, regime: str, dataset: str) -> Tuned:
        return context.tuned(regime, dataset, self.activation, self.batch_norm, self.init, self.seed_offset)


def _row_fields(rate: str, results: dict[str, ArmResult], tuned: dict[str, Tuned] | None = None) -> dict:
    fields: dict = {"rate": rate, "cap_hits": {name: r.cap_hits for name, r in results.items()},
                    # training length: the mean checkpoint epoch and the most epochs any seed trained
                    "checkpoint_epoch": {name: float(np.mean(r.best)) for name, r in results.items()},
                    "epochs_trained": {name: int(np.max(_last_trained(r))) for name, r in results.items()}}
    if tuned:
        fields["near_tie"] = {name: t.near_tie for name, t in tuned.items()}
        fields["grid_edge"] = {name: t.edge for name, t in tuned.items()}
    return fields


def _hits(results: dict[str, ArmResult]) -> str:
    hits = {name: r.cap_hits for name, r in results.items() if r.cap_hits}
    return "; cap hit by " + ", ".join(f"{name}: {count} seeds" for name, count in hits.items()) if hits else ""


def tuning_confound(a: Tuned, b: Tuned) -> str:
    """Why a comparison of two arms at their own tuned rates cannot decide, or "": when their rates
    differ and either choice beat its runner-up by no more than one standard error, the difference
    may be the tuning noise's rather than the activation's (two identical arms tuned on different
    seeds then differ significantly: the A/A control of protocol 2), so the matched-rate rows decide."""
    if a.lr != b.lr and (a.near_tie or b.near_tie):
        return f"rates {a.lr:g} and {b.lr:g} differ on a near-tie; the matched-rate rows decide"
    return ""


def compare(context: Context, treatment: Side, baseline: Side, value: Callable[[ArmResult], np.ndarray], label: str,
            matched: bool = True, settings=None) -> list[Evidence]:
    """Per regime and dataset: one row with each side at its own tuned rate, and (`matched`) one row per
    grid point with both at that rate. Every row carries depth, lr ({arm: value}), cap hits, and the
    tuned rows the near-tie and grid-edge flags of each choice."""
    rows = []
    names = (treatment.name, baseline.name)
    for regime, dataset, where in (settings or _settings(context)):
        a, b = treatment.tuned(context, regime, dataset), baseline.tuned(context, regime, dataset)
        depth = REGIMES[regime].config["depth"]
        results = {names[0]: a.result, names[1]: b.result}
        tuned = {names[0]: a, names[1]: b}
        note = ", ".join(t.describe(name) for name, t in tuned.items()) + _hits(results)
        row = _paired(where, label, value(a.result), value(b.result), note, depth=depth,
                      lr={names[0]: a.lr, names[1]: b.lr}, fields=_row_fields("tuned", results, tuned))
        rows.append(dataclasses.replace(row, set_aside=tuning_confound(a, b)))
        if matched:
            for lr in a.grid:
                results = {names[0]: a.grid[lr], names[1]: b.grid[lr]}
                rows.append(_paired(f"{where} @ lr {lr:g}", label, value(a.grid[lr]), value(b.grid[lr]),
                                    f"matched rate{_hits(results)}", depth=depth, lr={names[0]: lr, names[1]: lr},
                                    fields=_row_fields("matched", results)))
    return rows


def _accuracy(result: ArmResult) -> np.ndarray:
    return result.at_best("test_accuracy")


ELU, RELU = Side("elu"), Side("relu")


def _last_trained(result: ArmResult) -> np.ndarray:
    finite = np.isfinite(result.network["train_loss"])
    return finite.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)


def stable_top(tuned: dict[str, Tuned]) -> float:
    """The highest rate of the grid at which every comparison seed of every arm trained without
    diverging (finite training loss at its last epoch and at its checkpoint); the lowest if none."""
    rates = sorted(next(iter(tuned.values())).grid, reverse=True)
    for lr in rates:
        if all(np.all(np.isfinite(t.grid[lr].at_best("train_loss")))
               and np.all(np.isfinite(t.grid[lr].network["train_loss"][np.arange(len(t.grid[lr].best)),
                                                                        _last_trained(t.grid[lr])]))
               for t in tuned.values()):
            return lr
    return rates[-1]


ZERO_SHARE_LIMIT = 0.001
"""'Never zero' cannot be supported where ELU's share of exactly-zero derivatives exceeds 0.1%."""


def _zero_share(result: ArmResult) -> np.ndarray:
    """Per seed, the share of exactly-zero f'(x) over training: averaged over hidden layers and over
    the epochs trained up to the checkpoint (float32 training)."""
    values = result.layers["gradient_sparsity"][:, :, 1:]
    per_epoch = np.stack([_mean_over_layers(values[:, :, e]) for e in range(values.shape[2])], axis=1)
    upto = np.arange(per_epoch.shape[1])[None, :] < result.best[:, None]
    kept = np.where(upto & np.isfinite(per_epoch), per_epoch, np.nan)
    count = np.isfinite(kept).sum(axis=1)
    return np.where(count > 0, np.nansum(np.where(np.isfinite(kept), kept, 0.0), axis=1) / np.maximum(count, 1), np.nan)


@experiments("gradient sparsity (share of exactly zero f'(x)), averaged over layers at each seed's checkpoint, ELU "
             "minus ReLU at tuned and matched rates; and ELU's share of exactly-zero derivatives in float32 training "
             f"at the highest stable rate minus {ZERO_SHARE_LIMIT:g} (never zero: below it)")
def trained_gradient_sparsity(context: Context) -> list[Evidence]:
    rows = compare(context, ELU, RELU, lambda r: _layer_mean(r, "gradient_sparsity"), "elu - relu")
    for regime, dataset, where in _settings(context):
        tuned = {"elu": ELU.tuned(context, regime, dataset), "relu": RELU.tuned(context, regime, dataset)}
        top = stable_top(tuned)
        shares = {name: _zero_share(t.grid[top]) for name, t in tuned.items()}
        mean_share = {name: _json(float(np.nanmean(v))) if np.isfinite(v).any() else None for name, v in shares.items()}
        rows.append(_paired(f"{where} @ highest stable lr {top:g}", f"elu share of f' = 0 - {ZERO_SHARE_LIMIT:g}",
                            shares["elu"], np.full(len(shares["elu"]), ZERO_SHARE_LIMIT),
                            "float32 training; exp underflows below x = -103.97", depth=REGIMES[regime].config["depth"],
                            lr={"elu": top}, fields={"zero_derivative_share": mean_share, "rate": "highest stable"}))
    return rows


@experiments("|mean activation| per hidden layer, averaged over layers, at each seed's checkpoint; tuned and matched rates")
def trained_mean_activation(context: Context) -> list[Evidence]:
    return compare(context, ELU, RELU, lambda r: _layer_mean(r, "mean_activation", np.abs), "|mean| elu - relu")


def _epochs_to(curves: np.ndarray, target: float) -> np.ndarray:
    from elukit.statistics import epochs_to_target

    return epochs_to_target(np.where(np.isfinite(curves), curves, np.inf), target)


@experiments("epochs until the training loss first reaches a target: the highest loss every seed of both arms reaches "
             "(so every pair has a value); tuned and matched rates")
def epochs_to_loss(context: Context) -> list[Evidence]:
    rows = []  # the target depends on both curves, so each row is built from its pair
    for regime, dataset, where in _settings(context):
        a, b = ELU.tuned(context, regime, dataset), RELU.tuned(context, regime, dataset)
        depth = REGIMES[regime].config["depth"]
        pairs = [(where, a.result, b.result, {"elu": a.lr, "relu": b.lr}, "tuned")]
        pairs += [(f"{where} @ lr {lr:g}", a.grid[lr], b.grid[lr], {"elu": lr, "relu": lr}, "matched") for lr in a.grid]
        for label, ra, rb, lr, rate in pairs:
            curves = [ra.network["train_loss"], rb.network["train_loss"]]
            finite = [np.where(np.isfinite(c), c, np.inf) for c in curves]
            target = float(max(c.min(axis=1).max() for c in finite))
            note = (f"target loss {target:.4f}; " + (", ".join(t.describe(n) for n, t in (("elu", a), ("relu", b)))
                                                     if rate == "tuned" else "matched rate"))
            row = _paired(label, "epochs elu - relu", _epochs_to(curves[0], target), _epochs_to(curves[1], target),
                          note, depth=depth, lr=lr,
                          fields=_row_fields(rate, {"elu": ra, "relu": rb}, {"elu": a, "relu": b} if rate == "tuned" else None))
            rows.append(dataclasses.replace(row, set_aside=tuning_confound(a, b) if rate == "tuned" else ""))
    return rows


@experiments("test accuracy at each seed's checkpoint (best validation accuracy); each arm at its rate tuned on tuning "
             "seeds, and both at every grid point")
def test_accuracy_elu_relu(context: Context) -> list[Evidence]:
    return compare(context, ELU, RELU, _accuracy, "accuracy elu - relu")


@experiments("test accuracy at each seed's checkpoint; tuned (per configuration) and matched rates")
def test_accuracy_elu_vs_relu_bn(context: Context) -> list[Evidence]:
    return compare(context, ELU, Side("relu", True), _accuracy, "accuracy elu - (relu + batch norm)")


@experiments("test accuracy at each seed's checkpoint; tuned (per configuration) and matched rates")
def test_accuracy_elu_bn(context: Context) -> list[Evidence]:
    return compare(context, Side("elu", True), ELU, _accuracy, "accuracy (elu + batch norm) - elu")


@experiments("test accuracy at each seed's checkpoint; SELU with elukit's derived gain (LeCun normal), ReLU with the "
             "regime's init; tuned and matched rates")
def test_accuracy_selu_relu(context: Context) -> list[Evidence]:
    return compare(context, Side("selu", init="gain"), RELU, _accuracy, "accuracy selu - relu")


@experiments("dead-unit fraction (units whose f' was 0 on every training sample of the epoch), averaged over layers, "
             "at the last trained epoch, at the highest rate of the regime's grid at which no seed of either "
             "activation diverged")
def dead_units_high_lr(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        tuned = {"elu": ELU.tuned(context, regime, dataset), "relu": RELU.tuned(context, regime, dataset)}

        def last(result):
            return _mean_over_layers(result.layers_at("dead_fraction", _last_trained(result)))

        top = stable_top(tuned)
        results = {name: t.grid[top] for name, t in tuned.items()}
        rows.append(_paired(f"{where} @ highest stable lr {top:g}", "dead fraction elu - relu", last(results["elu"]),
                            last(results["relu"]), f"lr {top:g}{_hits(results)}", depth=REGIMES[regime].config["depth"],
                            lr={"elu": top, "relu": top}, fields=_row_fields("highest stable", results)))
    return rows


@experiments("accuracy lost to Gaussian input noise (std 0.5 on standardised inputs, one fixed draw): clean minus "
             "noisy test accuracy at each seed's checkpoint; tuned and matched rates")
def noise_drop(context: Context) -> list[Evidence]:
    return compare(context, ELU, RELU, lambda r: r.at_best("test_accuracy") - r.at_best("noisy_test_accuracy"),
                   "accuracy drop elu - relu")


@theory("|ln(|dL/dh_1| / |dL/dh_L|)| of the cross-entropy loss in deep MLPs at initialisation (each activation's "
        "derived gain, real inputs, the profile's deep depths): ELU minus sigmoid and minus tanh; beside it the "
        "mean-field prediction 0.5 (L - 1) |ln chi_1| (elukit.theory.depth_scales)")
def gradient_ratio_vs_saturating(context: Context) -> list[Evidence]:
    rows = []
    for depth in context.profile.deep_depths:
        elu = np.abs([v["log_ratio"] for v in _deep(context, "elu", depth)])
        for other in ("sigmoid", "tanh"):
            theory_elu, theory_other = abs(predicted_log_ratio("elu", depth)), abs(predicted_log_ratio(other, depth))
            rows.append(_exact(f"theory L={depth}", f"|ln ratio| elu - {other}", [theory_elu], [theory_other],
                               "0.5 (L - 1) |ln chi_1| at the derived gain", depth=depth))
            values = np.abs([v["log_ratio"] for v in _deep(context, other, depth)])
            rows.append(_paired(_deep_where(context, depth), f"|ln ratio| elu - {other}", elu, values,
                                f"width {context.profile.random_net_width}", depth=depth))
    return rows


@theory("ln(|dL/dh_1| / |dL/dh_L|) in deep SELU MLPs at initialisation (LeCun normal, real inputs, the profile's deep "
        "depths), margin ln 2 for the stated depth; beside it the mean-field prediction 0.5 (L - 1) ln chi_1")
def selu_gradient_ratio(context: Context) -> list[Evidence]:
    rows = []
    for depth in context.profile.deep_depths:
        rows.append(_exact(f"theory L={depth}", "predicted ln ratio selu", [predicted_log_ratio("selu", depth)], [0.0],
                           "0.5 (L - 1) ln chi_1 at SELU's fixed point", depth=depth))
        ratio = [v["log_ratio"] for v in _deep(context, "selu", depth)]
        rows.append(_paired(_deep_where(context, depth), "ln ratio selu", ratio, np.zeros(len(ratio)),
                            f"width {context.profile.random_net_width}, per layer {np.mean(ratio) / max(depth - 1, 1):+.4f}",
                            depth=depth))
    return rows


@experiments("max over hidden layers of max(|mean activation|, |activation variance - 1|) in trained SELU networks (no "
             "normalisation, derived gain) at each seed's checkpoint: shown only, the regimes are shallower than 32")
def selu_trained_moments(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        tuned = context.tuned(regime, dataset, "selu", init="gain")
        result = tuned.result
        means, variances = result.layers_at("mean_activation"), result.layers_at("activation_variance")
        distance = np.max(np.maximum(np.abs(means), np.abs(variances - 1.0)), axis=1)
        depth = REGIMES[regime].config["depth"]
        rows.append(_paired(where, "distance from (0, 1)", distance, np.zeros(len(distance)),
                            f"depth {depth} < {DEEP_MINIMUM}: not a deep network", applies=depth >= DEEP_MINIMUM,
                            depth=depth, lr={"selu": tuned.lr}))
    return rows


DEEP_MINIMUM = 32
ALPHA_GRID = ("elu:alpha=0.5", "elu", "elu:alpha=2")


@experiments("test accuracy at each seed's checkpoint for ELU with alpha 0.5, 1 and 2, each at its own tuned rate "
             "(every pair), and alpha 2 against 0.5 at every grid point")
def alpha_accuracy(context: Context) -> list[Evidence]:
    low, middle, high = (Side(a) for a in ALPHA_GRID)
    rows = compare(context, high, low, _accuracy, "accuracy alpha 2 - alpha 0.5")
    rows += compare(context, middle, low, _accuracy, "accuracy alpha 1 - alpha 0.5", matched=False)
    rows += compare(context, high, middle, _accuracy, "accuracy alpha 2 - alpha 1", matched=False)
    return rows


STABLE_WITHIN = 0.01
"""A rate is 'as good' for a seed when its checkpoint's validation accuracy is within 1 point of the seed's best."""


def _largest_good_rate(tuned: Tuned) -> np.ndarray:
    rates = sorted(tuned.grid)
    scores = np.stack([np.where(np.isfinite(s := tuned.grid[lr].at_best("validation_accuracy")), s, 0.0) for lr in rates])
    good = scores >= scores.max(axis=0, keepdims=True) - STABLE_WITHIN
    return np.asarray(rates)[len(rates) - 1 - np.argmax(good[::-1], axis=0)]


@experiments("log2 of the largest rate of the grid whose validation accuracy (at its checkpoint) lies within 1 point of "
             "the seed's best over the whole accuracy-vs-rate curve, ELU minus ReLU; the mean curves in the row")
def best_learning_rate(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        elu, relu = ELU.tuned(context, regime, dataset), RELU.tuned(context, regime, dataset)
        curves = {name: {f"{lr:g}": _json(float(np.nanmean(t.grid[lr].at_best("validation_accuracy")))) for lr in sorted(t.grid)}
                  for name, t in (("elu", elu), ("relu", relu))}
        rows.append(_paired(where, "log2 largest good lr elu - relu", np.log2(_largest_good_rate(elu)),
                            np.log2(_largest_good_rate(relu)), "grid " + ", ".join(f"{lr:g}" for lr in sorted(elu.grid)),
                            depth=REGIMES[regime].config["depth"], lr={"elu": elu.lr, "relu": relu.lr},
                            fields={"validation_accuracy_curve": curves, "rate": "whole curve"}))
    return rows


@experiments("test accuracy at each seed's checkpoint, ELU with He init (weights N(0, 2/fan_in)) against ELU with "
             "elukit's derived gain (1.2452), each with its rate tuned per initialisation; and at every grid point")
def he_against_gain(context: Context) -> list[Evidence]:
    return compare(context, Side("elu", init="he"), Side("elu", init="gain"), _accuracy, "accuracy he - gain")


@experiments("test accuracy at each seed's checkpoint: ReLU on seeds n..2n-1 (and its own tuning seeds) against ReLU on "
             "seeds 0..n-1, each tuned through the whole pipeline (A/A), and both at every grid point")
def negative_control(context: Context) -> list[Evidence]:
    other = Side("relu", seed_offset=context.profile.seeds)
    return compare(context, other, RELU, _accuracy, "accuracy relu(other seeds) - relu")


PLANTED_EFFECT = 0.03
"""The positive control's planted effect: 3 accuracy points."""


@experiments(f"test accuracy at each seed's checkpoint: ReLU on seeds n..2n-1 plus a planted {PLANTED_EFFECT:g} (3 "
             "accuracy points) against ReLU on seeds 0..n-1, each tuned through the whole pipeline, and both at every "
             "grid point")
def positive_control(context: Context) -> list[Evidence]:
    other = Side("relu", seed_offset=context.profile.seeds)
    return compare(context, other, RELU, lambda r: _accuracy(r) + (PLANTED_EFFECT if r.arm.seed_offset else 0.0),
                   f"accuracy (relu(other seeds) + {PLANTED_EFFECT:g}) - relu")


__all__ = ["Measurement", "Side", "compare", "crossover", "deep_network_at_init", "derivative_jump", "predicted_log_ratio",
           "stable_top"]
