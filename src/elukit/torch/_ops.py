r"""elukit's activations as PyTorch operators known to the dispatcher.

Three operators, in the ``elukit`` namespace, serve every spec:

- ``elukit::activation(x, name, params, order=0, exact=False)``: the derivative of `order` of
  the activation (order 0 is f itself), rounded once to x's dtype;
- ``elukit::activation_backward(grad, x, name, params, order=0, exact=False)``: grad * f^(order+1)(x),
  one pass (the first-order backward, rounded once where the compiled kernels serve it);
- ``elukit::activation_(x, name, params, exact=False)``: x <- f(x) in place.

`name` and `params` (the bound parameter values in the spec's order) name the spec in the
registry, so traced, scripted and exported graphs hold plain operator calls.

Where elukit was built with torch installed, its C++ operator library (`_operators.cpp`, libtorch
alone, no Python; `library_path`) defines the operators and registers their CPU kernels for the
specs with compiled kernels, the autograd kernels of the three operators, the version counter
of ``activation_`` and the Meta (fake) kernels; this module loads it (`LOADED_LIBRARY`; not with
``ELUKIT_TORCH_NATIVE_OPS=0``) and then defines and registers only what it did not
(`_impl_if_absent`): the kernels of the other devices, specs and dtypes (CompositeExplicitAutograd,
which the C++ kernels call where they do not serve), the parameter check of the other specs for the
Meta kernels (``elukit::spec_check``), the vmap rules and the export decomposition. Without the
library, everything below serves (the autograd Functions and fake kernels compute what the C++
kernels compute, with the same bits and messages).

Each operator has a real kernel for every device (`functional.evaluate_order`), a fake kernel
(meta tensors, FakeTensorMode, torch.compile, torch.export), a vmap rule (elementwise: the
batched tensor is evaluated as it is), and an autograd kernel whose backward and forward-mode
derivatives are themselves these operators, one order up:

.. math:: \frac{d}{dx} f^{(n)}(x) = f^{(n+1)}(x),

so derivatives of every order are computed from the input, exactly as the spec defines them
(the ELU and piecewise-linear families have every order; the other specs define up to f'' and
raise NotImplementedError beyond). The in-place operator keeps a copy of x from before the
write and differentiates like the out-of-place one, to the same bits (`InplaceFunction`). With `functional.use_fused_training` (opt-in), eager training calls of the ELU
family on the compiled kernels use `TrainingFunction`, which computes f and f' in one pass and
saves f' instead of x (its gradient rounds f' first).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import os
import re
from typing import Any

from elukit import _native
from elukit._registry import get
from elukit._spec import Activation
from elukit.torch import _decompose, _kernels
from elukit.torch._kernels import unobserved
from elukit.torch._torch import torch

_NAMESPACE = "elukit"
_SCHEMAS = (
    "activation(Tensor x, str name, float[] params, int order=0, bool exact=False) -> Tensor",
    "activation_backward(Tensor grad, Tensor x, str name, float[] params, int order=0, bool exact=False) -> Tensor",
    "activation_(Tensor(a!) x, str name, float[] params, bool exact=False) -> ()",
)
_TAGS = (torch.Tag.pt2_compliant_tag,)


def _has_schema(qualified_name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(qualified_name, "")
    except RuntimeError:
        return False
    return True


def _library_file() -> str | None:
    """The operator library built next to this module (`_operators.cpp`), or None."""
    folder = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, "_operators" + suffix)
        if os.path.exists(path):
            return path
    return None


def library_path() -> str:
    """The path of elukit's C++ operator library, for ``torch.ops.load_library(path)`` in a process
    that runs saved artifacts holding elukit's operators without importing elukit, or for a libtorch
    program to ``dlopen`` (it needs libtorch alone, no Python). ImportError naming the build command
    where this installation was built without it."""
    path = _library_file()
    if path is None:
        raise ImportError("elukit was installed without its C++ operator library (torch was not importable at build "
                          "time, or ELUKIT_NO_TORCH_EXTENSION=1): reinstall with torch installed, "
                          "pip install --no-build-isolation 'elukit[torch]'")
    return path


def _load_operator_library() -> str | None:
    """Load the C++ operator library (it defines the operators and their CPU and autograd kernels),
    unless ``ELUKIT_TORCH_NATIVE_OPS=0``, it was not built, it does not load against this torch, or
    the operators are defined already (by this file loaded before, which is then used as it is, or
    by something else, whose definitions the Python registrations complete). Returns the path of
    the library serving, or None."""
    if os.environ.get("ELUKIT_TORCH_NATIVE_OPS", "1") == "0":
        return None
    path = _library_file()
    if path is None:
        return None
    if _has_schema(f"{_NAMESPACE}::activation"):  # defined before elukit.torch was imported
        # by this very file (torch.ops.load_library(library_path()) first): used as it is
        return path if path in torch.ops.loaded_libraries else None
    try:
        torch.ops.load_library(path)
    except OSError:  # built against another torch
        return None
    _share_openmp(path)
    return path


def _share_openmp(path: str) -> None:
    """Run the library's kernels' parallel parts on PyTorch's OpenMP team, as the Python module's
    (`_kernels._share_torch_openmp`); a libtorch program that loads the library alone gets threads
    of the library's own."""
    runtime = _kernels.torch_openmp_runtime()
    addresses = _native.openmp_entry_points(runtime) if runtime is not None else None
    if addresses is not None:
        ctypes.CDLL(path).elukit_kernels_set_openmp(*(ctypes.c_void_p(a) for a in addresses))


