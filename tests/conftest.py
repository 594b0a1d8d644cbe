from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def specs_dir() -> Path:
    return ROOT / "specs"
