"""Build the C media core; all other metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "nf_modules.mediacore._mediacore",
            sources=["nf_modules/mediacore/_mediacore.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-std=c11"],
        )
    ]
)