LOADED_LIBRARY = _load_operator_library()
"""The path of the C++ operator library this process loaded, or None (the operators are Python's)."""

_LIBRARY = torch.library.Library(_NAMESPACE, "FRAGMENT")


def _define_if_absent(schemas, library=None, tags=_TAGS) -> None:
    """Define each operator of `schemas` in `library` (this module's by default) unless it is
    defined already (by the C++ library)."""
    for schema in schemas:
        if not _has_schema(f"{_NAMESPACE}::{schema.split('(')[0]}"):
            (library or _LIBRARY).define(schema, tags=tags)


_define_if_absent(_SCHEMAS)


def _impl_if_absent(name: str, kernel, key: str, with_keyset: bool = False, library=None) -> None:
    """Register `kernel` for (operator `name`, dispatch `key`) in `library` (this module's by
    default) unless a kernel is there already (the C++ library's)."""
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"{_NAMESPACE}::{name}", key):
        (library or _LIBRARY).impl(name, kernel, key, with_keyset=with_keyset)


ACTIVATION = torch.ops.elukit.activation.default
ACTIVATION_BACKWARD = torch.ops.elukit.activation_backward.default
ACTIVATION_INPLACE = torch.ops.elukit.activation_.default

_BELOW_AUTOGRAD = torch._C._after_autograd_keyset
_BELOW_INPLACE_OR_VIEW = torch._C._after_ADInplaceOrView_keyset


@functools.lru_cache(maxsize=1024)
def spec_for(name: str, params: tuple[float, ...]) -> Activation:
    """The registered spec `name` bound to `params` (its parameter values in declaration order)."""
    family = get(name)
    names = [p.name for p in family.params]
    if len(params) != len(names):
        raise ValueError(f"activation {name!r} takes {len(names)} parameter(s) ({', '.join(names) or 'none'}), "
                         f"got {len(params)}: {list(params)}")
    return get(name, **dict(zip(names, params)))


def check_input(x: Any, argument: str = "x") -> None:
    """TypeError unless `x` is a real floating-point, strided (dense) tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{argument} must be a real floating-point tensor, got complex dtype {x.dtype}; "
                        "apply the activation to x.real and x.imag separately if that is what you mean")
    if not x.is_floating_point():
        raise TypeError(f"{argument} must be a floating-point tensor, got dtype {x.dtype}; convert it with x.float()")
    if x.layout != torch.strided:
        raise TypeError(f"{argument} must be a dense (strided) tensor, got layout {x.layout}; "
                        "convert it with x.to_dense(), or apply the activation to x.values() of a sparse tensor")


def check_no_internal_overlap(x: torch.Tensor) -> None:
    """PyTorch's refusal to write a tensor whose elements share memory (e.g. an expanded one)."""
    if torch._debug_has_internal_overlap(x) == 1:
        raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers to a single "
                           "memory location. Please clone() the tensor before performing the operation.")


