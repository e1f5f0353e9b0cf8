#!/usr/bin/env python3
"""The usual Python preparation of enwik8, as the lsst-prep benchmark's peer.

This is what most transformer repositories do (e.g. the prep_enwik8.py of
Transformer-XL and its descendants): read the whole file, split it 90/5/5 (the
last 5M+5M bytes for the real enwik8), and write each split as text of
space-separated byte values (one output line per input line) plus a raw copy.

    prep_peer.py INPUT OUTDIR
"""
import os
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: prep_peer.py INPUT OUTDIR")
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    data = open(src, "rb").read()
    n = len(data)
    n_valid = n_test = n * 5 // 100  # the same rule as lsst-prep
    n_train = n - n_valid - n_test
    parts = {
        "train": data[:n_train],
        "valid": data[n_train:n_train + n_valid],
        "test": data[n_train + n_valid:],
    }
    for name, part in parts.items():
        print(f"{name}: {len(part)} bytes")
        text = " ".join(str(c) if c != ord("\n") else "\n" for c in part)
        with open(os.path.join(out, name + ".txt"), "w") as f:
            f.write(text)
        with open(os.path.join(out, name + ".txt.raw"), "wb") as f:
            f.write(part)


if __name__ == "__main__":
    main()
