"""Regenerate specs/data/friedman1_{train,test}.csv: Friedman's #1 regression benchmark.

    y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + N(0, 1),  x ~ U[0, 1]^5
(J. H. Friedman, "Multivariate adaptive regression splines", Ann. Statist. 1991). Seeded, so the
files are the same on every machine; 800 training and 200 test rows.
"""
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "specs" / "data"


def make(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.random((n, 5))
    y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
         + rng.standard_normal(n))
    return np.column_stack([x, y])


def main() -> None:
    rng = np.random.default_rng(1991)
    header = "x1,x2,x3,x4,x5,y"
    OUT.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 800), ("test", 200)):
        np.savetxt(OUT / f"friedman1_{name}.csv", make(n, rng), delimiter=",", fmt="%.6f", header=header,
                   comments="")


if __name__ == "__main__":
    main()