def _view_rebase_error(x: torch.Tensor) -> str | None:
    """PyTorch's refusal to modify in place a view that autograd cannot rebase (`handle_view_on_rebase`):
    an output of a multi-view function (unbind, split, chunk), a view made in no_grad or inference
    mode, or one made inside a custom Function."""
    meta = torch._C._autograd._get_creation_meta(x)
    kinds = torch._C._autograd.CreationMeta
    if meta == kinds.DEFAULT:
        return None
    if meta == kinds.NO_GRAD_MODE:
        return ("A view was created in no_grad mode and is being modified inplace with grad mode enabled. Given "
                "that this use case is ambiguous and error-prone, it is forbidden. You can clarify your code by "
                "moving both the view and the inplace either both inside the no_grad block (if you don't want the "
                "inplace to be tracked) or both outside (if you want the inplace to be tracked).")
    if meta == kinds.INFERENCE_MODE:
        return "A view was created in inference mode and is being modified inplace in normal mode."
    node = x.grad_fn.name() if x.grad_fn is not None else "a function"
    prefix = f"Output {x.output_nr} of {re.sub(r'Backward[0-9]*$', '', node)} is a view and is being modified inplace. "
    if meta == kinds.MULTI_OUTPUT_NODE:
        return prefix + ("This view is the output of a function that returns multiple views. Such functions do not "
                         "allow the output views to be modified inplace. You should replace the inplace operation by "
                         "an out-of-place one.")
    return prefix + ("This view was created inside a custom Function (or because an input was returned as-is) and "
                     "the autograd logic to handle view+inplace would override the custom backward associated with "
                     "the custom Function, leading to incorrect gradients. This behavior is forbidden. You can fix "
                     "this by cloning the output of the custom Function.")


