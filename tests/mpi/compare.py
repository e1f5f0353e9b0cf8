#!/usr/bin/env python3
"""Compare a distributed lsst-run against the single-rank run of the same config.

usage: compare.py REF_DIR RUN_DIR [--rtol R]

Checks, for every step, the loss and the gradient norm of every rank's metrics
file against the single-rank run, and all parameters and AdamW moments of the
final checkpoints. Tolerance: relative per step (float32 rounding: the sums of
a sharded run happen in another order). Prints the worst deviations.
"""
import glob
import sys

import h5py
import numpy as np


def main():
    ref, run = sys.argv[1], sys.argv[2]
    rtol = float(sys.argv[sys.argv.index("--rtol") + 1]) if "--rtol" in sys.argv else 1e-5
    r = h5py.File(f"{ref}/metrics/rank-00000.h5", "r")["steps"][()]
    worst = {"loss": 0.0, "grad_norm": 0.0}
    files = sorted(glob.glob(f"{run}/metrics/rank-*.h5"))
    assert files, f"no metrics in {run}"
    for path in files:
        s = h5py.File(path, "r")["steps"][()]
        assert len(s) == len(r), f"{path}: {len(s)} steps, reference has {len(r)}"
        for field in worst:
            rel = np.abs(s[field] - r[field]) / np.maximum(np.abs(r[field]), 1e-30)
            worst[field] = max(worst[field], float(rel.max()))
    ckpt_ref = sorted(glob.glob(f"{ref}/checkpoints/step-*.h5"))[-1]
    ckpt_run = sorted(glob.glob(f"{run}/checkpoints/step-*.h5"))[-1]
    a, b = h5py.File(ckpt_ref, "r"), h5py.File(ckpt_run, "r")
    worst_param, where = 0.0, ""
    for group in ("params", "adam_m", "adam_v"):
        for name in a[group]:
            x, y = a[group][name][()], b[group][name][()]
            assert x.shape == y.shape, (group, name, x.shape, y.shape)
            # relative to the tensor's scale: elementwise relative error is meaningless near 0
            err = float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-30))
            if err > worst_param:
                worst_param, where = err, f"{group}/{name}"
    print(f"ranks {len(files)}  max rel diff: loss {worst['loss']:.2e}  grad_norm {worst['grad_norm']:.2e}  "
          f"tensors {worst_param:.2e} ({where})  [rtol {rtol:g}]")
    ok = worst["loss"] <= rtol and worst["grad_norm"] <= 10 * rtol and worst_param <= 10 * rtol
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
