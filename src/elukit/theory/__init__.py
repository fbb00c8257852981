"""elukit.theory: Gaussian moments, mean/variance maps, fixed points, gains and propagation.

Pure NumPy/SciPy (never imports torch). Every formula's derivation is in its docstring and in
docs/theory.md.
"""

from elukit._gaussian import Moments
from elukit.theory.chaos import DepthScales, EdgeOfChaos, depth_scales, edge_of_chaos, variance_fixed_point
from elukit.theory.correlation import correlation_map, covariance_map
from elukit.theory.gain import GainReport, analyze_gain, gain, gradient_gain
from elukit.theory.maps import (
    FixedPoint,
    alpha_dropout_constants,
    fixed_point,
    map_jacobian,
    mean_variance_map,
    self_normalizing_constants,
    selu_constants,
)
from elukit.theory.moments import gauss_hermite_moments, moments, panel_moments
from elukit.theory.propagation import Propagation, propagate

__all__ = [
    "DepthScales", "EdgeOfChaos", "FixedPoint", "GainReport", "Moments", "Propagation", "alpha_dropout_constants", "analyze_gain", "correlation_map", "covariance_map",
    "depth_scales", "edge_of_chaos",
    "fixed_point", "gain", "gauss_hermite_moments", "gradient_gain", "map_jacobian", "mean_variance_map",
    "moments", "panel_moments", "propagate", "self_normalizing_constants", "selu_constants", "variance_fixed_point",
]
