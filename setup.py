"""Build the optional native media loop (`flowagent._medialoop`); everything else is in
pyproject.toml. `optional=True`: without a C compiler the install still succeeds and flowagent
uses its pure-Python media path (see docs/runtime.md, FLOWAGENT_MEDIA)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "flowagent._medialoop",
            sources=["flowagent/_medialoop.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
            optional=True,
        )
    ]
)
