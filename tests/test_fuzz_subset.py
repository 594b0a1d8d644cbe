"""A bounded, seeded subset of tools/fuzz.py: mutated specs, data files, ONNX files and run
directories through the real CLI (click's CliRunner, in-process). The full run is
``python tools/fuzz.py --cases 10000``."""
from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("nngraph_tools_fuzz", ROOT / "tools" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    fz = _fuzz_module()
    return fz, fz.fuzz(60, seed=0, timeout=60.0, workdir=tmp_path_factory.mktemp("fuzz"))


def test_fuzz_subset_covers_every_kind(fuzz_results):
    fz, results = fuzz_results
    kinds = Counter(case.kind for case, _, _ in results)
    assert set(kinds) == set(fz.KINDS) and len(results) == 60
    # Mostly rejected, some accepted (a mutation that keeps the input valid): both paths run.
    outcomes = Counter(outcome for _, outcome, _ in results)
    assert outcomes["error"] > 0 and outcomes["ok"] > 0


@pytest.mark.parametrize("bad", ["traceback", "multiline", "hang", "crash", "wrong_success"])
def test_fuzz_subset_has_no(fuzz_results, bad):
    fz, results = fuzz_results
    found = [f"case {case.index} ({case.kind}: {'; '.join(case.desc)}): nngraph {' '.join(case.args)} -> {detail}"
             for case, outcome, detail in results if outcome == bad]
    assert not found, "\n".join(found)


def test_fuzz_cases_are_deterministic(tmp_path):
    """The same (seed, index) writes the same files and arguments: a reported case reproduces."""
    fz = _fuzz_module()

    class _NoBases:  # spec cases need no prebuilt model or run
        pass

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ca = fz.make_case(3, 8, ["spec"], a, _NoBases())
    cb = fz.make_case(3, 8, ["spec"], b, _NoBases())
    assert ca.desc == cb.desc
    assert (a / "s.json").read_bytes() == (b / "s.json").read_bytes()
