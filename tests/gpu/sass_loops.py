#!/usr/bin/env python3
"""Instructions per iteration of the tensor-core loops of kernels in a cubin: a static measure of
the attention kernels' per-tile cost that needs no GPU (the softmax's share of the issue slots is
what limits them at head size 64).

    sass_loops.py NVDISASM CUBIN NAME_SUBSTRING...

For every kernel whose mangled name holds one of the substrings, and every loop (a backward
branch) with an HGMMA or HMMA in it: the instructions on the shortest path from the loop's head
to its back edge (the iteration without the rare branches: masking only on the diagonal blocks,
no prefetch at the last), the shortest through a cp.async (an iteration that prefetches the next
tiles, most of them; through the load without row checks where a tile load has one), the loop's
total, and the shortest path's counts of the opcodes that carry the softmax (MUFU, FFMA, FADD,
FMUL, FMNMX, FSEL, ISETP) and the MMAs. One line per loop.
"""
import collections
import re
import sys

from sass_check import disassemble, sections

BRANCH = re.compile(r"0x([0-9a-f]+)")
SHOWN = ("HGMMA", "HMMA", "MUFU", "FFMA", "FADD", "FMUL", "FMNMX", "FSEL", "ISETP", "SHFL", "LDS", "STS", "BAR")


def loop_paths(insns):
    """(head, back edge, shortest path, all opcodes, shortest path through a cp.async or None) of
    each loop with an MMA; paths as lists of opcodes."""
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
        from_head = bfs(insns, index, lo, hi, lo)
        path = path_to(insns, from_head, lo, hi)
        # The shortest through a cp.async (the iterations that prefetch: most of them, and where a
        # tile load has a path without row checks, through that one).
        via = None
        for j in range(lo, hi + 1):
            if insns[j][1].startswith("LDGSTS"):
                a, b = path_to(insns, from_head, lo, j), path_to(insns, bfs(insns, index, lo, hi, j), j, hi)
                if a and b and (via is None or len(a) + len(b) - 1 < len(via)):
                    via = a + b[1:]
        out.append((insns[lo][0], addr, path, body, via))
    return out


def bfs(insns, index, lo, hi, src):
    """Breadth-first tree of the loop [lo, hi] from src: {instruction: its predecessor} (src: None).
    Each instruction steps to the next, a branch (inside the loop) also to its target, an
    unconditional one only there."""
    prev = {src: None}
    queue = collections.deque([src])
    while queue:
        j = queue.popleft()
        _, o, p, predicated = insns[j]
        succ = []
        t = BRANCH.search(p[-1]) if o.startswith("BRA") and p else None
        if t and int(t.group(1), 16) in index and lo <= index[int(t.group(1), 16)] <= hi:
            succ.append(index[int(t.group(1), 16)])
        if not (o.startswith("BRA") and not predicated) and j + 1 <= hi:
            succ.append(j + 1)
        for k in succ:
            if k not in prev:
                prev[k] = j
                queue.append(k)
    return prev


def path_to(insns, prev, src, dst):
    """Opcodes on the shortest path src -> dst of a bfs tree from src ([] if dst is not reached)."""
    if dst not in prev:
        return []
    path, j = [insns[dst][1]], dst
    while j != src:
        j = prev[j]
        path.append(insns[j][1])
    return path[::-1]


def main():
    if len(sys.argv) < 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    nvdisasm, cubin, pats = sys.argv[1], sys.argv[2], sys.argv[3:]
    for name, code in sections(cubin):
        if not name.startswith(".text.") or not any(p in name for p in pats):
            continue
        insns = disassemble(nvdisasm, code, predicates=True)
        for head, edge, path, body, via in loop_paths(insns):
            c = collections.Counter(o.split(".")[0] for o in path)
            shown = ", ".join(f"{k} {c[k]}" for k in SHOWN if c[k])
            pre = f", {len(via)} with the prefetch" if via else ""
            print(f"{name[6:]} loop {head:#x}-{edge:#x}: {len(path)} on the shortest path{pre} ({len(body)} in all): "
                  f"{shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
