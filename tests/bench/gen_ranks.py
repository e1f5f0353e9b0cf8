#!/usr/bin/python3
"""Synthetic per-rank metrics files in the exact layout of runtime/metrics.c
(README "File formats: metrics"): for benchmarks and report tests.

  gen_ranks.py OUTPUT_DIR RANKS STEPS [--scheme lss] [--sp N] [--seq-len L] [--seed S]
               [--eval-every K] [--model JSON]

Writes OUTPUT_DIR/run.yaml-free job output: OUTPUT_DIR/metrics/rank-NNNNN.h5.
Files use the latest HDF5 format, a chunked (1024 rows) unlimited /steps table
and /eval table, and the contract's root attributes, like lsst-run writes them.
Times are random but reproducible (numpy seed): t_step = t_compute + t_comm with
a per-rank slowdown, so imbalance and slowest ranks are well defined.
"""
import argparse, json, math, os, sys
import h5py, numpy as np

STEP = np.dtype([("step", "<i8"), ("loss", "<f8"), ("lr", "<f8"), ("grad_norm", "<f8"), ("tokens", "<i8"),
                 ("t_step", "<f8"), ("t_compute", "<f8"), ("t_comm", "<f8"), ("comm_bytes", "<i8"),
                 ("mem_peak", "<i8")])
EVAL = np.dtype([("step", "<i8"), ("split", "S8"), ("loss", "<f8"), ("bpc", "<f8")])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("ranks", type=int)
    ap.add_argument("steps", type=int)
    ap.add_argument("--scheme", default="lss")
    ap.add_argument("--sp", type=int, default=0, help="sequence group size (default: all ranks)")
    ap.add_argument("--seq-len", type=int, default=0, help="default: 16 tokens per sequence rank")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--model", default='{"layers":2,"dim":32,"heads":4,"mlp":128,"vocab":256}')
    ap.add_argument("--host-ranks", type=int, default=8, help="ranks per host name")
    a = ap.parse_args()
    sp = a.sp or a.ranks
    if a.ranks % sp:
        sys.exit("gen_ranks.py: ranks must be a multiple of --sp")
    dp = a.ranks // sp
    seq_len = a.seq_len or 16 * sp
    rng = np.random.default_rng(a.seed)
    os.makedirs(os.path.join(a.out, "metrics"), exist_ok=True)
    steps = np.arange(1, a.steps + 1)
    loss = 5.5 * np.exp(-steps / (0.5 * a.steps + 1)) + 1.0        # shared by every rank (global batch mean)
    slow = 1.0 + 0.3 * rng.random(a.ranks) ** 8                      # a few ranks up to 30% slower
    for rank in range(a.ranks):
        rows = np.zeros(a.steps, STEP)
        rows["step"] = steps
        rows["loss"] = loss
        rows["lr"] = 3e-4
        rows["grad_norm"] = 1.0 + rng.random(a.steps)
        rows["tokens"] = seq_len // sp
        rows["t_compute"] = 0.010 * slow[rank] * (1.0 + 0.05 * rng.random(a.steps))
        rows["t_comm"] = 0.002 * (1.0 + rng.random(a.steps))
        rows["t_step"] = rows["t_compute"] + rows["t_comm"]
        rows["comm_bytes"] = 0 if a.ranks == 1 else 4096 * (sp - 1)
        rows["mem_peak"] = (1 << 20) * (1 + rank % 3)
        ev_steps = steps[a.eval_every - 1::a.eval_every] if a.eval_every else steps[:0]
        ev = np.zeros(len(ev_steps), EVAL)
        ev["step"] = ev_steps
        ev["split"] = b"valid"
        ev["loss"] = loss[ev_steps - 1] + 0.05
        ev["bpc"] = ev["loss"] / math.log(2)
        path = os.path.join(a.out, "metrics", "rank-%05d.h5" % rank)
        with h5py.File(path, "w", libver="latest") as f:
            f.create_dataset("steps", data=rows, chunks=(1024,), maxshape=(None,))
            f.create_dataset("eval", data=ev, chunks=(256,), maxshape=(None,))
            for k, v in dict(rank=rank, world=a.ranks, sp_rank=rank % sp, dp_rank=rank // sp, sp_size=sp,
                             dp_size=dp, seq_len=seq_len).items():
                f.attrs.create(k, v, dtype="<i4")
            for k, v in dict(scheme=a.scheme, backend="cuda", host="nid%05d" % (rank // a.host_ranks),
                             device="synthetic", model=a.model, git="synthetic").items():
                f.attrs[k] = v


if __name__ == "__main__":
    main()
