"""The package's compiled part: the request path's per-candidate loops (service/_kernels.c,
Python's C API only). Everything else about the package is in pyproject.toml. Building needs a
C compiler and Python's headers; the images build it in a stage of their own (Dockerfile)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "service._kernels",
            sources=["service/_kernels.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"],
        )
    ]
)
