#!/usr/bin/env python3
"""Where two training steps' GPU time goes, side by side, by class of kernel (issue 5's end-to-end
comparison): lsst-run's kernels (tests/bench/gpu/profile.sh, Nsight Compute) against torch.compile's
(tests/bench/gpu/torch_peer.py --profile, torch.profiler).

    kernel_classes.py [--names lsst,torch] A.csv [B.csv]

Each CSV: kernel,calls_per_step,ms_per_step (one row per kernel function, per step). Prints a
markdown table: class, ms per step and calls of each, and A - B; then the kernels that fell in no
class ("other"), costliest first, so the classes can be told apart when a name is new.
"""
import argparse
import csv
import sys

# (class, substrings of the lowercased kernel name): the first class with a match wins, so the
# attention kernels come before the GEMMs (some of their names hold "gemm"), LayerNorm before GELU
# (inductor fuses a LayerNorm with its neighbours: "triton_..._fused_add_native_layer_norm_...").
CLASSES = [
    ("attention backward", ["attn_bwd", "attn_dq", "attn_dsum", "attn_kv_bound", "attn_qblock_max", "gen_backward",
                            "flash_bwd", "dot_do_o", "convert_dq", "fmha_bwd", "fmha_dgrad", "bprop"]),
    ("attention forward", ["attn_fwd", "gen_forward", "flash_fwd", "fmha", "fprop", "attn_wgmma_probe"]),
    ("GEMM", ["bias_broadcast", "gemm", "nvjet", "xmma", "cutlass", "sm90_", "sm80_", "ampere_", "cublas", "splitk",
              "aten::mm", "aten::addmm", "aten::bmm"]),
    ("LayerNorm", ["layernorm", "layer_norm", "columns_finish"]),
    ("GELU", ["gelu"]),
    ("bias gradients (column sums)", ["colsum", "fused_sum", "red_fused_sum", "reduce_kernel", "aten::sum"]),
    ("residual adds", ["residual", "triton_poi_fused_add"]),
    ("optimizer, clipping, casts", ["adam", "multi_tensor", "foreach", "sum_squares", "norm", "clip", "scale_kernel",
                                    "copy_to_bf16", "_to_copy", "aten::mul_", "aten::add_", "aten::lerp"]),
    ("embedding, loss", ["embedding", "softmax_xent", "cross_entropy", "nll_loss", "log_softmax", "softmax",
                         "index", "gather", "scatter"]),
    ("communication, row layouts", ["nccl", "seq_place_rows", "seq_take_rows"]),
    ("memset, memcpy", ["memset", "memcpy", "fill", "zero"]),
]
OTHER = "other"


def kernel_class(name):
    low = name.lower()
    for cls, keys in CLASSES:
        if any(k in low for k in keys):
            return cls
    return OTHER


def read(path):
    """{kernel: (calls, ms)} of one per-step CSV."""
    rows = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows[r["kernel"]] = (float(r["calls_per_step"]), float(r["ms_per_step"]))
    return rows


def by_class(rows):
    out = {}
    for name, (calls, ms) in rows.items():
        c, m = out.get(kernel_class(name), (0.0, 0.0))
        out[kernel_class(name)] = (c + calls, m + ms)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", default="", help="column names, comma-separated (default: the file names)")
    ap.add_argument("csv", nargs="+")
    args = ap.parse_args()
    if len(args.csv) > 2:
        ap.error("one or two CSV files")
    names = args.names.split(",") if args.names else args.csv
    if len(names) != len(args.csv):
        ap.error("--names: one name per CSV file")
    try:
        sides = [read(p) for p in args.csv]
    except (OSError, KeyError, ValueError) as e:
        print(f"kernel_classes: error: {e}", file=sys.stderr)
        return 1
    classes = [by_class(s) for s in sides]
    order = [c for c, _ in CLASSES] + [OTHER]
    head = "| class | " + " | ".join(f"{n} ms | {n} calls" for n in names)
    head += f" | {names[0]} - {names[1]} ms |" if len(names) == 2 else " |"
    print(head)
    print("|---" + "|---:|---:" * len(names) + ("|---:|" if len(names) == 2 else "|"))
    totals = [0.0] * len(sides)
    for cls in order:
        cells = [cl.get(cls, (0.0, 0.0)) for cl in classes]
        if all(calls == 0 for calls, _ in cells):
            continue
        line = f"| {cls} | " + " | ".join(f"{ms:.3f} | {calls:.0f}" for calls, ms in cells)
        if len(cells) == 2:
            line += f" | {cells[0][1] - cells[1][1]:+.3f}"
        print(line + " |")
        totals = [t + ms for t, (_, ms) in zip(totals, cells)]
    line = "| **all kernels** | " + " | ".join(f"**{t:.3f}** | " for t in totals)
    print(line + (f"| **{totals[0] - totals[1]:+.3f}** |" if len(totals) == 2 else "|"))
    for name, side in zip(names, sides):
        other = sorted(((ms, k) for k, (_, ms) in side.items() if kernel_class(k) == OTHER), reverse=True)
        if other:
            print(f"\n{name}, kernels in no class: " + "; ".join(f"{k[:90]} {ms:.3f} ms" for ms, k in other[:8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
