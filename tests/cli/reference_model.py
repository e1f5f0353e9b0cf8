#!/usr/bin/env python3
"""An independent float64 numpy transformer (ARCHITECTURE 4.1) on an lsst-run checkpoint.

usage: reference_model.py CHECKPOINT VALID_SHARD SEQ_LEN HEADS NSEQ

Evaluates the checkpoint's parameters on the first NSEQ evaluation windows of the valid
split (window k = tokens [k*S, k*S+S+1), as runtime/data.h defines them) and prints the
mean loss in nats. lsst-run --eval-only valid must print the same number.
"""
import sys

import h5py
import numpy as np


def layernorm(x, w, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * w + b


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def forward(P, x_tokens, heads):
    S = len(x_tokens)
    C = P["wte"].shape[1]
    hs = C // heads
    causal = np.tril(np.ones((S, S))) > 0
    x = P["wte"][x_tokens] + P["wpe"][:S]
    for l in range(P["h.ln1w"].shape[0]):
        h = layernorm(x, P["h.ln1w"][l], P["h.ln1b"][l])
        qkv = h @ P["h.qkvw"][l].T + P["h.qkvb"][l]
        q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
        att = np.zeros((S, C))
        for hd in range(heads):
            sl = slice(hd * hs, (hd + 1) * hs)
            s = np.where(causal, q[:, sl] @ k[:, sl].T / np.sqrt(hs), -np.inf)
            p = np.exp(s - s.max(1, keepdims=True))
            att[:, sl] = (p / p.sum(1, keepdims=True)) @ v[:, sl]
        x = x + att @ P["h.attprojw"][l].T + P["h.attprojb"][l]
        h = layernorm(x, P["h.ln2w"][l], P["h.ln2b"][l])
        x = x + gelu(h @ P["h.fcw"][l].T + P["h.fcb"][l]) @ P["h.fcprojw"][l].T + P["h.fcprojb"][l]
    return layernorm(x, P["lnfw"], P["lnfb"]) @ P["wout"].T


def main():
    ckpt, shard, S, heads, nseq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    g = h5py.File(ckpt, "r")["params"]
    P = {k: g[k][()].astype(np.float64) for k in g}
    tokens = h5py.File(shard, "r")["tokens"][()].astype(np.int64)
    total = 0.0
    for w in range(nseq):
        window = tokens[w * S: w * S + S + 1]
        logits = forward(P, window[:-1], heads)
        mx = logits.max(1, keepdims=True)
        lse = np.log(np.exp(logits - mx).sum(1)) + mx[:, 0]
        total += (lse - logits[np.arange(S), window[1:]]).sum()
    print(f"{total / (nseq * S):.6f}")


if __name__ == "__main__":
    main()
