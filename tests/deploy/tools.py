"""The command-line tools deploy tests run, found on PATH."""

from __future__ import annotations

import os
import shutil

import pytest


def prometheus_tool(name: str) -> str:
    """The path of ``name`` (``prometheus`` or ``promtool``, from Debian's ``prometheus`` package); a
    skip outside CI where it is missing, a failure in CI (``.ci/run`` installs it)."""
    binary = shutil.which(name)
    if binary is None:
        if os.environ.get("CI"):
            raise AssertionError(f"CI needs {name} (apt-get install prometheus; .ci/run installs it)")
        pytest.skip(f"needs {name} (apt-get install prometheus)")
    return binary
