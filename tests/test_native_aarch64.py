"""elukit's compiled kernels built for aarch64 and run under qemu-user: the same bits as the native
build, subnormals kept under XLA's flush-to-zero, and the binary128 stage right on the hard cases.

The kernels (src/elukit/_exponential_linear.c and the XLA FFI handler src/elukit/jax/_ffi_kernels.c,
which has aarch64-only branches: FPCR.FZ handling, ``long double`` as binary128) are compiled into
the test driver tests/native_driver/kernels_driver.c twice, natively and with the aarch64 cross
compiler, with setup.py's flags. Both builds evaluate the same fixed inputs (special values,
log-uniform over all binades, N(0, 9), the negative branch down to the flush floor, subnormals,
tiny |x| < 2^-900, and the hard cases that the float64 kernels' first stage cannot round) for ELU,
SELU, CELU(3) and Leaky ReLU, values and derivatives, float32 and float64; every result must have
the same bits (both builds are meant to be correctly rounded or, for the faithful kernels, to run
the same operations). The hard cases are also checked against mpmath (elukit.reference).

Marked ``slow`` (outside the default run) and skipped unless the tools are there: CI has no cross
compiler, so there it skips. On Debian 12, as root (about a minute of CPU to build and run both)::

    apt-get install -y crossbuild-essential-arm64 qemu-user
    dpkg --add-architecture arm64 && apt-get update        # to fetch one arm64 package file
    cd /tmp && apt-get download libpython3.11-dev:arm64 && dpkg -x libpython3.11-dev_*_arm64.deb /opt/arm64-python
    dpkg --remove-architecture arm64 && apt-get update      # nothing arm64 was installed
    ELUKIT_AARCH64_PYTHON_INCLUDE=/opt/arm64-python/usr/include python -m pytest -m slow tests/test_native_aarch64.py

The arm64 Python headers serve the compilation only (the source includes Python.h, and pyconfig.h
differs per architecture; the driver drops the Python bindings, so no arm64 libpython is needed);
with libpython3.11-dev:arm64 installed through multiarch, /usr/include serves and the variable is
not needed. Correctness only: qemu's timings say nothing about an aarch64 CPU.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "native_driver" / "kernels_driver.c"
SOURCES = (ROOT / "src" / "elukit" / "_exponential_linear.c", ROOT / "src" / "elukit" / "jax" / "_ffi_kernels.c")
CROSS = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"

# setup.py's flags (compile_args, after sysconfig's CFLAGS), plus section GC to drop the Python bindings
SETUP_FLAGS = ["-DNDEBUG", "-fwrapv", "-O3", "-Wall", "-fPIC", "-ffp-contract=off", "-fno-math-errno",
               "-fno-trapping-math", "-std=c11", "-pthread"]
DRIVER_FLAGS = ["-ffunction-sections", "-fdata-sections"]

FUNCTIONS = {"elu": ("elu", {}), "selu": ("selu", {}), "celu3": ("celu", {"alpha": 3.0})}
QUANTITIES = {"value": "value", "derivative": "derivative", "second": "second_derivative"}


def _python_version_dir() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def _aarch64_python_include() -> str | None:
    """A usr/include holding aarch64's pyconfig.h (aarch64-linux-gnu/pythonX.Y/pyconfig.h)."""
    for root in (os.environ.get("ELUKIT_AARCH64_PYTHON_INCLUDE"), "/usr/include"):
        if root and (Path(root) / "aarch64-linux-gnu" / _python_version_dir() / "pyconfig.h").exists():
            return root
    return None


def _xla_ffi_include() -> str | None:
    try:
        import jax.ffi
    except ImportError:
        return None
    include = jax.ffi.include_dir()
    return include if (Path(include) / "xla" / "ffi" / "api" / "c_api.h").exists() else None


def _missing() -> str | None:
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "compares an aarch64 build with the native x86_64 one (this is not x86_64 Linux)"
    for tool in (CROSS, QEMU, "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install crossbuild-essential-arm64 qemu-user; CI has neither)"
    if _aarch64_python_include() is None:
        return ("no aarch64 Python headers: set ELUKIT_AARCH64_PYTHON_INCLUDE to the usr/include of an unpacked "
                f"lib{_python_version_dir()}-dev:arm64 package (see this module's docstring)")
    if _xla_ffi_include() is None:
        return "jax (for XLA's FFI header) not importable"
    return None


MISSING = _missing()
requires_tools = pytest.mark.skipif(MISSING is not None, reason=f"aarch64 check: {MISSING}")


def _write_constants(path: Path) -> None:
    """Each (function, order)'s constant tuple, as elukit.jax passes them to the handler, in hex."""
    from elukit import _native, get

    def line(name, order, constants):
        text = " ".join(str(int(v)) if i == 6 else float(v).hex() for i, v in enumerate(constants))
        return f"{name} {order} {text}\n"

    lines = []
    for label, (name, params) in FUNCTIONS.items():
        form = get(name, **params).exponential_linear_form()
        lines += [line(label, order, _native.derivative_constants(tuple(form), order)) for order in (1, 2)]
    lines.append(line("linear_leaky", 1, _native.linear_constants((1.0, 0.01), "derivative")))
    lines.append(line("linear_leaky", 2, _native.linear_constants((1.0, 0.01), "second_derivative")))
    path.write_text("".join(lines))


def _build(compiler: str, includes: list[str], libraries: list[str], out: Path, extra: list[str] = ()) -> str:
    command = [compiler, *SETUP_FLAGS, *DRIVER_FLAGS, *extra, *(f"-I{i}" for i in includes), str(DRIVER), "-o",
               str(out), "-Wl,--gc-sections", *libraries]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stderr}"
    return done.stderr


