"""Shared fixtures."""

from pathlib import Path

import pytest

#: the BBBC050 mouse-embryo CTC dataset in the shared data folder beside the repository
BBBC050 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bbbc050-mouse-embryo"


@pytest.fixture(scope="session")
def bbbc050() -> Path:
    """Path of the shared BBBC050 mouse-embryo dataset; skips the test when it is absent."""
    if not BBBC050.is_dir():
        pytest.skip(f"shared BBBC050 data not present at {BBBC050}")
    return BBBC050
