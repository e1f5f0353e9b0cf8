#!/usr/bin/env python3
"""PyTorch peer of lsst-run's training step (ARCHITECTURE 4.1), for the end-to-end comparison of
issue 5: the same model written in PyTorch, compiled with torch.compile, bf16 autocast with fp32
master weights, flash attention, fused AdamW, on the same GPU. Prints tokens/s and MFU.

    python3 tests/bench/gpu/torch_peer.py [--layers 12 --dim 768 --heads 12 --seq 8192 --batch 1]
                                          [--steps 30 --warmup 10] [--no-compile] [--peak TFLOPS]
                                          [--data SHARD.h5] [--profile KERNELS.csv]
                                          [--device cpu]

The model, as lsst's (runtime/model.c): byte vocabulary (256), learned token and position
embeddings, L pre-LayerNorm blocks (LN, causal multi-head attention with a fused QKV projection,
residual, LN, MLP dim->4*dim with tanh-GELU, residual), final LN, untied output projection
without bias; biases on every other linear layer; LayerNorm eps 1e-5; init N(0, 0.02) with the
residual projections scaled by 1/sqrt(2L); loss = mean cross-entropy over all tokens.
The step: forward, backward, gradient clipping at 1.0 (global norm), AdamW (0.9, 0.95, eps 1e-8,
weight decay 0.1 on matrices and embeddings only), lr 3e-4 — lsst-run's defaults.
Tokens are random bytes (speed does not depend on them) unless --data names an lsst-prep shard
(needs h5py).

MFU = model FLOPs per token x tokens/s / peak bf16 FLOP/s of the card, model FLOPs per token =
6 * N_matmul_params + 6 * L * dim * T (causal attention scores and values, fwd+bwd; the
PaLM convention halved for the causal mask), N_matmul_params = L * 12 * dim^2 + vocab * dim.
Output: one CSV line on stdout:
    impl,gpu,layers,dim,heads,seq,batch,step_ms,tokens_per_s,mfu,loss_first,loss_last
--profile: after the timed steps, PROFILE_STEPS more under torch.profiler; their kernels (name,
calls_per_step, ms_per_step) go to KERNELS.csv, for tests/bench/gpu/kernel_classes.py to set beside
lsst-run's (tests/bench/gpu/profile.sh). --device cpu: a smoke run of this script on a machine
without a GPU (no torch.compile, no timing worth a number; the profile lists the CPU's leaf ops).
"""
import argparse
import collections
import csv
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Dense bf16 tensor-core peaks (FLOP/s), by device-name substring; --peak overrides.
PEAKS = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12),
         ("A10", 125e12), ("V100", 125e12)]


