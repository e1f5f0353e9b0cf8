#!/usr/bin/env python3
"""The comparisons of tests/gpu/train_check.sh, on the runs' per-rank metrics (h5py).

    train_check.py WORKDIR

TAP lines, then "N passed, N failed". Tolerances (fixed before any GPU run):
  cuda (bf16) vs cpu (fp32), 50 steps:       |dloss| / loss <= 2% at every step, <= 0.5% on average
  cuda multi-rank (comm: mpi) vs cuda 1 rank: the same bounds (bf16 GEMM shapes and the fp32
                                              reduction of d[K|V] differ, nothing else)
  evaluation (valid split, steps 25 and 50):  the same bounds
  resume from step 25:                        steps 26..50 loss and grad_norm bitwise equal
  --plan:                                     equal to the reported mem_peak (device bytes)
  LSST_GELU=kernels / LSST_ATTN_BWD=fused:    1 rank vs cpu, 2 ranks (both set) vs cuda 1 rank: as above
  / LSST_BGRAD=kernels / LSST_LN=split /     (LSST_BGRAD, LSST_LN, LSST_RESIDUAL, LSST_QKV: 1 rank vs cpu;
  LSST_RESIDUAL=kernel / LSST_QKV=split:      the kernels line names the choice, and the defaults' the
                                              other; 2 ranks: all four set, and by default QKV two
                                              products there; LSST_QKV's --plan = mem_peak)
  head size 64 (defaults, LSST_ATTN_WGMMA=0,  the same against a cpu run at head size 64; on an sm_90 GPU
  LSST_ATTN_BWD=fused, LSST_ATTN_BWD=atomic   the default, fused, atomic and fixed runs' kernels line names
  with wgmma and mma.sync, =fixed):           wgmma forward and backward; fixed: lss 2x1 vs 1 rank, and
                                              two 1-rank runs bitwise equal (loss, grad_norm)
  comm: nccl (the runs named in $NCCL_RUNS):  1 rank: loss and grad_norm bitwise equal to comm: mpi
                                              (no collective runs); more ranks: as multi-rank above
"""
import os
import sys

import h5py
import numpy as np

W = sys.argv[1]
results = []


def check(ok, name, detail):
    results.append(ok)
    print(f"{'ok' if ok else 'not ok'} {len(results)} - {name}: {detail}")


def table(run, name, rank=0):
    path = os.path.join(W, run, "metrics", f"rank-{rank:05d}.h5")
    if not os.path.exists(path):
        return None
    with h5py.File(path, "r") as f:
        return f[name][:] if name in f else None


def steps(run, rank=0):
    return table(run, "steps", rank)


def compare(name, a, b, max_rel=0.02, mean_rel=0.005):
    if a is None or b is None or len(a) != len(b) or len(a) == 0:
        check(False, name, "missing or unequal step tables")
        return
    la, lb = a["loss"].astype(np.float64), b["loss"].astype(np.float64)
    rel = np.abs(la - lb) / np.abs(lb)
    check(bool(rel.max() <= max_rel and rel.mean() <= mean_rel), name,
          f"{len(la)} steps, max |dloss|/loss {rel.max():.2e} (step {int(a['step'][rel.argmax()])}), "
          f"mean {rel.mean():.2e}; loss {lb[0]:.4f} -> {lb[-1]:.4f} vs {la[-1]:.4f}")


def kernels_used(run):
    """On an sm_90 GPU (H100, H200, GH200) a run without LSST_ATTN_WGMMA=0 must have used wgmma kernels:
    its "cuda:N NAME: attention ..." line says which ran."""
    path = os.path.join(W, f"{run}.log")
    line = next((l for l in open(path) if ": attention (head size" in l), "") if os.path.exists(path) else ""
    hopper = any(h in line.split(": attention")[0] for h in ("H100", "H200", "GH200", "H800", "H20"))
    if not hopper:
        print(f"# {run}: not an sm_90 GPU ({line.strip() or 'no kernels line'}): wgmma not expected")
        return
    used = line.count("wgmma") == 2
    check(used, f"{run}: wgmma forward and backward ran", line.strip())


def kernels_line_says(run, text):
    """The run's kernels line ("cuda:N NAME: attention ... | QKV: ...") names the choice it was given."""
    path = os.path.join(W, f"{run}.log")
    line = next((l for l in open(path) if ": attention (head size" in l), "") if os.path.exists(path) else ""
    check(text in line, f"{run}: its kernels line says '{text}'", line.strip() or "no kernels line")


cpu, cuda = steps("cpu-1"), steps("cuda-1")
compare("cuda vs cpu, 1 rank, 50 steps", cuda, cpu)
for run in ["cuda-2x1", "cuda-4x1", "cuda-2x2", "cuda-2x1-zz-regather", "cuda-mg-2x1", "cuda-mg-4x1", "cuda-mg-2x2"]:
    compare(f"{run} (comm: mpi, one GPU) vs cuda 1 rank", steps(run), cuda)
