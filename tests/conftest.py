"""Session-wide test settings: caches go to a temporary folder, never to the user's home."""

from __future__ import annotations

import os
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir():
    old = os.environ.get("ISAC_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="isac-test-cache-") as d:
        os.environ["ISAC_CACHE_DIR"] = d
        yield d
    if old is None:
        os.environ.pop("ISAC_CACHE_DIR", None)
    else:
        os.environ["ISAC_CACHE_DIR"] = old
