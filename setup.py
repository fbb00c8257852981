"""Build the optional compiled kernels (see src/elukit/_exponential_linear.c).

Everything else is configured in pyproject.toml. The extension is optional: where it cannot be
compiled (no C compiler), elukit installs without it and uses its NumPy and torch kernels.
"""

import os
import platform
import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args = ["/O2", "/fp:precise"]
else:
    # -ffp-contract=off: the double-double arithmetic breaks if a*b + c is fused behind its back.
    # -fno-trapping-math: lets the vectoriser evaluate both sides of a branch-free select (results
    # are unchanged; only floating-point exception flags, which nothing reads, may differ).
    compile_args = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-std=c11", "-pthread"]


def _xla_ffi_include() -> str | None:
    """Where XLA's FFI C header lies: $ELUKIT_XLA_FFI_INCLUDE, else the installed jaxlib's (found
    when the build sees jax, e.g. ``pip install --no-build-isolation``), else None."""
    include = os.environ.get("ELUKIT_XLA_FFI_INCLUDE")
    if include is None:
        try:
            import jax.ffi
        except ImportError:
            return None
        include = jax.ffi.include_dir()
    return include if os.path.exists(os.path.join(include, "xla", "ffi", "api", "c_api.h")) else None


extensions = [
    Extension(
        "elukit._exponential_linear",
        sources=["src/elukit/_exponential_linear.c"],
        depends=["src/elukit/_exp2_table.h"],
        extra_compile_args=compile_args,
        extra_link_args=[] if sys.platform == "win32" else ["-pthread"],
        optional=True,
    )
]

# elukit.jax's CPU kernels: the same C source as an XLA FFI handler. Optional twice over: it needs
# XLA's FFI header from jaxlib at build time, and elukit.jax falls back to its pure-jnp kernels
# (same values, 3-5x slower on the CPU) where it is missing.
ffi_include = _xla_ffi_include()
if ffi_include is not None and sys.platform != "win32":
    extensions.append(
        Extension(
            "elukit.jax._ffi_kernels",
            sources=["src/elukit/jax/_ffi_kernels.c"],
            depends=["src/elukit/_exponential_linear.c", "src/elukit/_exp2_table.h"],
            include_dirs=[ffi_include],
            extra_compile_args=compile_args,
            extra_link_args=["-pthread"],
            # binary128 (expm1q/expq) for the correctly rounded float64 kernels' rare hard cases
            libraries=["quadmath"] if platform.machine() in ("x86_64", "AMD64", "i686") else ["m"],
            optional=True,
        )
    )
else:
    print("elukit: XLA FFI header not found (jax not importable at build time): building without "
          "elukit.jax._ffi_kernels; `pip install --no-build-isolation .` with jax installed builds it")

setup(ext_modules=extensions)
