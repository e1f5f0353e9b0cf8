#!/usr/bin/env bash
# Where lsst-run's GPU step time goes: Nsight Compute's duration of every kernel of a short
# lsst-run (backend: cuda), summed per kernel function, largest first, with the share of the total.
# The model is the end-to-end comparison's (12 layers, dim 768, seq 8192) unless CONFIG names one.
#   tests/bench/gpu/profile.sh OUTDIR [STEPS]     (on the GPU machine, device kit sourced, built)
# Kernels only: gaps between kernels (host work, synchronization) are the step time minus the sum.
# OUTDIR/kernels_per_step.csv: every kernel (kernel,calls_per_step,ms_per_step), for
# tests/bench/gpu/kernel_classes.py to set beside torch.compile's (torch_peer.py --profile).
set -eu
cd "$(dirname "$0")/../../.."
OUTDIR=${1:?usage: profile.sh OUTDIR [STEPS]}
STEPS=${2:-2}
BIN=${BIN:-build-gpu/bin}
mkdir -p "$OUTDIR"
cfg=${CONFIG:-$OUTDIR/profile.yaml}
if [ -z "${CONFIG:-}" ]; then   # CONFIG names a config with its data prepared (tests/gpu/run.sh: e2e's)
  corpus=.device-data/enwik8-head-1MiB
  [ -f "$corpus" ] || corpus=../shared/data/enwik8/enwik8-head-1MiB
  "$BIN/lsst-prep" --quiet --force "$corpus" "$OUTDIR/data"
  cat > "$cfg" <<YAML
data:     {dir: $OUTDIR/data, seq_len: 8192, batch: 1}
model:    {layers: 12, dim: 768, heads: 12, mlp: 3072, vocab: 256}
parallel: {scheme: none}
train:    {steps: $STEPS, lr: 3.0e-4, warmup: 0, seed: 1, eval_every: 0, ckpt_every: 0}
backend:  cuda
output:   {dir: $OUTDIR/run}
YAML
fi
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
# Duration and DRAM bytes of every kernel (GB/s: how near a memory-bound kernel is to the card's
# bandwidth); where this ncu cannot collect the DRAM counters, the duration alone.
profile() {
  rm -rf "$OUTDIR/run"
  "$NCU" --csv --print-units base --print-kernel-base function --clock-control none \
    --metrics "$1" --log-file "$OUTDIR/kernels.csv" \
    "$BIN/lsst-run" --config "$cfg" --set train.steps="$STEPS" --set output.dir="$OUTDIR/run" > "$OUTDIR/run.log" 2>&1
}
profile gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum ||
  { echo "profile.sh: ncu without the DRAM counters (see $OUTDIR/run.log)"; profile gpu__time_duration.sum; }
env -u LD_LIBRARY_PATH python3 - "$OUTDIR/kernels.csv" "$STEPS" "$OUTDIR/kernels_per_step.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))]
steps = int(sys.argv[2])
tot, cnt, nbytes = collections.Counter(), collections.Counter(), collections.Counter()
for r in rows:
    value = float(r["Metric Value"].replace(",", ""))
    if r.get("Metric Name") == "gpu__time_duration.sum":
        tot[r["Kernel Name"]] += value
        cnt[r["Kernel Name"]] += 1
    elif r.get("Metric Name", "").startswith("dram__bytes_"):
        nbytes[r["Kernel Name"]] += value
total = sum(tot.values())
print(f"{sum(cnt.values())} kernel launches, {total / 1e6 / steps:.2f} ms of kernels per step ({steps} steps)")
print(f"{'ms/step':>8} {'share':>6} {'calls':>6} {'GB/s':>7}  kernel")
for name, ns in tot.most_common(30):
    gbs = f"{nbytes[name] / ns:7.0f}" if nbytes else "      -"   # bytes per ns = GB/s
    print(f"{ns / 1e6 / steps:8.3f} {ns / total:6.1%} {cnt[name] / steps:6.0f} {gbs}  {name[:110]}")
with open(sys.argv[3], "w", newline="") as f:   # every kernel, for tests/bench/gpu/kernel_classes.py
    w = csv.writer(f)
    w.writerow(["kernel", "calls_per_step", "ms_per_step"])
    for name, ns in tot.most_common():
        w.writerow([name, f"{cnt[name] / steps:g}", f"{ns / 1e6 / steps:.4f}"])
PY
