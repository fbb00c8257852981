r"""elukit's operators as torch.compile sees them: the same kernels, without the export decomposition.

``elukit::activation`` and ``elukit::activation_backward`` carry a Python CompositeImplicitAutograd
kernel (`_ops`, end of the module) that writes them in core ATen ops (`_decompose`), so that
``run_decompositions()``, the ONNX exporters and saved artifacts need no elukit. torch.compile's
AOT tracing applies that kernel too: FakeTensorMode, make_fx's proxy mode and functionalization
all call ``OpOverload.decompose`` on any operator that has one, and the Python dispatcher runs
under them. A compiled model then computed the decomposition (float64 within 3 ulp of eager: 27,756
of 200,000 ELU values differed; float16 Leaky ReLU rounded twice), not elukit's kernels.

So torch.compile gets twin operators that have no such kernel, and stay opaque to every tracer:

- ``elukit::activation_compiled(x, name, params, order=0, exact=False)``,
- ``elukit::activation_backward_compiled(grad, x, name, params, order=0, exact=False)``,
- ``elukit::activation_compiled_(x, name, params, exact=False)`` (in place),

with the operators' own real kernels (`_ops._activation_kernel`, ...), fake kernels, vmap rules and
autograd rules whose backward and forward-mode derivatives are these twins one order up (the
in-place one at a copy of x from before the write), so every order under torch.compile runs
elukit's eager kernels, bit for bit. `call` chooses them while dynamo traces and torch.export does
not (`torch.compiler.is_compiling()` and not `is_exporting()`): dynamo traces that Python, so the
choice lands in the graph. torch.export, ``jit.trace`` and ``jit.script`` keep recording the
decomposition, and a graph that calls ``elukit::activation`` itself still decomposes on export.
"""

from __future__ import annotations

import functools

from elukit.torch import _kernels, _ops
from elukit.torch._torch import torch

_LIBRARY = torch.library.Library("elukit", "FRAGMENT")
_TAGS = (torch.Tag.pt2_compliant_tag,)
# The C++ operator library defines the first three itself, with its CPU kernels (a compiled graph's
# run then calls no Python kernel on the CPU); where it is not loaded, they are defined here.
_ops._define_if_absent((
    "activation_compiled(Tensor x, str name, float[] params, int order=0, bool exact=False) -> Tensor",
    "activation_backward_compiled(Tensor grad, Tensor x, str name, float[] params, int order=0, "
    "bool exact=False) -> Tensor",
    "activation_compiled_(Tensor(a!) x, str name, float[] params, bool exact=False) -> ()",
    "activation_fused_compiled(Tensor x, str name, float[] params) -> (Tensor, Tensor)",
), library=_LIBRARY, tags=_TAGS)

ACTIVATION = torch.ops.elukit.activation_compiled.default
ACTIVATION_BACKWARD = torch.ops.elukit.activation_backward_compiled.default
ACTIVATION_INPLACE = torch.ops.elukit.activation_compiled_.default
ACTIVATION_FUSED = torch.ops.elukit.activation_fused_compiled.default

_BELOW_AUTOGRAD = torch._C._after_autograd_keyset


def call(x: torch.Tensor, name: str, params: list[float], inplace: bool, exact: bool) -> torch.Tensor:
    """f(x) through the twin operators (in place with `inplace`): what a compiled graph records.

    Where eager mode would run the fused training node (`functional.use_fused_training`: f and f'
    from one pass, f' saved instead of x, backward grad * |f'| with f' rounded first), the graph
    records ``activation_fused_compiled`` and that node's backward, so the gradients are eager's
    bits in that mode too (the fused backward differs from the operators' in the last bit)."""
    if inplace:
        ACTIVATION_INPLACE(x, name, params, exact)
        return x
    if (_kernels._FUSED["enabled"] and not exact and torch.is_grad_enabled() and x.requires_grad  # training_plan's test
            and x.dtype in (torch.float32, torch.float64) and x.is_cpu and x.is_contiguous()
            and _fused_plan(name, params)):
        return ACTIVATION_FUSED(x, name, params)[0]
    return ACTIVATION(x, name, params, 0, exact)


def _fused_plan(name: str, params: list[float]) -> bool:
    """Whether `_kernels.training_plan` serves this spec (the ELU family on the compiled kernels)."""
    return _kernels._kernel_plan(_ops.spec_for(name, tuple(params))) is not None


# torch.compiler.assume_constant_result(_fused_plan), a constant of (name, params): dynamo calls it
# instead of tracing its caches. The decorator imports torch._dynamo (2.5 s at `import elukit.torch`),
# so the attribute it sets is set here.
_fused_plan._dynamo_marked_constant = True


# --- real kernels: the operators' own --------------------------------------------------------------

# They only ever see real tensors: at run time, or in inductor's constant folding (freezing), which
# runs them while torch.compiler.is_compiling() is True. `_kernels` reads that flag as "dynamo traces
# this Python" and takes its traceable path there (other bits: 2,109 of 10,001 float64 ELU values of a
# frozen buffer differed), so the flag is cleared while a real kernel runs.