class Block(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim, eps=1e-5)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attproj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim, eps=1e-5)
        self.fc = nn.Linear(dim, mlp)
        self.fcproj = nn.Linear(mlp, dim)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attproj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers, dim, heads, mlp, vocab, seq):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(seq, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp) for _ in range(layers))
        self.lnf = nn.LayerNorm(dim, eps=1e-5)
        self.wout = nn.Linear(dim, vocab, bias=False)
        resid = 1.0 / math.sqrt(2 * layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                nn.init.ones_(p)
            else:
                std = 0.02 * resid if ("attproj" in name or "fcproj" in name) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, tokens, targets):
        T = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(T, device=tokens.device))
        for b in self.blocks:
            x = b(x)
        logits = self.wout(self.lnf(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def batches(args, device):
    if args.data:
        import h5py  # only for real data
        with h5py.File(args.data, "r") as f:
            data = torch.from_numpy(f["tokens"][: 64 * (args.seq + 1) * args.batch].astype("int64"))
        n = (data.numel() - 1) // (args.seq + 1) * (args.seq + 1)
        seqs = data[: n + 1]
        i = 0
        while True:
            rows = []
            for _ in range(args.batch):
                if i + args.seq + 1 > seqs.numel():
                    i = 0
                rows.append(seqs[i:i + args.seq + 1])
                i += args.seq
            x = torch.stack(rows).to(device)
            yield x[:, :-1].contiguous(), x[:, 1:].contiguous()
    gen = torch.Generator(device=device).manual_seed(1)
    while True:
        x = torch.randint(0, args.vocab, (args.batch, args.seq + 1), device=device, generator=gen)
        yield x[:, :-1].contiguous(), x[:, 1:].contiguous()


PROFILE_STEPS = 3


def profile_kernels(step, path, cuda):
    """Runs PROFILE_STEPS steps under torch.profiler; writes each kernel's calls and ms per step to
    path (CSV: kernel,calls_per_step,ms_per_step, costliest first). Without CUDA, the CPU's leaf ops."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(PROFILE_STEPS):
            step()
        if cuda:
            torch.cuda.synchronize()
    us, calls = collections.Counter(), collections.Counter()
    for e in prof.events():
        kernel = e.device_type == DeviceType.CUDA if cuda else not e.cpu_children
        if kernel:
            us[e.name] += e.time_range.elapsed_us()
            calls[e.name] += 1
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kernel", "calls_per_step", "ms_per_step"])
        for name, t in us.most_common():
            w.writerow([name, f"{calls[name] / PROFILE_STEPS:g}", f"{t / 1e3 / PROFILE_STEPS:.4f}"])
    total = sum(us.values()) / 1e3 / PROFILE_STEPS
    print(f"# profile: {len(us)} kernels, {total:.2f} ms of them per step -> {path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--mlp", type=int, default=0, help="default 4 x dim")
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation happens here)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--peak", type=float, default=0.0, help="bf16 peak TFLOP/s of the card (default: by name)")
    ap.add_argument("--data", default="", help="an lsst-prep shard (HDF5 /tokens) instead of random bytes")
    ap.add_argument("--profile", default="", help="CSV of the kernels of a step (torch.profiler), after the timing")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke run without a GPU")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("torch_peer: no CUDA device", file=sys.stderr)
        return 1
    device = args.device
    torch.manual_seed(1)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 stays fp32 (only the master-weight update)
    mlp = args.mlp or 4 * args.dim
    model = GPT(args.layers, args.dim, args.heads, mlp, args.vocab, args.seq).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]  # matrices and embeddings
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if cuda else {}))
    compiled = cuda and not args.no_compile
    step_model = torch.compile(model) if compiled else model
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = args.peak * 1e12 if args.peak else next((p for k, p in PEAKS if k in name), 0.0)
    n_matmul = args.layers * (3 * args.dim * args.dim + args.dim * args.dim + 2 * args.dim * mlp) + args.vocab * args.dim
    flops_per_token = 6 * n_matmul + 6 * args.layers * args.dim * args.seq
    print(f"# torch_peer on {name}, torch {torch.__version__}, compile={compiled}, "
          f"{sum(p.numel() for p in model.parameters())} params", file=sys.stderr)

    data = batches(args, device)

    def step():  # one training step; its loss (a 0-d tensor)
        x, y = next(data)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    losses, times = [], []
    t_compile = time.time()
    for it in range(args.warmup + args.steps):
        if cuda:
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
            ev[0].record()
            loss = step()
            ev[1].record()
            torch.cuda.synchronize()
            ms = ev[0].elapsed_time(ev[1])
        else:
            t = time.perf_counter()
            loss = step()
            ms = (time.perf_counter() - t) * 1e3
        losses.append(loss.item())
        if it == args.warmup - 1:
            print(f"# warmup (incl. compilation) took {time.time() - t_compile:.1f} s", file=sys.stderr)
        if it >= args.warmup:
            times.append(ms)
    step_ms = statistics.median(times)
    tok_s = args.batch * args.seq / (step_ms * 1e-3)
    mfu = flops_per_token * tok_s / peak if peak else float("nan")
    impl = "torch-compile" + ("" if compiled else "-off") + ("" if cuda else "-cpu")
    print("impl,gpu,layers,dim,heads,seq,batch,step_ms,tokens_per_s,mfu,loss_first,loss_last")
    print(f"{impl},{name.replace(',', ' ')},{args.layers},{args.dim},"
          f"{args.heads},{args.seq},{args.batch},{step_ms:.3f},{tok_s:.0f},{mfu:.4f},{losses[0]:.4f},{losses[-1]:.4f}")
    sys.stdout.flush()
    if args.profile:
        profile_kernels(step, args.profile, cuda)
    return 0


if __name__ == "__main__":
    sys.exit(main())
