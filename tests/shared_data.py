"""Where the tests find the shared labelled data, the same way in every test file.

The folder is ``$PARTSEG_SHARED_DATA`` when set, else ``../shared/data`` beside the
repository root (the layout of the project machines). A test that needs it calls
`shared_data(...)`: when the folder is absent the test skips, except under ``CI=true``,
where a missing data folder fails the run instead of silently skipping the real-data
tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "PARTSEG_SHARED_DATA"


def shared_data_root() -> Path:
    """The shared data folder (it may not exist)."""
    configured = os.environ.get(ENV_VAR)
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def shared_data(*parts: str) -> Path:
    """``shared_data_root() / parts``; skips the calling test when it is missing (fails
    it under CI=true)."""
    path = shared_data_root().joinpath(*parts)
    if not path.exists():
        message = (f"shared data {path} is absent (set {ENV_VAR} or put the data in "
                   f"{REPO_ROOT.parent / 'shared' / 'data'})")
        if _in_ci():
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    return path
