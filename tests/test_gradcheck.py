"""`nngraph gradcheck`: the training loss's gradient (fused loss path included) vs finite differences,
on every shipped spec — and proof that the check catches a wrong backward kernel."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from nngraph.cli import main
from nngraph.gradcheck import gradcheck
from nngraph.model import Model
from nngraph.ops import dense_kernels
from nngraph.spec import load_spec

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.json"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_have_correct_gradients(path):
    report = gradcheck(load_spec(path), batch=2)  # two samples: catches mixing across the batch
    assert report.ok, report.summary()
    spec_params = set(Model.compile(load_spec(path)).params.grads)  # trainable parameters
    assert {r.name for r in report.rows} == spec_params  # every parameter was checked
    assert all(r.checks >= 3 for r in report.rows)


def test_gradcheck_catches_a_wrong_backward():
    gemm = dense_kernels.KERNELS["Gemm"]  # the record backend.kernels hands to every plan
    original = gemm.bind_backward

    def off_by_a_bit(node, xs, ps, y, dy, dxs, dps, ws, ctx):
        run = original(node, xs, ps, y, dy, dxs, dps, ws, ctx)

        def wrong():
            run()
            dps[0] *= 1.001  # a 0.1% error in dW
        return wrong

    object.__setattr__(gemm, "bind_backward", off_by_a_bit)
    try:
        report = gradcheck(load_spec(SPECS[0].parent / "xor.json"))
    finally:
        object.__setattr__(gemm, "bind_backward", original)
    assert not report.ok
    assert any(r.name.endswith(".W") and not r.ok(report.tol) for r in report.rows)
    assert all(r.ok(report.tol) for r in report.rows if r.name.endswith(".b"))


def test_cli_gradcheck():
    r = CliRunner().invoke(main, ["gradcheck", str(SPECS[0].parent / "xor.json")])
    assert r.exit_code == 0 and "OK: float64 central differences" in r.output
    assert "dense_0.W" in r.output


def test_probes_across_relu_kinks_are_remeasured_and_a_wrong_backward_still_fails():
    """mnist_resnet's batch norms put thousands of relu inputs near 0, so central differences of its
    convs straddled kinks on every seed (errors ~1e-3): such probes are measured again with smaller
    steps instead of failing — and a 0.1% error in the dense layer's dW is still caught."""
    spec = load_spec(SPECS[0].parent / "mnist_resnet.json")  # passes as a shipped spec (above)
    gemm = dense_kernels.KERNELS["Gemm"]
    original = gemm.bind_backward

    def off_by_a_bit(node, xs, ps, y, dy, dxs, dps, ws, ctx):
        run = original(node, xs, ps, y, dy, dxs, dps, ws, ctx)

        def wrong():
            run()
            dps[0] *= 1.001
        return wrong

    object.__setattr__(gemm, "bind_backward", off_by_a_bit)
    try:
        report = gradcheck(spec)
    finally:
        object.__setattr__(gemm, "bind_backward", original)
    assert not report.ok and [r.name for r in report.rows if not r.ok(report.tol)] == ["probs.W"]
    assert "across a kink, remeasured" in report.summary()  # the network really has kinks
