"""Rewrite spec files in the canonical form ``Spec.to_json`` produces (what the round-trip test
expects): ``python tools/format_specs.py specs/*.json``. Validates each file on the way."""
import sys
from pathlib import Path

from nngraph.spec import load_spec

for name in sys.argv[1:] or [str(p) for p in Path("specs").glob("*.json")]:
    path = Path(name)
    text = load_spec(path).to_json()
    if path.read_text() != text:
        path.write_text(text)
        print(f"formatted {path}")
