#!/usr/bin/env python3
"""Joins attn_bench.cu's and sdpa_peer.py's CSV files into the comparison table (markdown).

    python3 tests/bench/gpu/attn_table.py OURS.csv SDPA.csv [KERNEL_TEST_LOG ...]
    python3 tests/bench/gpu/attn_table.py --best HS T OURS.csv [KERNEL_TEST_LOG ...]
    python3 tests/bench/gpu/attn_table.py --check-run LSST_RUN_LOG KERNEL_TEST_LOG ...

The second form prints "HS=F/B": lsst's fastest forward and backward variant at (HS, T), the
value of LSST_ATTN_VARIANTS that makes a training run use them (nothing when there is no row).
With the logs of test_cuda_kernels (TAP), only variants those tests passed count, in both forms:
a variant with a "not ok", or with no line at all (the test process went down before it), is
never chosen. The third form reads the attention kernels a training run used (lsst-run's
"attention (head size H): forward vF ... | backward vB ..." line) and prints "tested" when the
kernel tests passed both, else what failed or was not tested, so that an end-to-end time taken
with a wrong kernel is not reported as a result.

Per (hs, T): lsst's default pair (attn_bench's "default" row: what lsst-run uses on that GPU;
variant 0 for older CSVs without one), with its variant numbers; lsst's fastest forward and
fastest backward variant (chosen separately: attention.cu selects them separately) and the
forward+backward TFLOP/s of that pair; SDPA flash (and cuDNN when measured); the ratios default /
SDPA-flash (the goal, >= 0.7, is judged on it) and best / SDPA-flash on forward+backward. Exit
status 0 even when the goal is missed (the table says).
"""
import csv
import re
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


# A kernel-test line of a tensor-core variant: "ok 12 - attention_forward bf16 self hs=64 [v3: ..."
TEST_LINE = re.compile(r"^(not ok|ok) \d+ - attention_(forward|backward) bf16 .* hs=(\d+) \[v(\d+):")


def passed_variants(logs, hs):
    """{"fwd": set, "bwd": set} of head size hs's variants with an "ok" and no "not ok" in logs;
    "nondet": the backward variants whose name says they are not deterministic (fp32 atomics)."""
    seen = {"fwd": {}, "bwd": {}}
    nondet = set()
    for path in logs:
        try:
            lines = open(path, errors="replace").read().splitlines()
        except OSError as e:
            print(f"attn_table: {path}: {e}", file=sys.stderr)
            continue
        for line in lines:
            m = TEST_LINE.match(line)
            if m and int(m.group(3)) == hs:
                side, n = ("fwd" if m.group(2) == "forward" else "bwd"), int(m.group(4))
                seen[side][n] = seen[side].get(n, True) and m.group(1) == "ok"
                if side == "bwd" and "atomics (not deterministic)" in line:
                    nondet.add(n)
    passed = {side: {n for n, good in v.items() if good} for side, v in seen.items()}
    passed["nondet"] = nondet
    return passed


def fv(r):   # the forward variant a row ran (a row vN may have run variant 0 on one side)
    return int((r.get("fwd_variant") or r["variant"]).lstrip("v"))


def bv(r):
    return int((r.get("bwd_variant") or r["variant"]).lstrip("v"))


def best_pair(rows, hs, T, passed=None):
    """The (fwd, bwd) variant numbers of the fastest forward and backward at (hs, T) (among
    `passed` when given, the backward among the deterministic ones: the atomic variants are timed
    end to end on their own), or None."""
    mine = [r for r in rows if r["impl"] == "lsst" and int(r["hs"]) == hs and int(r["seq"]) == T]
    fwd = [r for r in mine if passed is None or fv(r) in passed["fwd"]]
    bwd = [r for r in mine if passed is None or (bv(r) in passed["bwd"] and bv(r) not in passed["nondet"])]
    if not fwd or not bwd:
        return None
    return fv(min(fwd, key=lambda r: float(r["fwd_ms"]))), bv(min(bwd, key=lambda r: float(r["bwd_ms"])))


RUN_LINE = re.compile(r"attention \(head size (\d+)\): forward v(-?\d+) .*\| backward v(-?\d+) ")


