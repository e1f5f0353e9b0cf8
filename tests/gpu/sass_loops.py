#!/usr/bin/env python3
"""Instructions per iteration of the tensor-core loops of kernels in a cubin: a static measure of
the attention kernels' per-tile cost that needs no GPU (the softmax's share of the issue slots is
what limits them at head size 64).

    sass_loops.py NVDISASM CUBIN NAME_SUBSTRING...

For every kernel whose mangled name holds one of the substrings, and every loop (a backward
branch) with an HGMMA or HMMA in it: the instructions on the shortest path from the loop's head
to its back edge (the iteration without the rare branches: masking only on the diagonal blocks,
no prefetch at the last), the loop's total, and the shortest path's counts of the opcodes that
carry the softmax (MUFU, FFMA, FADD, FMUL, FMNMX, FSEL, ISETP) and the MMAs. One line per loop.
"""
import collections
import re
import sys

from sass_check import disassemble, sections

BRANCH = re.compile(r"0x([0-9a-f]+)")
SHOWN = ("HGMMA", "HMMA", "MUFU", "FFMA", "FADD", "FMUL", "FMNMX", "FSEL", "ISETP", "SHFL", "LDS", "STS", "BAR")


def loop_paths(insns):
    """(head, back edge, shortest path as a list of opcodes, all opcodes) of each loop with an MMA."""
    index = {a: i for i, (a, _, _, _) in enumerate(insns)}
    out = []
    for i, (addr, op, ops, _) in enumerate(insns):
        m = BRANCH.search(ops[-1]) if op.startswith("BRA") and ops else None
        if not m or int(m.group(1), 16) >= addr or int(m.group(1), 16) not in index:
            continue
        lo, hi = index[int(m.group(1), 16)], i
        body = [o for _, o, _, _ in insns[lo:hi + 1]]
        if not any(o.startswith(("HGMMA", "HMMA")) for o in body):
            continue
        # Shortest path lo -> hi: each instruction steps to the next, a branch (inside the loop) also
        # to its target; an unconditional branch only to its target. Weights 1 (0-1 BFS not needed).
        dist, prev = {lo: 0}, {}
        queue = collections.deque([lo])
        while queue:
            j = queue.popleft()
            if j == hi:
                break
            a, o, p, predicated = insns[j]
            succ = []
            t = BRANCH.search(p[-1]) if o.startswith("BRA") and p else None
            if t and int(t.group(1), 16) in index and lo <= index[int(t.group(1), 16)] <= hi:
                succ.append(index[int(t.group(1), 16)])
            unconditional = o.startswith("BRA") and not predicated
            if not unconditional and j + 1 <= hi:
                succ.append(j + 1)
            for k in succ:
                if k not in dist:
                    dist[k], prev[k] = dist[j] + 1, j
                    queue.append(k)
        path, j = [], hi
        while j in prev or j == lo:
            path.append(insns[j][1])
            if j == lo:
                break
            j = prev[j]
        out.append((insns[lo][0], addr, path[::-1], body))
    return out


def main():
    if len(sys.argv) < 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    nvdisasm, cubin, pats = sys.argv[1], sys.argv[2], sys.argv[3:]
    for name, code in sections(cubin):
        if not name.startswith(".text.") or not any(p in name for p in pats):
            continue
        insns = disassemble(nvdisasm, code, predicates=True)
        for head, edge, path, body in loop_paths(insns):
            c = collections.Counter(o.split(".")[0] for o in path)
            shown = ", ".join(f"{k} {c[k]}" for k in SHOWN if c[k])
            print(f"{name[6:]} loop {head:#x}-{edge:#x}: {len(path)} on the shortest path ({len(body)} in all): {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
