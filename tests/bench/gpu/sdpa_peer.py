#!/usr/bin/env python3
"""PyTorch peer of tests/bench/gpu/attn_bench.cu: causal scaled_dot_product_attention, bf16,
forward and backward, timed with CUDA events on the same GPU, same shapes and FLOP convention.

    python3 tests/bench/gpu/sdpa_peer.py [--hs 64,128] [--seq 4096,...] [--iters 10] [--warmup 3]
                                         [--backends flash,cudnn]

Shapes: B = max(1, 16384 // T), NH = 2048 // hs, q/k/v (B, NH, T, hs) bf16 (PyTorch's layout).
FLOPs: forward 4 * B * NH * T^2 * hs / 2 (causal), backward 2.5 x forward.
The goal backend is FLASH_ATTENTION (FlashAttention-2 inside PyTorch); cudnn is printed for
information when this PyTorch build has it. Output: CSV on stdout, same columns as attn_bench:
    impl,hs,seq,batch,heads,variant,fwd_ms,bwd_ms,fwd_tflops,bwd_tflops,total_tflops
"""
import argparse
import statistics
import sys

import torch
import torch.nn.functional as F


def backend_context(name):
    # torch >= 2.3: torch.nn.attention.sdpa_kernel; older: torch.backends.cuda.sdp_kernel.
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        table = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}
        if not hasattr(SDPBackend, table[name]):
            return None
        return sdpa_kernel(getattr(SDPBackend, table[name]))
    except ImportError:
        if name != "flash":
            return None
        return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False)


def bench(hs, T, backend, iters, warmup):
    B, NH = max(1, 16384 // T), 2048 // hs
    gen = torch.Generator(device="cuda").manual_seed(1)
    shape = (B, NH, T, hs)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_(True)
               for _ in range(3))
    dout = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen)
    ctx = backend_context(backend)
    if ctx is None:
        return None
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    tf, tb = [], []
    with ctx:
        for it in range(warmup + iters):
            q.grad = k.grad = v.grad = None
            ev[0].record()
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            ev[1].record()
            out.backward(dout)
            ev[2].record()
            torch.cuda.synchronize()
            if it >= warmup:
                tf.append(ev[0].elapsed_time(ev[1]))
                tb.append(ev[1].elapsed_time(ev[2]))
    fwd_flops = 4.0 * B * NH * T * T * hs / 2.0
    bwd_flops = 2.5 * fwd_flops
    mf, mb = statistics.median(tf), statistics.median(tb)
    return (B, NH, mf, mb, fwd_flops / (mf * 1e-3) / 1e12, bwd_flops / (mb * 1e-3) / 1e12,
            (fwd_flops + bwd_flops) / ((mf + mb) * 1e-3) / 1e12)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hs", default="64,128")
    ap.add_argument("--seq", default="4096,8192,16384,32768")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--backends", default="flash,cudnn")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("sdpa_peer: no CUDA device", file=sys.stderr)
        return 1
    print(f"# sdpa_peer on {torch.cuda.get_device_name(0)}, torch {torch.__version__}", file=sys.stderr)
    print("impl,hs,seq,batch,heads,variant,fwd_ms,bwd_ms,fwd_tflops,bwd_tflops,total_tflops", flush=True)
    for hs in (int(x) for x in a.hs.split(",")):
        for T in (int(x) for x in a.seq.split(",")):
            for backend in a.backends.split(","):
                try:
                    r = bench(hs, T, backend, a.iters, a.warmup)
                except RuntimeError as e:  # backend not usable for this shape / GPU
                    print(f"# sdpa-{backend} hs={hs} T={T}: {str(e).splitlines()[0]}", file=sys.stderr)
                    r = None
                torch.cuda.empty_cache()
                if r is None:
                    continue
                B, NH, mf, mb, tf, tb, tt = r
                print(f"sdpa-{backend},{hs},{T},{B},{NH},-,{mf:.4f},{mb:.4f},{tf:.2f},{tb:.2f},{tt:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