def check_run(run_log, logs):
    """The verdict on the attention variants of one lsst-run log (see the module's docstring)."""
    try:
        m = next((m for m in map(RUN_LINE.search, open(run_log, errors="replace")) if m), None)
    except OSError as e:
        return f"no log ({e.strerror})"
    if not m:
        return "no kernels line"
    hs, f, b = (int(x) for x in m.groups())
    passed = passed_variants(logs, hs)
    bad = [f"{side} v{n}" for side, n in (("fwd", f), ("bwd", b)) if n >= 0 and n not in passed[side]]
    return "tested" if not bad else "NOT tested-ok: " + ", ".join(bad)


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "--check-run":
        print(check_run(sys.argv[2], sys.argv[3:]))
        return 0
    if len(sys.argv) >= 5 and sys.argv[1] == "--best":
        hs, T = int(sys.argv[2]), int(sys.argv[3])
        passed = passed_variants(sys.argv[5:], hs) if len(sys.argv) > 5 else None
        pair = best_pair(load(sys.argv[4]), hs, T, passed)
        if pair:
            print(f"{hs}={pair[0]}/{pair[1]}")
        return 0
    if len(sys.argv) < 3 or sys.argv[1] == "--best":
        print(__doc__, file=sys.stderr)
        return 2
    ours, peer = load(sys.argv[1]), load(sys.argv[2])
    if len(sys.argv) > 3:   # only the variants the kernel tests passed (v0 rows stay: the default)
        passed = {hs: passed_variants(sys.argv[3:], hs) for hs in {int(r["hs"]) for r in ours}}
        ours = [r for r in ours if r["variant"] in ("v0", "default") or
                (fv(r) in passed[int(r["hs"])]["fwd"] and bv(r) in passed[int(r["hs"])]["bwd"])]
    keys = sorted({(int(r["hs"]), int(r["seq"])) for r in ours + peer})
    print("| hs | T | B x NH | lsst default (variants) fwd / bwd / total | lsst best fwd (variant) / bwd (variant) / "
          "total | SDPA flash fwd / bwd / total | cuDNN total | default / flash | best / flash |")
    print("|---:|---:|---|---|---|---|---:|---:|---:|")
    worst = None
    fmt = lambda r: (f"{float(r['fwd_tflops']):.0f} / {float(r['bwd_tflops']):.0f} / "
                     f"{float(r['total_tflops']):.0f}") if r else "-"
    for hs, T in keys:
        at = lambda rows: [r for r in rows if int(r["hs"]) == hs and int(r["seq"]) == T]
        mine = at(ours)
        flash = next(iter(r for r in at(peer) if r["impl"] == "sdpa-flash"), None)
        cudnn = next(iter(r for r in at(peer) if r["impl"] == "sdpa-cudnn"), None)
        dflt = next(iter(r for r in mine if r["variant"] == "default"), None) or \
            next(iter(r for r in mine if r["variant"] == "v0"), None)
        mine = [r for r in mine if r["variant"] != "default"] or mine   # best: among the variant rows
        # Fastest forward and fastest backward, each over its own variants; total from their times.
        bf = min(mine, key=lambda r: float(r["fwd_ms"])) if mine else None
        bb = min(mine, key=lambda r: float(r["bwd_ms"])) if mine else None
        best_total = None
        if bf and bb:
            flops = float(bf["fwd_tflops"]) * float(bf["fwd_ms"]) + float(bb["bwd_tflops"]) * float(bb["bwd_ms"])
            best_total = flops / (float(bf["fwd_ms"]) + float(bb["bwd_ms"]))
        any_row = (mine or at(peer))[0]
        ratio = dratio = "-"
        if best_total and flash:
            ratio = f"{best_total / float(flash['total_tflops']):.2f}"
        if dflt and flash:
            x = float(dflt["total_tflops"]) / float(flash["total_tflops"])
            worst = x if worst is None else min(worst, x)
            dratio = f"{x:.2f}"
        # The variants that actually ran (a row vN repeats variant 0 where hs has fewer of a kind).
        best_s = (f"{float(bf['fwd_tflops']):.0f} ({bf.get('fwd_variant') or bf['variant']}) / "
                  f"{float(bb['bwd_tflops']):.0f} ({bb.get('bwd_variant') or bb['variant']}) / "
                  f"{best_total:.0f}") if best_total else "-"
        cudnn_s = f"{float(cudnn['total_tflops']):.0f}" if cudnn else "-"
        dflt_s = f"({fv(dflt)}/{bv(dflt)}) {fmt(dflt)}" if dflt else "-"
        print(f"| {hs} | {T} | {any_row['batch']} x {any_row['heads']} | {dflt_s} | {best_s} | {fmt(flash)} | "
              f"{cudnn_s} | {dratio} | {ratio} |")
    if worst is not None:
        print(f"\nTFLOP/s (FlashAttention FLOP convention, causal). Worst lsst default / SDPA-flash ratio: "
              f"{worst:.2f} (goal >= 0.70: {'met' if worst >= 0.7 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
