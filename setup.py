"""Build the optional compiled kernels (see src/elukit/_exponential_linear.c).

Everything else is configured in pyproject.toml. The extension is optional: where it cannot be
compiled (no C compiler), elukit installs without it and uses its NumPy and torch kernels.
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args = ["/O2", "/fp:precise"]
else:
    # -ffp-contract=off: the double-double arithmetic breaks if a*b + c is fused behind its back.
    # -fno-trapping-math: lets the vectoriser evaluate both sides of a branch-free select (results
    # are unchanged; only floating-point exception flags, which nothing reads, may differ).
    compile_args = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-std=c11", "-pthread"]

setup(
    ext_modules=[
        Extension(
            "elukit._exponential_linear",
            sources=["src/elukit/_exponential_linear.c"],
            depends=["src/elukit/_exp2_table.h"],
            extra_compile_args=compile_args,
            extra_link_args=[] if sys.platform == "win32" else ["-pthread"],
            optional=True,
        )
    ]
)