def _at_run_time(kernel):
    @functools.wraps(kernel)
    def run(*args, **kwargs):
        if not torch.compiler.is_compiling() or not hasattr(torch.compiler, "_is_compiling_flag"):
            return kernel(*args, **kwargs)
        flag, torch.compiler._is_compiling_flag = torch.compiler._is_compiling_flag, False
        try:
            return kernel(*args, **kwargs)
        finally:
            torch.compiler._is_compiling_flag = flag
    return run


def _fused_kernel(x, name, params):
    _ops.check_input(x)
    return _kernels.value_and_derivative(_kernels._kernel_plan(_ops.spec_for(name, tuple(params))), x.contiguous())


_LIBRARY.impl("activation_compiled", _at_run_time(_ops._activation_kernel), "CompositeExplicitAutograd")
_LIBRARY.impl("activation_backward_compiled", _at_run_time(_ops._backward_kernel), "CompositeExplicitAutograd")
_LIBRARY.impl("activation_compiled_", _at_run_time(_ops._inplace_kernel), "CompositeExplicitAutograd")
_LIBRARY.impl("activation_fused_compiled", _at_run_time(_fused_kernel), "CompositeExplicitAutograd")


# --- fake kernels -----------------------------------------------------------------------------------

@torch.library.register_fake("elukit::activation_compiled", lib=_LIBRARY)
def _activation_fake(x, name, params, order=0, exact=False):
    _ops.check_input(x)
    _ops.spec_for(name, tuple(params))
    _ops.check_order(order)
    return torch.empty_like(x)


@torch.library.register_fake("elukit::activation_backward_compiled", lib=_LIBRARY)
def _backward_fake(grad, x, name, params, order=0, exact=False):
    _ops.check_input(x)
    _ops.check_input(grad, "grad")
    _ops.spec_for(name, tuple(params))
    _ops.check_order(order)
    return torch.empty_like(x)


@torch.library.register_fake("elukit::activation_compiled_", lib=_LIBRARY)
def _inplace_fake(x, name, params, exact=False):
    _ops.check_input(x)
    _ops.spec_for(name, tuple(params))


@torch.library.register_fake("elukit::activation_fused_compiled", lib=_LIBRARY)
def _fused_fake(x, name, params):
    _ops.check_input(x)
    _ops.spec_for(name, tuple(params))
    layout = torch.contiguous_format  # the real kernel writes contiguous outputs
    return torch.empty_like(x, memory_format=layout), torch.empty_like(x, memory_format=layout)


# --- vmap (torch.func inside a compiled function) ---------------------------------------------------

_ops.register_vmap_rules((ACTIVATION, ACTIVATION_BACKWARD, ACTIVATION_INPLACE), _LIBRARY)
_ops._impl_if_absent("activation_compiled_", _ops.inplace_or_view_kernel(ACTIVATION_INPLACE), "ADInplaceOrView",
                     with_keyset=True, library=_LIBRARY)


# --- autograd: `_ops`'s rules, one order up through the twins ---------------------------------------

from torch._functorch.utils import enable_single_level_autograd_function  # noqa: E402


ActivationFunction, BackwardFunction = _ops.functions_on(ACTIVATION, ACTIVATION_BACKWARD, direct_backward=True)


class FusedFunction(_ops._Function):
    """(f(x), signed f'(x)) from ``activation_fused_compiled``, with `_ops.TrainingFunction`'s
    backward: grad * |f'(x)|, and for the hidden output f''/f' = 1/divisor on x <= 0."""

    @staticmethod
    def forward(x, name, params, keyset):
        with torch._C._AutoDispatchBelowAutograd():
            return ACTIVATION_FUSED.redispatch(keyset & _BELOW_AUTOGRAD, x, name, params)

    @staticmethod
    def setup_context(ctx, inputs, outputs):
        x, name, params, _ = inputs
        ctx.ratio = _ops.branch_constants(_ops.spec_for(name, tuple(params)))[0]  # the plan's 1/divisor
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(outputs[1])

    @staticmethod
    def backward(ctx, grad, grad_derivative):
        _ops.check_reverse_mode_not_nested()
        (derivative,) = ctx.saved_tensors
        result = None
        if grad is not None:
            result = grad * derivative.abs()  # what `_kernels.times_magnitude` computes, one rounding
        if grad_derivative is not None:
            result = _ops._add(result, grad_derivative * (derivative.clamp_max(0) * ctx.ratio))
        return result, None, None, None


_activation_autograd, _backward_autograd, _inplace_autograd = _ops.autograd_kernels(
    ActivationFunction, BackwardFunction, ACTIVATION_INPLACE, ACTIVATION_BACKWARD)


# (the C++ library's own where it is loaded: the operators' C++ autograd, through the twins)
_ops._impl_if_absent("activation_compiled", _activation_autograd, "Autograd", with_keyset=True, library=_LIBRARY)
_ops._impl_if_absent("activation_backward_compiled", _backward_autograd, "Autograd", with_keyset=True,
                     library=_LIBRARY)
_ops._impl_if_absent("activation_compiled_", _inplace_autograd, "Autograd", with_keyset=True, library=_LIBRARY)


def _fused_autograd(keyset, x, name, params):
    with enable_single_level_autograd_function():
        return FusedFunction.apply(x, name, params, keyset)


_LIBRARY.impl("activation_fused_compiled", _fused_autograd, "Autograd", with_keyset=True)


__all__ = ["ACTIVATION", "ACTIVATION_BACKWARD", "ACTIVATION_INPLACE", "call"]
