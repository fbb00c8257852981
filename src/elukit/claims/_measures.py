"""The measurements that decide claims: theory computations and reads of trained arms.

Each is a `Measurement`: its kind (``theory`` or ``experiments``) and a function of a `Context`
returning `Evidence` rows of paired differences (treatment - baseline). Theory rows come from
elukit's exact functions and Gaussian theory (`elukit.theory`) or from Monte Carlo on random
networks with fixed seeds; experimental rows from arms trained until their validation loss stops
improving, one row per regime and dataset, paired by seed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np

from elukit._registry import get, parse
from elukit.claims._context import Arm, Context
from elukit.claims._rules import Evidence
from elukit.theory import alpha_dropout_constants, fixed_point, gain, moments, propagate


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


ALPHAS = (0.5, 1.0, 1.5, 2.0)
STDS = (0.5, 1.0, 2.0)


def _exact(regime: str, comparison: str, treatment, baseline, note: str = "") -> Evidence:
    treatment, baseline = np.asarray(treatment, dtype=np.float64).ravel(), np.asarray(baseline, dtype=np.float64).ravel()
    return Evidence(regime, comparison, treatment - baseline, True, treatment, baseline, note)


def _paired(regime: str, comparison: str, treatment, baseline, note: str = "") -> Evidence:
    """Paired differences by seed; a pair with a non-finite value (a diverged run, a target never
    reached) is dropped and counted in the note, never replaced by a number."""
    treatment, baseline = np.asarray(treatment, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    finite = np.isfinite(treatment) & np.isfinite(baseline)
    if not finite.all():
        dropped = f"{int((~finite).sum())} of {len(finite)} pairs dropped (non-finite)"
        note = f"{note}; {dropped}" if note else dropped
    return Evidence(regime, comparison, treatment[finite] - baseline[finite], False, treatment, baseline, note)


def _settings(context: Context):
    for regime in context.profile.regimes:
        for dataset in context.profile.datasets:
            yield regime, dataset, f"{regime}/{dataset}"


# -- theory ------------------------------------------------------------------------------------------
@theory("P[f'(z) = 0] for z ~ N(0, s^2), s in {0.5, 1, 2}, ELU alpha in {0.5, 1, 1.5, 2}, closed form")
def theory_gradient_sparsity(context: Context) -> list[Evidence]:
    elu = [float(moments("elu", 0.0, s, alpha=a).zero_gradient_probability) for a in ALPHAS for s in STDS]
    relu = [float(moments("relu", 0.0, s).zero_gradient_probability) for a in ALPHAS for s in STDS]
    return [_exact("theory", "elu - relu", elu, relu, "Gaussian pre-activations, every (alpha, std) of the grid")]


@theory("jump of f' at 0 (f'(0) with the left-branch convention against f'(2^-1074)) for alpha in {0.25 ... 4}")
def theory_derivative_jump(context: Context) -> list[Evidence]:
    alphas = (0.25, 0.5, 0.9, 1.0, 1.1, 2.0, 4.0)
    agreement = []
    for alpha in alphas:
        spec = get("elu", alpha=alpha)
        left, right = float(spec.derivative(np.float64(0.0))), float(spec.derivative(np.float64(5e-324)))
        continuous = left == right
        agreement.append(1.0 if continuous == (alpha == 1.0) else -1.0)
    return [_exact("theory", "(f' continuous at 0) == (alpha == 1): +1 agrees, -1 disagrees", agreement,
                   np.zeros(len(alphas)), f"alpha in {alphas}")]


@theory("|E f(z)| for z ~ N(0, s^2), ELU alpha in {0.5, 1, 1.5, 2} vs ReLU; and E f decreasing in alpha; closed form")
def theory_mean_activation(context: Context) -> list[Evidence]:
    elu = [abs(float(moments("elu", 0.0, s, alpha=a).mean)) for a in ALPHAS for s in STDS]
    relu = [abs(float(moments("relu", 0.0, s).mean)) for a in ALPHAS for s in STDS]
    larger = [float(moments("elu", 0.0, s, alpha=b).mean) for a, b in zip(ALPHAS, ALPHAS[1:]) for s in STDS]
    smaller = [float(moments("elu", 0.0, s, alpha=a).mean) for a, b in zip(ALPHAS, ALPHAS[1:]) for s in STDS]
    return [_exact("theory", "|mean| elu - |mean| relu", elu, relu, "every (alpha, std) of the grid"),
            _exact("theory (alpha)", "mean elu(next alpha) - mean elu(alpha)", larger, smaller,
                   "alpha tunes the mean: it falls as alpha grows")]


VARIANCE_DEPTH = 24
VARIANCE_ACTIVATIONS = ("elu", "elu:alpha=2", "selu", "tanh")


def _random_net_log_ratio(activation: str, width: int, depth: int, seed: int, gain_value: float) -> float:
    """ln(var of the last layer's pre-activations / var of the first) in one random MLP with
    N(0, gain^2/width) weights and zero biases (float64), fed f(z) for 1024 samples z ~ N(0, 1) of
    width pre-activations, so that its first layer starts at the fixed point q* = 1 of the gain."""
    spec = parse(activation)
    rng = np.random.default_rng([seed, width, depth])
    z = rng.standard_normal((1024, width))
    variances = []
    for _ in range(depth):
        z = spec.value(z) @ (rng.standard_normal((width, width)) * (gain_value / math.sqrt(width)))
        variances.append(float(z.var()))
    return math.log(variances[-1] / variances[0])


@theory(f"ln(q_L / q_1), L = {VARIANCE_DEPTH}: elukit.theory.propagate with the derived gain from inputs f(z), z ~ N(0, 1) "
        f"(exact), and real random MLPs (profile's width, 1024 such inputs, one net per seed) for "
        f"{', '.join(VARIANCE_ACTIVATIONS)}")
def variance_through_depth(context: Context) -> list[Evidence]:
    rows = []
    for activation in VARIANCE_ACTIVATIONS:
        spec = parse(activation)
        g = gain(spec)
        start = moments(spec, 0.0, 1.0)
        q = propagate(spec, VARIANCE_DEPTH, g * g, input_mean=float(start.mean),
                      input_variance=float(start.variance)).preactivation_variance
        rows.append(_exact(f"theory {activation}", "ln(q_L / q_1)", [math.log(q[-1] / q[0])], [0.0], f"gain {g:.4f}"))
        width = context.profile.random_net_width
        ratios = context.cached(f"variance-depth/{activation}/{width}/{context.profile.seeds}", lambda: [
            _random_net_log_ratio(activation, width, VARIANCE_DEPTH, seed, g) for seed in context.seeds])
        rows.append(_paired(f"random MLP {activation}", "ln(q_L / q_1)", ratios, np.zeros(len(ratios)),
                            f"width {width}, gain {g:.4f}"))
    return rows


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


@theory(f"max(|mean|, |var - 1|) of SELU activations: the map's fixed point (exact), and the last of "
        f"{SELU_DEPTH} layers of random SELU MLPs started at N(0, 1)")
def selu_normalization_theory(context: Context) -> list[Evidence]:
    point = fixed_point("selu")
    rows = [_exact("theory", "distance of the fixed point from (0, 1)", [_distance(point.mean, point.variance)], [0.0])]
    width = context.profile.random_net_width
    values = context.cached(f"selu-random/{width}/{context.profile.seeds}/0/1", lambda: [
        _selu_random_net(width, SELU_DEPTH, seed, 0.0, 1.0) for seed in context.seeds])
    distances = [_distance(means[-1], variances[-1]) for means, variances in values]
    rows.append(_paired("random SELU MLP", "distance from (0, 1) at the last layer", distances, np.zeros(len(distances)),
                        f"width {width}, depth {SELU_DEPTH}"))
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
                        f"width {width}"))
    return rows


DROPOUT_RATE = 0.1


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


@theory("std of f(x + e), e ~ N(0, 0.5^2), at x in {-2, -3, -5}: ELU (alpha 1) against Leaky ReLU (slope 0.1); closed form")
def deactivation_noise(context: Context) -> list[Evidence]:
    points = (-2.0, -3.0, -5.0)
    elu = [math.sqrt(float(moments("elu", x, 0.5).variance)) for x in points]
    leaky = [math.sqrt(float(moments("leaky_relu", x, 0.5, slope=0.1).variance)) for x in points]
    return [_exact(f"theory x = {x:g}", "std elu - std leaky_relu", [e], [k]) for x, e, k in zip(points, elu, leaky)]


# -- timing ------------------------------------------------------------------------------------------
def _step_times(context: Context, regime: str, rounds: int, steps: int = 10) -> list[float]:
    """ln(seconds of `steps` ELU training steps / seconds of `steps` ReLU steps), one value per round;
    the two models alternate ABBA within each round (same data, same thread count)."""
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
        started = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x).transpose(1, 2), y, reduction="none").mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - started

    run("relu"), run("elu")  # warm-up
    ratios = []
    for _ in range(rounds):
        relu = run("relu")
        elu = run("elu") + run("elu")
        relu += run("relu")
        ratios.append(math.log(elu / relu))
    return ratios


@experiments("ln(time of an ELU training step / a ReLU step), same model, data and process, alternating ABBA; "
             "one value per round")
def step_cost(context: Context) -> list[Evidence]:
    rows = []
    for regime in context.profile.regimes:
        ratios = context.cached(f"step-cost/{regime}", lambda regime=regime: _step_times(
            context, regime, context.profile.timing_rounds))
        rows.append(_paired(f"{regime}/{context.profile.datasets[0]}", "ln(t_elu / t_relu)", ratios,
                            np.zeros(len(ratios)), "timings: not reproducible bit for bit (kept in the store)"))
    return rows


# -- experiments -------------------------------------------------------------------------------------
def _tuned_note(*pairs) -> str:
    return ", ".join(f"{name} lr {tuned.lr:g}" for name, tuned in pairs)


def _mean_over_layers(values: np.ndarray) -> np.ndarray:
    """Mean over layers (axis 1) of the finite values; NaN (without numpy's empty-slice warning)
    for a seed with none, e.g. a run that diverged."""
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    total = np.where(finite, values, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _layer_mean(result, name: str, transform=lambda v: v) -> np.ndarray:
    return _mean_over_layers(transform(result.layers_at(name)))


@experiments("gradient sparsity (share of exactly zero f'(x) in the epoch), averaged over layers, at each seed's "
             "best-validation epoch; learning rate tuned per activation")
def trained_gradient_sparsity(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        elu, relu = context.tuned(regime, dataset, "elu"), context.tuned(regime, dataset, "relu")
        rows.append(_paired(where, "elu - relu", _layer_mean(elu.result, "gradient_sparsity"),
                            _layer_mean(relu.result, "gradient_sparsity"), _tuned_note(("elu", elu), ("relu", relu))))
    return rows


@experiments("|mean activation| per hidden layer, averaged over layers, at each seed's best-validation epoch; "
             "learning rate tuned per activation")
def trained_mean_activation(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        elu, relu = context.tuned(regime, dataset, "elu"), context.tuned(regime, dataset, "relu")
        rows.append(_paired(where, "|mean| elu - relu", _layer_mean(elu.result, "mean_activation", np.abs),
                            _layer_mean(relu.result, "mean_activation", np.abs), _tuned_note(("elu", elu), ("relu", relu))))
    return rows


def _epochs_to(curves: np.ndarray, target: float) -> np.ndarray:
    from elukit.statistics import epochs_to_target

    return epochs_to_target(np.where(np.isfinite(curves), curves, np.inf), target)


@experiments("epochs until the training loss first reaches a target: the highest loss that every seed of both "
             "activations reaches (so every pair has a value); learning rate tuned per activation")
def epochs_to_loss(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        elu, relu = context.tuned(regime, dataset, "elu"), context.tuned(regime, dataset, "relu")
        curves = [elu.result.network["train_loss"], relu.result.network["train_loss"]]
        target = float(max(np.nanmin(c, axis=1).max() for c in curves))
        rows.append(_paired(where, "epochs elu - relu", _epochs_to(curves[0], target), _epochs_to(curves[1], target),
                            f"target loss {target:.4f}; " + _tuned_note(("elu", elu), ("relu", relu))))
    return rows


def _accuracy_rows(context: Context, treatment: tuple, baseline: tuple, label: str) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        a, b = context.tuned(regime, dataset, *treatment), context.tuned(regime, dataset, *baseline)
        rows.append(_paired(where, label, a.result.at_best("test_accuracy"), b.result.at_best("test_accuracy"),
                            _tuned_note((treatment[0] + (" bn" if treatment[1] else ""), a),
                                        (baseline[0] + (" bn" if baseline[1] else ""), b))))
    return rows


@experiments("test accuracy at each seed's best-validation epoch; learning rate tuned per activation on the validation split")
def test_accuracy_elu_relu(context: Context) -> list[Evidence]:
    return _accuracy_rows(context, ("elu", False), ("relu", False), "accuracy elu - relu")


@experiments("test accuracy at each seed's best-validation epoch; learning rate tuned per configuration")
def test_accuracy_elu_vs_relu_bn(context: Context) -> list[Evidence]:
    return _accuracy_rows(context, ("elu", False), ("relu", True), "accuracy elu - (relu + batch norm)")


@experiments("test accuracy at each seed's best-validation epoch; learning rate tuned per configuration")
def test_accuracy_elu_bn(context: Context) -> list[Evidence]:
    return _accuracy_rows(context, ("elu", True), ("elu", False), "accuracy (elu + batch norm) - elu")


@experiments("test accuracy at each seed's best-validation epoch; learning rate tuned per activation; SELU with "
             "elukit's derived gain (LeCun normal), ReLU with the regime's init")
def test_accuracy_selu_relu(context: Context) -> list[Evidence]:
    return _accuracy_rows(context, ("selu", False, "gain"), ("relu", False), "accuracy selu - relu")


@experiments("dead-unit fraction (units whose f' was 0 on every training sample of the epoch), averaged over layers, "
             "at the last trained epoch, at the highest learning rate of the regime's grid at which no seed of either "
             "activation diverged")
def dead_units_high_lr(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        elu, relu = context.tuned(regime, dataset, "elu"), context.tuned(regime, dataset, "relu")

        def last(result):
            finite = np.isfinite(result.network["train_loss"])
            epochs = finite.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)
            return _mean_over_layers(result.layers_at("dead_fraction", epochs))

        rates = sorted(elu.grid, reverse=True)
        top = next((lr for lr in rates if np.all(np.isfinite(last(elu.grid[lr])))
                    and np.all(np.isfinite(last(relu.grid[lr])))), rates[-1])
        rows.append(_paired(where, "dead fraction elu - relu", last(elu.grid[top]), last(relu.grid[top]), f"lr {top:g}"))
    return rows


@experiments("accuracy lost to Gaussian input noise (std 0.5 on standardised inputs, one fixed draw): clean minus "
             "noisy test accuracy at each seed's best-validation epoch; learning rate tuned per activation")
def noise_drop(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        elu, relu = context.tuned(regime, dataset, "elu"), context.tuned(regime, dataset, "relu")

        def drop(result):
            return result.at_best("test_accuracy") - result.at_best("noisy_test_accuracy")

        rows.append(_paired(where, "accuracy drop elu - relu", drop(elu.result), drop(relu.result),
                            _tuned_note(("elu", elu), ("relu", relu))))
    return rows


def _gradient_log_ratio(result) -> np.ndarray:
    """ln(gradient norm at the first hidden layer's output / at the last's), epoch 1 (from initialisation)."""
    norms = result.layers_at("gradient_norm", 1)
    return np.log(norms[:, 0] / norms[:, -1])


@experiments("ln(gradient norm reaching the first hidden layer / reaching the last), averaged over epoch 1, at the "
             "regime's default learning rate and init")
def gradient_ratio_vs_saturating(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        elu = _gradient_log_ratio(context.result(Arm(regime, dataset, "elu")))
        for other in ("sigmoid", "tanh"):
            rows.append(_paired(where, f"elu - {other}", elu, _gradient_log_ratio(context.result(Arm(regime, dataset, other)))))
    return rows


@experiments("ln(gradient norm reaching the first hidden layer / reaching the last) in SELU networks, epoch 1, "
             "regime's default learning rate, elukit's derived gain (SELU: 1.0002, i.e. LeCun normal)")
def selu_gradient_ratio(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        ratio = _gradient_log_ratio(context.result(Arm(regime, dataset, "selu", init="gain")))
        rows.append(_paired(where, "ln ratio selu", ratio, np.zeros(len(ratio))))
    return rows


@experiments("max over hidden layers of max(|mean activation|, |activation variance - 1|) in SELU networks (no "
             "normalisation, derived gain) at each seed's best-validation epoch")
def selu_trained_moments(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        result = context.tuned(regime, dataset, "selu", init="gain").result
        means, variances = result.layers_at("mean_activation"), result.layers_at("activation_variance")
        distance = np.max(np.maximum(np.abs(means), np.abs(variances - 1.0)), axis=1)
        rows.append(_paired(where, "distance from (0, 1)", distance, np.zeros(len(distance))))
    return rows


@experiments("test accuracy at each seed's best-validation epoch, ELU alpha = 2 against alpha = 0.5, both at the "
             "learning rate tuned for ELU (alpha 1)")
def alpha_accuracy(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        lr = context.tuned(regime, dataset, "elu").lr
        high = context.result(Arm(regime, dataset, "elu:alpha=2", lr=lr)).at_best("test_accuracy")
        low = context.result(Arm(regime, dataset, "elu:alpha=0.5", lr=lr)).at_best("test_accuracy")
        rows.append(_paired(where, "accuracy alpha 2 - alpha 0.5", high, low, f"lr {lr:g}"))
    return rows


@experiments("log2 of the learning rate each seed does best with (lowest validation loss over the regime's grid), "
             "ELU minus ReLU")
def best_learning_rate(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        elu, relu = context.tuned(regime, dataset, "elu"), context.tuned(regime, dataset, "relu")
        rows.append(_paired(where, "log2 lr elu - relu", np.log2(elu.seed_best_lr), np.log2(relu.seed_best_lr),
                            _tuned_note(("elu", elu), ("relu", relu))))
    return rows


@experiments("test accuracy at each seed's best-validation epoch, ELU with He init (weights N(0, 2/fan_in)) against "
             "ELU with elukit's derived gain (1.2452), at the learning rate tuned for ELU in the regime")
def he_against_gain(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        tuned = context.tuned(regime, dataset, "elu")
        default_init = context.study_config(Arm(regime, dataset, "elu")).init
        other = "gain" if default_init == "he" else "he"
        arms = {default_init: tuned.result, other: context.result(Arm(regime, dataset, "elu", init=other, lr=tuned.lr))}
        rows.append(_paired(where, "accuracy he - gain", arms["he"].at_best("test_accuracy"),
                            arms["gain"].at_best("test_accuracy"), f"lr {tuned.lr:g}"))
    return rows


@experiments("test accuracy at each seed's best-validation epoch: ReLU (tuned learning rate) on seeds n..2n-1 "
             "against the same configuration on seeds 0..n-1")
def negative_control(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        tuned = context.tuned(regime, dataset, "relu")
        other = context.result(Arm(regime, dataset, "relu", lr=tuned.lr, seed_offset=context.profile.seeds))
        rows.append(_paired(where, "accuracy relu(other seeds) - relu", other.at_best("test_accuracy"),
                            tuned.result.at_best("test_accuracy"), f"lr {tuned.lr:g}"))
    return rows


@experiments("test accuracy at each seed's best-validation epoch in the deep regime: ReLU (tuned learning rate) "
             "against sigmoid (regime's default learning rate and init)")
def positive_control(context: Context) -> list[Evidence]:
    rows = []
    for regime, dataset, where in _settings(context):
        if regime != "deep-sgd":
            continue
        relu = context.tuned(regime, dataset, "relu").result.at_best("test_accuracy")
        sigmoid = context.result(Arm(regime, dataset, "sigmoid")).at_best("test_accuracy")
        rows.append(_paired(where, "accuracy relu - sigmoid", relu, sigmoid))
    return rows


__all__ = ["Measurement"]
