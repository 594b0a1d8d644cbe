"""A walk through the Python API: load a spec, train, evaluate, export, verify, serve — then build a
network with the Python builder and train it on arrays you make yourself.

    python examples/walkthrough.py
"""
from pathlib import Path
import tempfile

import numpy as np

import nngraph
from nngraph import spec as S

ROOT = Path(__file__).resolve().parent.parent
out = Path(tempfile.mkdtemp(prefix="nngraph-walkthrough-"))

# 1. A spec file and its built-in data (the UCI digits).
spec = nngraph.load_spec(ROOT / "specs" / "digits_mlp.json")
model = nngraph.compile(spec)
print(model.graph.table())
data = nngraph.load_data(spec)
history = model.fit(data.x, data.y, epochs=20)
print(f"train loss after {len(history.records)} epochs: {history.last.loss:.4f}")
print("test:", model.evaluate(data.x_test, data.y_test))

# 2. Export to ONNX, verify against the Numba forward pass, serve through onnxruntime.
path = model.export_onnx(out / "digits_mlp.onnx")
report = nngraph.verify(path, reference=True)
print(report.summary())
probs = nngraph.run(path, data.x_test[:5])
print("onnxruntime predictions:", probs.argmax(axis=1), "labels:", data.y_test[:5])

# 3. The same thing built in Python: a regression network on arrays made here.
rng = np.random.default_rng(0)
x = rng.uniform(-2, 2, size=(2000, 3)).astype(np.float32)
y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2]
net = S.build("toy_regression", inputs={"x": S.Input((3,))},
              layers=[S.Dense(32, "tanh"), S.Dense(32, "tanh"), S.Dense(1)],
              loss="mse", optimizer=S.Adam(lr=0.01),
              train=S.TrainConfig(epochs=60, batch_size=64, seed=0, validation_split=0.2))
print(net.to_json())
reg = nngraph.compile(net)
hist = reg.fit(x, y)
print(f"validation MSE: {hist.last.val_loss:.4f}")
reg.export_onnx(out / "toy_regression.onnx")
print(nngraph.verify(out / "toy_regression.onnx").summary())
print(f"files in {out}")
