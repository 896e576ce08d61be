"""Build the C media core and the media engine; all other metadata lives in pyproject.toml."""

from setuptools import Extension, setup

CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-std=c11"]

setup(
    ext_modules=[
        Extension(
            "nf_modules.mediacore._mediacore",
            sources=["nf_modules/mediacore/_mediacore.c"],
            depends=["nf_modules/mediacore/rtp_g711.h"],
            extra_compile_args=CFLAGS,
        ),
        Extension(
            "nf_modules.mediacore._mediaengine",
            sources=[
                "nf_modules/mediacore/_mediaengine.c",
                "nf_modules/mediacore/engine_loop.c",
                "nf_modules/mediacore/engine_core.c",
            ],
            depends=[
                "nf_modules/mediacore/rtp_g711.h",
                "nf_modules/mediacore/engine_core.h",
                "nf_modules/mediacore/engine_loop.h",
            ],
            extra_compile_args=[*CFLAGS, "-pthread"],
            extra_link_args=["-pthread"],
            libraries=["m"],
        ),
    ]
)