if os.environ.get("BACKEND", "cuda") == "cuda":
    for run, what in [("cuda-1-gelu-kernels", "LSST_GELU=kernels"), ("cuda-1-fused-bwd", "LSST_ATTN_BWD=fused"),
                      ("cuda-1-bgrad-kernels", "LSST_BGRAD=kernels"), ("cuda-1-ln-split", "LSST_LN=split"),
                      ("cuda-1-residual-kernel", "LSST_RESIDUAL=kernel"), ("cuda-1-qkv-split", "LSST_QKV=split")]:
        compare(f"{run} ({what}) vs cpu, 1 rank", steps(run), cpu)
    for run, text in [("cuda-1", "bias gradients: cuBLASLt epilogues"), ("cuda-1", "LayerNorm: fused"),
                      ("cuda-1", "residual adds: cuBLASLt epilogues"), ("cuda-1", "QKV: one product"),
                      ("cuda-1-bgrad-kernels", "bias gradients: kernels"), ("cuda-1-ln-split", "LayerNorm: split"),
                      ("cuda-1-residual-kernel", "residual adds: kernel"), ("cuda-1-qkv-split", "QKV: two products"),
                      ("cuda-2x1", "QKV: two products")]:   # one product with one rank of the sequence only
        kernels_line_says(run, text)
    for run in ["cuda-2x1-opt", "cuda-mg-2x1-opt"]:
        compare(f"{run} (both) vs cuda 1 rank", steps(run), cuda)
    cpu64, cuda64 = steps("cpu-hs64"), steps("cuda-hs64")
    compare("cuda vs cpu, head size 64, 1 rank", cuda64, cpu64)
    kernels_used("cuda-hs64")
    compare("cuda-hs64-mma (LSST_ATTN_WGMMA=0) vs cpu, head size 64, 1 rank", steps("cuda-hs64-mma"), cpu64)
    compare("cuda-hs64-wgmma-fused vs cpu, head size 64, 1 rank", steps("cuda-hs64-wgmma-fused"), cpu64)
    kernels_used("cuda-hs64-wgmma-fused")
    compare("cuda-hs64-2x1-wgmma (fused) vs cuda 1 rank, head size 64", steps("cuda-hs64-2x1-wgmma"), cuda64)
    compare("cuda-hs64-atomic (LSST_ATTN_BWD=atomic) vs cpu, head size 64, 1 rank", steps("cuda-hs64-atomic"), cpu64)
    kernels_used("cuda-hs64-atomic")
    compare("cuda-hs64-mma-atomic (mma.sync) vs cpu, head size 64, 1 rank", steps("cuda-hs64-mma-atomic"), cpu64)
    compare("cuda-hs64-fixed (LSST_ATTN_BWD=fixed) vs cpu, head size 64, 1 rank", steps("cuda-hs64-fixed"), cpu64)
    kernels_used("cuda-hs64-fixed")
    compare("cuda-hs64-2x1-fixed vs cuda 1 rank, head size 64", steps("cuda-hs64-2x1-fixed"), cuda64)
    a, b = steps("cuda-hs64-fixed"), steps("cuda-hs64-fixed-again")
    same = a is not None and b is not None and len(a) == len(b) and \
        all(np.array_equal(a[k], b[k]) for k in ("step", "loss", "grad_norm"))
    check(same, "LSST_ATTN_BWD=fixed: two runs are bitwise equal", f"{0 if a is None else len(a)} steps compared")
for run in os.environ.get("NCCL_RUNS", "").split():
    if run == "cuda-1-nccl":
        a, b = steps(run), cuda
        same = a is not None and b is not None and len(a) == len(b) and \
            all(np.array_equal(a[k], b[k]) for k in ("step", "loss", "grad_norm"))
        check(same, "comm: nccl, 1 rank, is bitwise comm: mpi", f"{0 if a is None else len(a)} steps compared")
    else:
        compare(f"{run} (comm: nccl, a GPU per rank) vs cuda 1 rank", steps(run), cuda)
compare("evaluation, cuda vs cpu", table("cuda-1", "eval"), table("cpu-1", "eval"))
compare("evaluation, cuda lss 4x1 vs cuda 1 rank", table("cuda-4x1", "eval"), table("cuda-1", "eval"))
if cuda is not None:
    check(bool(cuda["loss"][-1] < cuda["loss"][0] - 1.0), "cuda learns",
          f"loss {cuda['loss'][0]:.4f} -> {cuda['loss'][-1]:.4f}")
res = steps("cuda-1-resumed")
if cuda is not None and res is not None:
    tail = cuda[cuda["step"] > 25]
    same = len(res) == len(tail) and all(np.array_equal(res[k], tail[k]) for k in ("step", "loss", "grad_norm"))
    check(same, "resume at step 25 is bit-exact on the GPU", f"{len(res)} steps compared")
else:
    check(False, "resume at step 25 is bit-exact on the GPU", "missing run")
for run in ["cuda-1", "cuda-2x1", "cuda-mg-2x1"] + \
        (["cuda-1-qkv-split"] if os.environ.get("BACKEND", "cuda") == "cuda" else []) + \
        (["cuda-nccl-2x1"] if "cuda-nccl-2x1" in os.environ.get("NCCL_RUNS", "") else []):
    s = steps(run)
    try:
        planned = int(open(os.path.join(W, run + ".plan")).read().split()[0])
    except (OSError, IndexError, ValueError):
        planned = -1
    measured = int(s["mem_peak"].max()) if s is not None else -2
    check(planned == measured, f"{run}: --plan = device mem_peak", f"plan {planned}, measured {measured} bytes")
for run in ["cuda-1", "cuda-2x1"] if os.environ.get("BACKEND", "cuda") == "cuda" else []:
    path = os.path.join(W, run, "metrics", "rank-00000.h5")
    if os.path.exists(path):
        with h5py.File(path, "r") as f:
            dev = f.attrs.get("device", b"")
        dev = dev.decode() if isinstance(dev, bytes) else str(dev)
        check(dev.startswith("cuda:"), f"{run}: metrics attribute device", dev)
passed = sum(results)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if passed == len(results) else 1)
