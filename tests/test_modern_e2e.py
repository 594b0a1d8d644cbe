"""The networks that need the execution model, end to end: the tabular MLP with batch norm and
dropout trains to its stated quality and exports an inference graph; the MNIST convnet and ResNet
specs export BatchNormalization nodes carrying their running statistics and no Dropout, verify in
inference mode on both sides, and fold their batch norms into the convs."""
from __future__ import annotations

import numpy as np
import onnx

from nngraph.inspect import describe
from nngraph.model import Model
from nngraph.runtime import verify
from nngraph.spec import load_spec
from nngraph.workflow import train


def quiet(_msg: str) -> None:
    pass


def test_friedman_mlp_with_batchnorm_and_dropout(specs_dir, tmp_path):
    out = tmp_path / "f.onnx"
    result = train(specs_dir / "friedman_mlp_bn.json", output=out, log=quiet)
    assert result.test["loss"] < 2.5  # noise variance 1.0, y variance ~24 (as friedman_regression)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Dropout" not in ops and ops.count("BatchNormalization") == 2
    assert verify(out, reference=True).ok
    # validation ran in inference mode: the model's own predictions reproduce the recorded test loss
    pred = result.model.predict(result.dataset.x_test)
    mse = float(np.mean((pred.ravel() - np.asarray(result.dataset.y_test, np.float32).ravel()) ** 2))
    assert abs(mse - result.test["loss"]) < 1e-3 * max(1.0, mse)


def _trained_a_little(spec_path, tmp_path, steps=3):
    """A model of the spec after a few training steps on random 28 x 28 images (moved statistics)."""
    model = Model.compile(load_spec(spec_path))
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    model.fit(x, y, epochs=steps, batch_size=32, validation_split=0.0)
    return model


def test_resnet_exports_batchnorm_with_running_statistics_and_folds(specs_dir, tmp_path):
    model = _trained_a_little(specs_dir / "mnist_resnet.json", tmp_path)
    state = model.params.state_flat
    assert np.any(state[state != 0] != 1.0)  # running statistics moved away from their init
    path = tmp_path / "resnet.onnx"
    model.export_onnx(path)
    text = describe(path)
    assert "Dropout" not in text and "BatchNormalization x6" in text
    assert "stem_bn: running mean stem_bn.running_mean [32]" in text
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    np.testing.assert_array_equal(inits["b1_bn2.running_var"], model.params["b1_bn2.running_var"])
    report = verify(path)
    assert report.ok, report.summary()
    folded = tmp_path / "folded.onnx"
    model.export_onnx(folded, fold_batchnorm=True)
    assert "BatchNormalization" not in describe(folded)
    x = np.random.default_rng(1).random((5, 1, 28, 28), dtype=np.float32)
    import onnxruntime as ort
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    b = ort.InferenceSession(str(folded), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, model.predict(x), atol=1e-5)


def test_convnet_exports_no_dropout_and_verifies(specs_dir, tmp_path):
    model = _trained_a_little(specs_dir / "mnist_convnet.json", tmp_path, steps=1)
    path = tmp_path / "convnet.onnx"
    model.export_onnx(path)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Softmax"]
    assert verify(path, reference=True).ok
    assert sum(p.size for p in model.params.values.values()) == 34_826  # Keras' simple MNIST convnet