def check_inplace_allowed(x: torch.Tensor) -> None:
    """The errors PyTorch raises for an in-place operation under autograd (`check_inplace`, in its
    order), raised before any write."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return
    base = x._base
    if base is not None:
        message = _view_rebase_error(x)
        if message is not None:
            raise RuntimeError(message)
        if base.is_leaf and base.requires_grad:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place operation.")
    if x.is_leaf:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")


def direct_call_allowed(*tensors: torch.Tensor) -> bool:
    """`unobserved`, and no graph being recorded (a first-order backward)."""
    return not torch.is_grad_enabled() and unobserved(*tensors)


# --- real kernels ---------------------------------------------------------------------------------

def check_order(order: int) -> None:
    """ValueError unless `order` (the derivative's order, 0: f itself) is >= 0."""
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")


def _activation_kernel(x, name, params, order=0, exact=False):
    check_input(x)
    check_order(order)
    return _kernels.evaluate_order(spec_for(name, tuple(params)), order, x, exact)


def _backward_kernel(grad, x, name, params, order=0, exact=False):
    check_input(x)
    check_input(grad, "grad")
    check_order(order)
    return _kernels.gradient_times_derivative(spec_for(name, tuple(params)), order + 1, x, grad, exact)


def _inplace_kernel(x, name, params, exact=False):
    check_input(x)
    check_no_internal_overlap(x)
    _kernels.write_value_into(spec_for(name, tuple(params)), x, exact)


# every device, and the CPU cases the C++ library hands back (other specs and dtypes)
_LIBRARY.impl("activation", _activation_kernel, "CompositeExplicitAutograd")
_LIBRARY.impl("activation_backward", _backward_kernel, "CompositeExplicitAutograd")
_LIBRARY.impl("activation_", _inplace_kernel, "CompositeExplicitAutograd")


# --- fake kernels (meta tensors, FakeTensorMode, torch.compile, torch.export) ---------------------
# Where the C++ library is loaded, its Meta kernels are the fake kernels (they compute these, with
# these messages, and call `spec_check` below for the specs the library does not know), so that a
# process with the library alone runs meta tensors too; register_fake would replace them. Without the
# library, these serve.

def _activation_fake(x, name, params, order=0, exact=False):
    check_input(x)
    spec_for(name, tuple(params))
    check_order(order)
    return torch.empty_like(x)


def _backward_fake(grad, x, name, params, order=0, exact=False):
    check_input(x)
    check_input(grad, "grad")
    spec_for(name, tuple(params))
    check_order(order)
    return torch.empty_like(x)


def _inplace_fake(x, name, params, exact=False):
    check_input(x)
    spec_for(name, tuple(params))


def _spec_check(name, params):
    spec_for(name, tuple(params))


if torch._C._dispatch_has_kernel_for_dispatch_key(f"{_NAMESPACE}::activation", "Meta"):  # the C++ library's
    _define_if_absent(["spec_check(str name, float[] params) -> ()"], tags=())
    _impl_if_absent("spec_check", _spec_check, "CompositeExplicitAutograd")
else:
    for _name, _fake in (("activation", _activation_fake), ("activation_backward", _backward_fake),
                         ("activation_", _inplace_fake)):
        torch.library.register_fake(f"{_NAMESPACE}::{_name}", _fake, lib=_LIBRARY)


# --- vmap: elementwise, so a batched tensor is evaluated as it stands -----------------------------

def _batched_to_front(tensor, dim, size):
    if dim is None:
        return tensor.unsqueeze(0).expand(size, *tensor.shape)
    return tensor.movedim(dim, 0)


def vmap_rules(activation, backward, inplace):
    """The vmap rules of the three operators `activation`, `backward`, `inplace` (elementwise: each
    calls its operator on the batched tensors; `_compiled` registers them for its twins too)."""

    def activation_rule(info, in_dims, x, name, params, order=0, exact=False):
        return activation(x, name, params, order, exact), in_dims[0]

    def backward_rule(info, in_dims, grad, x, name, params, order=0, exact=False):
        grad_dim, x_dim = in_dims[0], in_dims[1]
        if grad_dim == x_dim:
            return backward(grad, x, name, params, order, exact), x_dim
        grad = _batched_to_front(grad, grad_dim, info.batch_size)
        x = _batched_to_front(x, x_dim, info.batch_size)
        return backward(grad, x, name, params, order, exact), 0

    def inplace_rule(info, in_dims, x, name, params, exact=False):
        inplace(x, name, params, exact)
        return None, None

    return activation_rule, backward_rule, inplace_rule


def register_vmap_rules(operators, library=None) -> None:
    """Register `vmap_rules` for an (activation, backward, in-place) operator triple: these
    operators, `_compiled`'s twins and `_triton`'s operators."""
    for operator, rule in zip(operators, vmap_rules(*operators)):
        torch.library.register_vmap(operator._schema.name, rule, lib=library)


register_vmap_rules((ACTIVATION, ACTIVATION_BACKWARD, ACTIVATION_INPLACE), _LIBRARY)


# --- the version counter of an in-place write ------------------------------------------------------

def check_not_inference_outside_inference_mode(x: torch.Tensor) -> None:
    """PyTorch's refusal of an in-place write to an inference tensor outside inference mode, which
    its C++ version bump raises (Python's `increment_version` does not): raised by torch itself, from
    an in-place write to an inference tensor of its own, so x (of any dtype or layout) is not touched."""
    if x.is_inference() and not torch.is_inference_mode_enabled():
        with torch.inference_mode():
            probe = torch.zeros(1)
        probe.zero_()


def _write_counted(inplace_operator, keyset, x, name, params, exact) -> None:
    """Bump x's version counter, once (PyTorch's inference-tensor error first), then the kernels of
    `inplace_operator` below ADInplaceOrView, so that a copy_ of theirs does not bump it again."""
    check_not_inference_outside_inference_mode(x)
    torch.autograd.graph.increment_version(x)
    with torch._C._AutoDispatchBelowADInplaceOrView():
        inplace_operator.redispatch(keyset & _BELOW_INPLACE_OR_VIEW, x, name, params, exact)


def inplace_or_view_kernel(inplace_operator):
    """The ADInplaceOrView kernel of an in-place operator (x, name, params, exact): `_write_counted`."""

    def inplace_or_view(keyset, x, name, params, exact=False):
        _write_counted(inplace_operator, keyset, x, name, params, exact)

    return inplace_or_view


_impl_if_absent("activation_", inplace_or_view_kernel(ACTIVATION_INPLACE), "ADInplaceOrView", with_keyset=True)


# --- autograd ---------------------------------------------------------------------------------------
# The autograd kernels apply single-level autograd Functions, as functorch's own transforms do:
# the dispatcher has already unwrapped the tensors for the current transform level, so a plain
# Function.apply (which would start a transform of its own) is not what is wanted here.

from torch._functorch.utils import enable_single_level_autograd_function  # noqa: E402

_Function = torch.autograd.function._SingleLevelFunction


NESTED_FORWARD_MODE = (
    "elukit: forward-mode AD (jvp, jacfwd) inside another derivative transform (jacfwd(jacfwd(f)), "
    "jacrev(jacfwd(f)), grad of a jvp) is not supported: torch would return zeros for an autograd.Function "
    "there (pytorch/pytorch#197867). Put reverse mode inside: torch.func.hessian(f) or jacfwd(jacrev(f))")


def check_forward_mode_not_nested() -> None:
    """Raise where a jvp rule runs inside an outer Grad or Jvp transform: torch switches forward-mode
    AD off inside the rules of autograd.Functions, so the outer derivative of the tangent would be
    silently zero (measured: jacfwd(jacfwd(elu)) gave a zero Hessian)."""
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    derivatives = (torch._C._functorch.TransformType.Grad, torch._C._functorch.TransformType.Jvp)
    if any(i.key() in derivatives for i in retrieve_all_functorch_interpreters()[:-1]):
        raise NotImplementedError(NESTED_FORWARD_MODE)


NESTED_REVERSE_MODE = (
    "elukit: torch.func.grad inside another derivative transform (grad(grad(f)), jacrev(grad(f)), "
    "vjp(grad(f)), jvp(grad(f)), jacfwd(grad(f)), also under torch.compile) is not supported by elukit's "
    "Python autograd nodes: the outer derivative would be silently zero. Use jacrev(jacrev(f)) or "
    "torch.func.hessian(f), or eager mode with "
    "elukit's C++ operator library (built by `pip install --no-build-isolation .` with torch installed; "
    "elukit.torch.library_path() says whether it is)")


def check_reverse_mode_not_nested() -> None:
    """Raise where a backward rule runs while a torch.func Grad level and another derivative level
    (Grad or Jvp) are live, i.e. an inner ``torch.func.grad`` differentiates inside an outer
    grad/vjp/jacrev/jvp/jacfwd: the outer level then never sees the operators these rules call
    (measured: grad(grad(elu)), jacrev(grad(elu)), vjp(grad(elu)), vmap(grad(grad(elu))), jvp(grad(elu))
    and jacfwd(grad(elu)) gave zeros for x < 0, in eager mode without the C++ library and under
    torch.compile). jacrev(jacrev(f)), grad(jacrev(f)), grad(vjp(f)) and hessian run their inner
    backward after the inner level has exited, and are right."""
    if not torch._C._are_functorch_transforms_active():
        return
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    kinds = [i.key() for i in retrieve_all_functorch_interpreters()]
    grad, jvp = torch._C._functorch.TransformType.Grad, torch._C._functorch.TransformType.Jvp
    if grad in kinds and kinds.count(grad) + kinds.count(jvp) >= 2:
        raise NotImplementedError(NESTED_REVERSE_MODE)


def _add(first, second):
    if first is None:
        return second
    return first if second is None else first + second


class ActivationFunction(_Function):
    """f^(n)(x) with d/dx = f^(n+1)(x), in both modes. The derivatives call `BACKWARD` (read from
    ctx._forward_cls, so that `_compiled`'s subclass calls its twin operator)."""

    BACKWARD = ACTIVATION_BACKWARD
    DIRECT_BACKWARD = True
    """Whether an eager first-order backward may call the CPU kernel directly (`_triton`'s may not)."""

    @staticmethod
    def forward(x, name, params, order, exact, keyset):
        with torch._C._AutoDispatchBelowAutograd():
            if keyset is None:
                return _activation_kernel(x, name, params, order, exact)
            return ACTIVATION.redispatch(keyset & _BELOW_AUTOGRAD, x, name, params, order, exact)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, name, params, order, exact, _ = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.arguments = (name, params, order, exact)

    @staticmethod
    def backward(ctx, grad):
        check_reverse_mode_not_nested()
        (x,) = ctx.saved_tensors
        if ctx._forward_cls.DIRECT_BACKWARD and direct_call_allowed(grad, x):  # a first-order eager backward: the same kernel, without the dispatcher
            return _backward_kernel(grad, x, *ctx.arguments), None, None, None, None, None
        return ctx._forward_cls.BACKWARD(grad, x, *ctx.arguments), None, None, None, None, None

    @staticmethod
    def jvp(ctx, tangent, *_):
        check_forward_mode_not_nested()
        (x,) = ctx.saved_tensors
        return ctx._forward_cls.BACKWARD(tangent, x, *ctx.arguments)


class _BackwardRule(_Function):
    """grad * f^(n+1)(x): linear in grad, and d/dx = grad * f^(n+2)(x) (through `BACKWARD`); the
    forward comes from `_backward_function_on`."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad, x, name, params, order, exact, _ = inputs
        ctx.save_for_backward(grad, x)
        ctx.save_for_forward(grad, x)
        ctx.arguments = (name, params, order, exact)

    @staticmethod
    def backward(ctx, outer):
        check_reverse_mode_not_nested()
        grad, x = ctx.saved_tensors
        name, params, order, exact = ctx.arguments
        backward = ctx._forward_cls.BACKWARD
        wrt_grad = backward(outer, x, *ctx.arguments) if ctx.needs_input_grad[0] else None
        wrt_x = backward(outer * grad, x, name, params, order + 1, exact) if ctx.needs_input_grad[1] else None
        return wrt_grad, wrt_x, None, None, None, None, None

    @staticmethod
    def jvp(ctx, grad_tangent, x_tangent, *_):
        check_forward_mode_not_nested()
        grad, x = ctx.saved_tensors
        name, params, order, exact = ctx.arguments
        backward = ctx._forward_cls.BACKWARD
        result = None
        if grad_tangent is not None:
            result = backward(grad_tangent, x, *ctx.arguments)
        if x_tangent is not None:
            result = _add(result, backward(grad * x_tangent, x, name, params, order + 1, exact))
        return result


def _backward_function_on(backward_operator):
    """`_BackwardRule` on `backward_operator`: its forward redispatches it, its derivatives call it
    one order up."""

    class BackwardFunction(_BackwardRule):
        BACKWARD = backward_operator

        @staticmethod
        def forward(grad, x, name, params, order, exact, keyset):
            with torch._C._AutoDispatchBelowAutograd():
                return backward_operator.redispatch(keyset & _BELOW_AUTOGRAD, grad, x, name, params, order, exact)

    return BackwardFunction


BackwardFunction = _backward_function_on(ACTIVATION_BACKWARD)


@functools.lru_cache(maxsize=1024)
def branch_constants(spec: Activation) -> tuple[float, bool] | None:
    """(f''/f' on the branch x <= 0, signed) where f''/f' is a constant of each branch (1/divisor, or
    0 for piecewise-linear functions; 0 on x > 0 for both), else None (other specs).

    For `_compiled`'s fused training node, which saves f'(x) instead of x: `signed` is True where
    the slope of x > 0 is below 1 (f(x) could underflow to 0 there), and the saved f'(x) carries the
    branch in its sign bit (f' >= 0, so the bit is free)."""
    form = spec.exponential_linear_form()
    if form is not None:
        return 1.0 / form[2], form[0] < 1.0
    linear = spec.linear_branches_form()
    return (0.0, linear[0] < 1.0) if linear is not None else None


class InplaceFunction(_Function):
    """x <- f(x), keeping `before`, a copy of x from before the write, for the derivatives: the
    in-place operator's autograd where the C++ operator library is not loaded (its C++ kernel
    computes the same, `_operators.cpp`), and of `_compiled`'s and `_triton`'s operators.

    `before` is ``x.clone()`` taken under autograd by the caller, so it is linked to x's history.
    The gradient is the out-of-place operator's derivative at the copy (`backward_operator`, one
    order up from the input), so an in-place call differentiates to the bits of ``inplace=False``
    for every spec and every order (PyTorch's OpInfo test_inplace_gradgrad): the gradient graph
    holds `before`, through which the higher orders reach x's history. It costs the memory of
    one copy of x, as saving f'(x) did; torch's own in-place ELU saves its output instead and rounds
    its gradient twice.

    x is the only output, so x may be a view (autograd refuses a Function that writes a view in
    place and returns more than one tensor). `inplace_operator` writes x (None: the kernel directly,
    for `functional`'s eager path), `backward_operator` differentiates (elukit's, `_compiled`'s
    twin, `_triton`'s).
    """

    @staticmethod
    def forward(x, before, name, params, exact, keyset, inplace_operator, backward_operator):
        # below ADInplaceOrView: mark_dirty bumps x's version counter, once, as torch's elu_ does (the
        # operator's ADInplaceOrView kernel, or copy_ inside the kernels, would bump it again). In grad
        # mode (a Function's forward runs without, and nothing below autograd records): functionalization
        # takes a write under no_grad for one autograd does not see, so torch.compile kept it in the graph
        # and dropped this node, and a compiled function that wrote a graph input in place had gradient 1
        with torch.enable_grad(), torch._C._AutoDispatchBelowADInplaceOrView():
            if inplace_operator is None:
                _inplace_kernel(x, name, params, exact)
            else:
                inplace_operator.redispatch(keyset & _BELOW_INPLACE_OR_VIEW, x, name, params, exact)
        return x

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, before, name, params, exact, _, inplace_operator, ctx.backward_operator = inputs
        ctx.arguments = (name, params, 0, exact)
        ctx.direct = inplace_operator is None
        ctx.mark_dirty(x)
        ctx.save_for_backward(before)
        ctx.save_for_forward(before)

    @staticmethod
    def backward(ctx, grad):
        check_reverse_mode_not_nested()
        (before,) = ctx.saved_tensors
        if ctx.direct and direct_call_allowed(grad, before):  # a first-order eager backward
            gradient = _backward_kernel(grad, before, *ctx.arguments)
        else:
            gradient = ctx.backward_operator(grad, before, *ctx.arguments)
        return gradient, None, None, None, None, None, None, None  # higher orders reach x through `before`

    @staticmethod
    def jvp(ctx, x_tangent, before_tangent, *_):
        check_forward_mode_not_nested()
        (before,) = ctx.saved_tensors
        return x_tangent.copy_(ctx.backward_operator(before_tangent, before, *ctx.arguments))


class TrainingFunction(_Function):
    r"""f(x) out of place for training: f(x) and f'(x) from one exponential (the compiled kernels,
    `functional.value_and_derivative`), saving f'(x) instead of x. Backward is one multiplication,
    grad * |f'(x)| (`functional.times_magnitude`).

    f'(x) is a second, hidden output with the branch in its sign bit (-f'(x) on x <= 0), so higher
    derivatives need no x: for the ELU family f''(x) = r f'(x) on x <= 0 (r = 1/divisor) and 0 on
    x > 0, so d/dx of the stored signed f' is r * min(stored, 0), and the gradient reaching the hidden
    output (through |stored| in the first-order product) comes back as grad_derivative * r *
    min(stored, 0): each order is one multiplication more. `elukit.torch._native_ops` (C++) runs the
    same node where it was built.

    Used by the eager path of `functional.activation` where x requires grad (`training_plan`);
    transforms, tracers and compilers keep `ActivationFunction` (which saves x).
    """

    @staticmethod
    def forward(x, plan):
        return _kernels.value_and_derivative(plan, x)

    @staticmethod
    def setup_context(ctx, inputs, outputs):
        ctx.ratio = inputs[1][1]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(outputs[1])

    @staticmethod
    def backward(ctx, grad, grad_derivative):
        check_reverse_mode_not_nested()
        (derivative,) = ctx.saved_tensors
        result = None
        if grad is not None:
            if torch.is_grad_enabled():  # create_graph: differentiable in grad and in the hidden output
                result = grad * derivative.abs()
            else:  # a first-order backward: one multiplication, one pass
                result = _kernels.times_magnitude(grad, derivative)
        if grad_derivative is not None:
            result = _add(result, grad_derivative * (derivative.clamp_max(0) * ctx.ratio))
        return result, None


def functions_on(activation_operator, backward_operator, direct_backward: bool):
    """`ActivationFunction` and `BackwardFunction` on another operator pair (`_compiled`'s twins,
    `_triton`'s operators): their forward redispatches that pair's operator, their derivatives call
    `backward_operator` one order up; `direct_backward`: whether an eager first-order backward may
    call the CPU kernel directly (backend="triton" means the Triton kernels in backward too)."""

    class Activation(ActivationFunction):
        BACKWARD = backward_operator
        DIRECT_BACKWARD = direct_backward

        @staticmethod
        def forward(x, name, params, order, exact, keyset):
            with torch._C._AutoDispatchBelowAutograd():
                return activation_operator.redispatch(keyset & _BELOW_AUTOGRAD, x, name, params, order, exact)

    return Activation, _backward_function_on(backward_operator)


def differentiated(*tensors: torch.Tensor) -> bool:
    """Whether reverse mode (grad enabled, an input requires grad) or forward mode (an input carries a
    tangent) would record an operator's call on `tensors`."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return True
    # the tangent at level 0, as the C++ kernels read it (x._fw_grad(0)); forward_ad.unpack_dual reads
    # Python's current level instead, which is -1 while AOTAutograd traces a compiled jvp: it lost
    # the tangent there (zero derivatives, no error). Other layouts carry none (the kernels refuse
    # them, naming the layout; _unpack_dual cannot read a sparse tensor).
    return any(t.layout == torch.strided and torch._VF._unpack_dual(t, 0)[1] is not None for t in tensors)


def autograd_kernels(activation_function, backward_function, inplace_operator, backward_operator,
                     inplace_function=InplaceFunction):
    """The Autograd kernels of an (activation, backward, in-place) operator triple from its autograd
    Functions: these operators' own, `_compiled`'s twins and `_triton`'s operators with theirs."""

    def activation_autograd(keyset, x, name, params, order=0, exact=False):
        if not differentiated(x):  # below autograd at once (a compiled graph's run): apply() costs ~50 us
            return activation_function.forward(x, name, params, order, exact, keyset)
        with enable_single_level_autograd_function():
            return activation_function.apply(x, name, params, order, exact, keyset)

    def backward_autograd(keyset, grad, x, name, params, order=0, exact=False):
        if not differentiated(grad, x):
            return backward_function.forward(grad, x, name, params, order, exact, keyset)
        with enable_single_level_autograd_function():
            return backward_function.apply(grad, x, name, params, order, exact, keyset)

    def inplace_autograd(keyset, x, name, params, exact=False):
        check_input(x)
        check_inplace_allowed(x)
        check_no_internal_overlap(x)
        if not differentiated(x):  # nothing to differentiate
            # not through the operator's ADInplaceOrView kernel: torch.library's (`_triton`'s operators)
            # bumps the counter and lets a copy_ in the kernel bump it again
            _write_counted(inplace_operator, keyset, x, name, params, exact)
            return
        before = x.clone()  # under autograd: the copy the derivatives are taken at, linked to x's history
        with enable_single_level_autograd_function():
            inplace_function.apply(x, before, name, params, exact, keyset, inplace_operator, backward_operator)

    return activation_autograd, backward_autograd, inplace_autograd


_activation_autograd, _backward_autograd, _inplace_autograd = autograd_kernels(
    ActivationFunction, BackwardFunction, ACTIVATION_INPLACE, ACTIVATION_BACKWARD)


_impl_if_absent("activation", _activation_autograd, "Autograd", with_keyset=True)
_impl_if_absent("activation_backward", _backward_autograd, "Autograd", with_keyset=True)
_impl_if_absent("activation_", _inplace_autograd, "Autograd", with_keyset=True)


# --- decompositions into core ATen (run_decompositions, the ONNX exporters, ExecuTorch-style lowering) --
# Python-dispatcher CompositeImplicitAutograd kernels: torch.export's decomposition table picks them
# up for every graph that holds an operator. The C++ dispatcher (eager mode) never sees them, but every
# Python tracer does: FakeTensorMode, make_fx's proxy mode and functionalization call
# OpOverload.decompose on an operator that has one, so torch.compile's AOT tracing would compute this
# decomposition instead of the kernels (float64 within 3 ulp, 16-bit Leaky ReLU rounded twice).
# torch.compile therefore records the twin operators of `_compiled`, which have no such kernel.

_CIA = torch._C.DispatchKey.CompositeImplicitAutograd


@ACTIVATION.py_impl(_CIA)
def _activation_decomposition(x, name, params, order=0, exact=False):
    return _decompose.decompose(spec_for(name, tuple(params)), order, x)


@ACTIVATION_BACKWARD.py_impl(_CIA)
def _backward_decomposition(grad, x, name, params, order=0, exact=False):
    return _decompose.decompose_backward(spec_for(name, tuple(params)), order, grad, x)


__all__ = ["LOADED_LIBRARY", "ACTIVATION", "ACTIVATION_BACKWARD", "ACTIVATION_INPLACE", "NESTED_REVERSE_MODE", "autograd_kernels", "functions_on", "check_order", "inplace_or_view_kernel", "register_vmap_rules", "check_reverse_mode_not_nested", "ActivationFunction", "BackwardFunction",
           "InplaceFunction", "TrainingFunction", "check_inplace_allowed", "check_input", "check_no_internal_overlap", "direct_call_allowed",
           "library_path", "spec_for", "unobserved"]
