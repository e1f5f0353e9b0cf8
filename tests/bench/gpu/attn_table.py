#!/usr/bin/env python3
"""Joins attn_bench.cu's and sdpa_peer.py's CSV files into the comparison table (markdown).

    python3 tests/bench/gpu/attn_table.py OURS.csv SDPA.csv
    python3 tests/bench/gpu/attn_table.py --best HS T OURS.csv

The second form prints "HS=F/B": lsst's fastest forward and backward variant at (HS, T), the
value of LSST_ATTN_VARIANTS that makes a training run use them (nothing when there is no row).

Per (hs, T): lsst's default variant (v0); its fastest forward and fastest backward variant
(chosen separately: attention.cu selects them separately) and the forward+backward TFLOP/s of
that pair; SDPA flash (and cuDNN when measured); the ratio best lsst / SDPA-flash on
forward+backward (goal: >= 0.7). Exit status 0 even when the goal is missed (the table says).
"""
import csv
import sys


def load(path):
    rows = []
    try:
        with open(path) as f:
            for r in csv.DictReader(line for line in f if not line.startswith("#")):
                if r.get("impl"):
                    rows.append(r)
    except OSError as e:
        print(f"attn_table: {path}: {e}", file=sys.stderr)
    return rows


def best_pair(rows, hs, T):
    """The (fwd, bwd) variant numbers of the fastest forward and backward at (hs, T), or None."""
    mine = [r for r in rows if r["impl"] == "lsst" and int(r["hs"]) == hs and int(r["seq"]) == T]
    if not mine:
        return None
    bf = min(mine, key=lambda r: float(r["fwd_ms"]))
    bb = min(mine, key=lambda r: float(r["bwd_ms"]))
    num = lambda v: int(v.lstrip("v"))
    return num(bf.get("fwd_variant") or bf["variant"]), num(bb.get("bwd_variant") or bb["variant"])


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--best":
        hs, T = int(sys.argv[2]), int(sys.argv[3])
        pair = best_pair(load(sys.argv[4]), hs, T)
        if pair:
            print(f"{hs}={pair[0]}/{pair[1]}")
        return 0
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    ours, peer = load(sys.argv[1]), load(sys.argv[2])
    keys = sorted({(int(r["hs"]), int(r["seq"])) for r in ours + peer})
    print("| hs | T | B x NH | lsst v0 fwd / bwd / total | lsst best fwd (variant) / bwd (variant) / total "
          "| SDPA flash fwd / bwd / total | cuDNN total | lsst best / flash |")
    print("|---:|---:|---|---|---|---|---:|---:|")
    worst = None
    fmt = lambda r: (f"{float(r['fwd_tflops']):.0f} / {float(r['bwd_tflops']):.0f} / "
                     f"{float(r['total_tflops']):.0f}") if r else "-"
    for hs, T in keys:
        at = lambda rows: [r for r in rows if int(r["hs"]) == hs and int(r["seq"]) == T]
        mine = at(ours)
        flash = next(iter(r for r in at(peer) if r["impl"] == "sdpa-flash"), None)
        cudnn = next(iter(r for r in at(peer) if r["impl"] == "sdpa-cudnn"), None)
        v0 = next(iter(r for r in mine if r["variant"] == "v0"), None)
        # Fastest forward and fastest backward, each over its own variants; total from their times.
        bf = min(mine, key=lambda r: float(r["fwd_ms"])) if mine else None
        bb = min(mine, key=lambda r: float(r["bwd_ms"])) if mine else None
        best_total = None
        if bf and bb:
            flops = float(bf["fwd_tflops"]) * float(bf["fwd_ms"]) + float(bb["bwd_tflops"]) * float(bb["bwd_ms"])
            best_total = flops / (float(bf["fwd_ms"]) + float(bb["bwd_ms"]))
        any_row = (mine or at(peer))[0]
        ratio = "-"
        if best_total and flash:
            x = best_total / float(flash["total_tflops"])
            worst = x if worst is None else min(worst, x)
            ratio = f"{x:.2f}"
        # The variants that actually ran (a row vN repeats variant 0 where hs has fewer of a kind).
        best_s = (f"{float(bf['fwd_tflops']):.0f} ({bf.get('fwd_variant') or bf['variant']}) / "
                  f"{float(bb['bwd_tflops']):.0f} ({bb.get('bwd_variant') or bb['variant']}) / "
                  f"{best_total:.0f}") if best_total else "-"
        cudnn_s = f"{float(cudnn['total_tflops']):.0f}" if cudnn else "-"
        print(f"| {hs} | {T} | {any_row['batch']} x {any_row['heads']} | {fmt(v0)} | {best_s} | {fmt(flash)} | "
              f"{cudnn_s} | {ratio} |")
    if worst is not None:
        print(f"\nTFLOP/s (FlashAttention FLOP convention, causal). Worst lsst/SDPA-flash ratio: {worst:.2f} "
              f"(goal >= 0.70: {'met' if worst >= 0.7 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
