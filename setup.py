"""Build the optional compiled kernels (see src/elukit/_exponential_linear.c).

Everything else is configured in pyproject.toml. The extension is optional: where it cannot be
compiled (no C compiler), elukit installs without it and uses its NumPy and torch kernels.
"""

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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



def _torch_cxx_flags() -> list[str] | None:
    """The C++ flags of extensions built against the torch that the build sees (``pip install
    --no-build-isolation`` with torch installed), or None where there is none (or
    ELUKIT_NO_TORCH_EXTENSION=1, or Windows): elukit.torch then runs from Python, bit for bit."""
    if os.environ.get("ELUKIT_NO_TORCH_EXTENSION") == "1" or sys.platform == "win32":
        return None
    try:
        import torch
    except ImportError:
        return None
    abi = int(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))
    return ["-O2", "-g0", "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]


def _torch_extensions(flags: list[str]) -> list[Extension]:
    """elukit.torch's C++ hot paths (src/elukit/torch/_native_ops.cpp, a Python module: the direct
    call of the operator from Python, the fused training node), and elukit's operators as a library
    of libtorch alone (src/elukit/torch/_operators.cpp, with the C kernels compiled into it from the
    same source). The library is not a Python module: `torch.ops.load_library` (elukit.torch does it
    on import; `elukit.torch.library_path()` names the file) or a libtorch program loads it, and it
    links no Python, so saved artifacts run where elukit's Python is not imported."""
    from torch.utils.cpp_extension import CppExtension, include_paths, library_paths

    module = CppExtension(
        "elukit.torch._native_ops",
        sources=["src/elukit/torch/_native_ops.cpp"],
        extra_compile_args=flags + ["-DTORCH_EXTENSION_NAME=_native_ops", "-DTORCH_API_INCLUDE_EXTENSION_H"],
        optional=True,
    )
    library = Extension(
        "elukit.torch._operators",
        sources=["src/elukit/torch/_operators.cpp", "src/elukit/torch/_operator_kernels.c"],
        depends=["src/elukit/_exponential_linear.c", "src/elukit/_exp2_table.h"],
        include_dirs=include_paths(),
        library_dirs=library_paths(),
        libraries=["c10", "torch", "torch_cpu"],
        extra_link_args=["-pthread"],
        optional=True,
    )
    # per language (see BuildExt): the C kernels need their flags, the C++ file torch's
    library.language_args = {"c": compile_args, "c++": flags + ["-fvisibility=hidden"]}
    return [module, library]


class BuildExt(build_ext):
    """build_ext that compiles each source of an extension with a `language_args` attribute with
    the arguments of its language (C or C++), as one extension may hold both."""

    def build_extension(self, ext):
        arguments = getattr(ext, "language_args", None)
        if arguments is None:
            return super().build_extension(ext)
        original = self.compiler._compile

        def compile_one(obj, src, source_extension, cc_args, extra_postargs, pp_opts):
            language = "c" if source_extension == ".c" else "c++"
            return original(obj, src, source_extension, cc_args, list(extra_postargs) + arguments[language], pp_opts)

        self.compiler._compile = compile_one
        try:
            return super().build_extension(ext)
        finally:
            self.compiler._compile = original


torch_flags = _torch_cxx_flags()
if torch_flags is not None:
    extensions.extend(_torch_extensions(torch_flags))
else:
    print("elukit: torch not importable at build time: building without elukit.torch._native_ops and the operator "
          "library (the Python operators serve); `pip install --no-build-isolation .` with torch installed builds them")

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
