"""The examples run as users run them."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_walkthrough_runs_and_verifies():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "walkthrough.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("OK: max abs error") == 2
    assert "validation MSE" in r.stdout