def _read_sections(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    sections, offset = {}, 0
    while offset < len(data):
        raw, size, count = struct.unpack_from("<48sIQ", data, offset)
        offset += 60
        dtype = np.uint32 if size == 4 else np.uint64
        sections[raw.rstrip(b"\0").decode()] = np.frombuffer(data, dtype, count, offset)
        offset += size * count
    return sections


def _checks(stdout: str) -> dict[str, int]:
    return {parts[1]: int(parts[2]) for parts in (line.split() for line in stdout.splitlines()) if parts[0] == "check"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both builds' sections and checks: {"native": (sections, checks), "aarch64": (...)}."""
    work = tmp_path_factory.mktemp("aarch64")
    constants = work / "constants.txt"
    _write_constants(constants)
    ffi = _xla_ffi_include()
    native, cross = work / "driver_native", work / "driver_aarch64"
    _build("gcc", [sysconfig.get_paths()["include"], ffi], ["-lquadmath", "-lm"], native)
    aarch64_include = _aarch64_python_include()
    _build(CROSS, [f"{aarch64_include}/{_python_version_dir()}", aarch64_include, ffi], ["-lm"], cross)
    results = {}
    for name, command in (("native", [str(native)]), ("aarch64", [QEMU, "-L", SYSROOT, str(cross)])):
        output = work / f"{name}.bin"
        done = subprocess.run([*command, str(constants), str(output)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        results[name] = (_read_sections(output), _checks(done.stdout))
    return results


def _as_float(bits: np.ndarray) -> np.ndarray:
    return bits.view(np.float32 if bits.dtype == np.uint32 else np.float64)


def _mpmath_rounded(label: str, quantity: str, points, dtype) -> np.ndarray:
    from elukit import get
    from elukit.reference import exact_values, float_format, round_exact

    name, params = FUNCTIONS[label]
    fmt = float_format(np.dtype(dtype))
    exact = exact_values(get(name, **params), QUANTITIES[quantity], [float(p) for p in points])
    return np.array([round_exact(v, fmt) for v in exact], dtype=dtype)


def _describe_mismatch(section: str, inputs: np.ndarray, native: np.ndarray, cross: np.ndarray) -> str:
    """The first differing elements, and which build mpmath agrees with where it applies."""
    where = np.flatnonzero(native != cross)[:5]
    x = _as_float(inputs)[where] if inputs is not None and len(inputs) == len(native) else None
    lines = [f"{section}: {np.count_nonzero(native != cross)} of {len(native)} differ"]
    parts = section.split(".")
    label = next((p for p in parts if p in FUNCTIONS), None)
    quantity = next((p for p in parts if p in QUANTITIES), None)
    exact = None
    if x is not None and label and quantity and "grad" not in parts and "both" not in parts:
        exact = _mpmath_rounded(label, quantity, x, _as_float(native).dtype)
    for j, i in enumerate(where):
        row = f"  [{i}] x={x[j]!r} native={_as_float(native)[i]!r} aarch64={_as_float(cross)[i]!r}" if x is not None \
            else f"  [{i}] native={_as_float(native)[i]!r} aarch64={_as_float(cross)[i]!r}"
        if exact is not None:
            row += f" mpmath={exact[j]!r}"
        lines.append(row)
    return "\n".join(lines)


def _inputs_for(sections: dict[str, np.ndarray], section: str) -> np.ndarray | None:
    if section.startswith("f64.hard."):
        return sections.get(section + ".x")
    return sections["input.f64" if section.startswith("f64.") else "input.f32"]


@requires_tools
def test_aarch64_build_of_the_kernels_is_clean():
    """Both C files compile for aarch64 with setup.py's flags and no warning (-Wall, as setup.py)."""
    ffi, include = _xla_ffi_include(), _aarch64_python_include()
    for source in SOURCES:
        command = [CROSS, *SETUP_FLAGS, "-Wextra", f"-I{include}/{_python_version_dir()}", f"-I{include}", f"-I{ffi}",
                   "-c", str(source), "-o", os.devnull]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "warning" not in done.stderr, f"{source.name}:\n{done.stderr}"


@requires_tools
def test_aarch64_ffi_module_links_with_libm_alone(tmp_path):
    """setup.py links elukit.jax._ffi_kernels with libm on aarch64 (libquadmath on x86 only): the
    binary128 stage's expm1l/expl/ldexpl come from it, and nothing else is left unresolved but
    Python's own symbols."""
    ffi, include = _xla_ffi_include(), _aarch64_python_include()
    module = tmp_path / "_ffi_kernels.so"
    command = [CROSS, *SETUP_FLAGS, "-shared", f"-I{include}/{_python_version_dir()}", f"-I{include}", f"-I{ffi}",
               str(SOURCES[1]), "-o", str(module), "-lm"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    def dynamic_symbols(path, *options):
        listing = subprocess.run(["aarch64-linux-gnu-nm", "-D", *options, str(path)], capture_output=True, text=True,
                                 check=True).stdout
        return {line.split()[-1].split("@")[0] for line in listing.splitlines() if line.strip()}

    undefined = dynamic_symbols(module, "--undefined-only")
    provided = set()
    for library in ("libc.so.6", "libm.so.6"):
        provided |= dynamic_symbols(Path(SYSROOT) / "lib" / library, "--defined-only")
    unresolved = {s for s in undefined - provided if not s.startswith(("Py", "_Py", "_ITM_", "__gmon_start__"))}
    assert {"expm1l", "expl", "ldexpl"} <= undefined and not unresolved, sorted(unresolved)


@requires_tools
def test_same_bits_on_aarch64_as_native(runs):
    native, _ = runs["native"]
    cross, _ = runs["aarch64"]
    assert native.keys() == cross.keys()
    assert np.array_equal(native["input.f64"], cross["input.f64"]), "the two builds made different inputs"
    # 4 input sections; per ELU/SELU/CELU(3): 3 accurate, 6 hard, 15 kernel, 4 BOTH; Leaky ReLU: 10
    assert len(native) == 98
    problems = []
    for name in native:
        differ = native[name] != cross[name]
        inputs = _inputs_for(native, name)
        if differ.any() and name.startswith(("f32.", "f64.")) and inputs is not None and len(inputs) == len(differ):
            # A NaN made by an operation (inf * 0: a gradient of inf times f'' = 0) is the hardware's
            # default NaN, negative on x86 and positive on aarch64; a NaN input passes through with its
            # bits on both.
            made_nan = np.isnan(_as_float(native[name])) & np.isnan(_as_float(cross[name])) & ~np.isnan(_as_float(inputs))
            differ &= ~made_nan
        if differ.any():
            problems.append(_describe_mismatch(name, inputs, np.where(differ, native[name], 0), np.where(differ, cross[name], 0)))
    assert not problems, "\n".join(problems)


@requires_tools
def test_hard_cases_are_correctly_rounded_on_aarch64(runs):
    """The elements that the float64 kernels' first stage cannot round (about 1 in 10^4 of N(0, 9)),
    which go to the binary128 stage (expm1l/expl on aarch64), against mpmath; with the tiny inputs
    (|x| < 2^-900), which all go there."""
    sections, checks = runs["aarch64"]
    for label in FUNCTIONS:
        for quantity in QUANTITIES:
            x = _as_float(sections[f"f64.hard.{label}.{quantity}.x"])
            got = _as_float(sections[f"f64.hard.{label}.{quantity}"])
            assert len(x) == checks[f"hard_count.{label}.{quantity}"] > 40
            tiny = _as_float(sections["input.f64"])
            tiny_index = np.flatnonzero((np.abs(tiny) < 2.0**-900) & (tiny != 0))[::16]
            points = np.concatenate([x, tiny[tiny_index]])
            results = np.concatenate([got, _as_float(sections[f"f64.accurate.{label}.{quantity}"])[tiny_index]])
            expected = _mpmath_rounded(label, quantity, points, np.float64)
            wrong = np.flatnonzero(results.view(np.uint64) != expected.view(np.uint64))
            assert wrong.size == 0, [(points[i], results[i], expected[i]) for i in wrong[:5]]


@requires_tools
@pytest.mark.parametrize("build", ["native", "aarch64"])
def test_flush_to_zero_set_by_xla_keeps_subnormals(runs, build):
    """With flush-to-zero set before the call, as XLA's CPU threads run (FPCR.FZ on aarch64,
    MXCSR FTZ/DAZ on x86): subnormal inputs and results survive in the handler, on its worker
    threads too, and the handler leaves the register as it found it. The control runs a kernel with
    the flag left set and must lose them, so the check can fail."""
    _, checks = runs[build]
    subnormal = checks["subnormal_elements"]
    assert subnormal > 0
    for quantity in ("value", "derivative"):
        assert checks[f"subnormal_kept.accurate.{quantity}"] == subnormal
        assert checks[f"subnormal_kept.dd.{quantity}"] == subnormal
        assert checks[f"threads_same_bits.{quantity}"] == 1
    assert checks["subnormal_kept_with_flush_set.control"] == 0
    assert checks["fp_state_changed_by_handler"] == 0
