"""Builds the optional C speedups (driver/_speedups.c, driver/outputs/forward/_entries.c,
driver/outputs/loki/_encode.c, driver/outputs/elasticsearch/_encode.c); everything else is declared in
pyproject.toml.

``optional=True``: without a compiler or Python headers the install goes on without the extension and the
pure-Python code runs. One abi3 build serves every CPython >= 3.11 of the same architecture.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "driver._speedups",
            ["driver/_speedups.c"],
            depends=["driver/_logentry.h", "driver/_jsonescape.h"],
            py_limited_api=True,
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "driver.outputs.forward._entries",
            ["driver/outputs/forward/_entries.c"],
            py_limited_api=True,
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "driver.outputs.loki._encode",
            ["driver/outputs/loki/_encode.c"],
            depends=["driver/_logentry.h"],
            py_limited_api=True,
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "driver.outputs.elasticsearch._encode",
            ["driver/outputs/elasticsearch/_encode.c"],
            depends=["driver/_logentry.h", "driver/_jsonescape.h"],
            py_limited_api=True,
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
