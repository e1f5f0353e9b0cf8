#!/usr/bin/env python3
"""Checks the SASS of the wgmma attention kernels for the register clobber ptxas produced.

    sass_check.py NVDISASM CUBIN [NAME_SUBSTRING]

CUDA 13.0's ptxas (sm_90a) gave the P fragments of O += P V the registers of the Q fragments
that S = Q K^T of the next key block still reads (attn_fwd_kernel, WG 1, hs 64, 64-key blocks,
Q in registers; the dQ kernel likewise): wrong results on an H100, invisible to the CPU
emulator, which runs the C++ and not the SASS. This finds that pattern in every kernel of a
cubin: an HGMMA inside a loop whose A operand registers (register form) are not written in the
loop before it, so the loop carries them in, yet are written later in the loop, so the next
iteration reads whatever was written there instead. TAP, one line per kernel with an HGMMA.
(A kernel that meant to carry A fragments written at the end of its loop into the next iteration
would be flagged too; none does: every A operand here is either loop-invariant or packed in the
loop before its HGMMA.)

The kernels' code is taken from the cubin's .text.<name> sections and disassembled as raw SM90
instructions (`nvdisasm -b SM90`), which an nvdisasm older than the cubin's toolkit can do.
"""
import re
import struct
import subprocess
import sys
import tempfile

INSN = re.compile(r"/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
REG = re.compile(r"^-?\|?R(\d+)(?:\.reuse)?\|?$")


def sections(path):
    """(name, bytes) of every section of an ELF64 file."""
    d = open(path, "rb").read()
    shoff = struct.unpack_from("<Q", d, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
    hdrs = [struct.unpack_from("<IIQQQQ", d, shoff + i * shentsize) for i in range(shnum)]
    strtab = hdrs[shstrndx][4]
    for name, _, _, _, off, size in hdrs:
        end = d.index(b"\0", strtab + name)
        yield d[strtab + name:end].decode(), d[off:off + size]


def disassemble(nvdisasm, code, predicates=False):
    """(address, opcode, operands) of each instruction; predicates: and whether it is predicated."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(code)
        f.flush()
        out = subprocess.run([nvdisasm, "-b", "SM90", f.name], capture_output=True, text=True, check=True).stdout
    insns = []
    for line in out.splitlines():
        m = INSN.search(line)
        if m:
            ops = [o.strip() for o in m.group(4).split(",")] if m.group(4).strip() else []
            insn = (int(m.group(1), 16), m.group(3), ops)
            insns.append(insn + (m.group(2) is not None,) if predicates else insn)
    # An nvdisasm older than the cubin drops what it cannot decode (sm_90's VIADD among them, ~3%
    # of these kernels): each such slot becomes an UNKNOWN instruction writing the register in
    # its third byte (Rd in sm_70+ encodings; 255 = RZ), so loops keep their heads and the clobber
    # check still sees the write.
    seen = {i[0] for i in insns}
    for addr in range(0, len(code) - 15, 16):
        if addr not in seen:
            insn = (addr, "UNKNOWN", ["R%d" % code[addr + 2]])
            insns.append(insn + (False,) if predicates else insn)
    insns.sort(key=lambda i: i[0])
    return insns


def written(op, ops):
    """Registers an instruction writes (its first operand), with the widths that matter here."""
    if not ops or op.startswith(("ST", "BAR", "BRA", "RED", "ATOM", "WARPGROUP", "MEMBAR", "FENCE", "DEPBAR",
                                 "LDGSTS", "LDGDEPBAR", "EXIT", "RET", "CALL", "NOP", "WARPSYNC", "BSYNC",
                                 "BSSY", "YIELD")):
        return set()
    m = REG.match(ops[0].split(".")[0] if ops[0].endswith(".64") else ops[0])
    if not m:
        return set()
    r = int(m.group(1))
    if r == 255:   # RZ
        return set()
    if op.startswith("HGMMA"):
        n = int(re.search(r"HGMMA\.64x(\d+)x", op).group(1))
        width = n // 2
    elif op.startswith("LDSM"):
        width = 4 if op.endswith(".4") else 2 if op.endswith(".2") else 1
    elif ".128" in op:
        width = 4
    elif ".64" in op or ops[0].endswith(".64") or op.startswith("IMAD.WIDE"):
        width = 2
    else:
        width = 1
    return set(range(r, r + width))


def check(insns):
    """Problems found: (HGMMA address, A register, address of the later write)."""
    loops = [(t, a) for a, op, ops in insns if op == "BRA" for t in [int(ops[-1], 16)] if t < a]
    problems = []
    for a, op, ops in insns:
        if not op.startswith("HGMMA") or len(ops) < 2:
            continue
        m = REG.match(ops[1])
        if not m:   # A from a descriptor (shared memory): nothing to clobber
            continue
        areg = set(range(int(m.group(1)), int(m.group(1)) + 4))
        inner = [(lo, hi) for lo, hi in loops if lo <= a <= hi]
        if not inner:
            continue
        lo, hi = min(inner, key=lambda l: l[1] - l[0])
        before = any(areg & written(o, p) for x, o, p in insns if lo <= x < a)
        if before:
            continue
        for x, o, p in insns:
            if a < x <= hi and areg & written(o, p):
                problems.append((a, min(areg & written(o, p)), x, o))
                break
    return problems


def main():
    nvdisasm, cubin = sys.argv[1], sys.argv[2]
    want = sys.argv[3] if len(sys.argv) > 3 else ""
    n = bad = 0
    for name, code in sections(cubin):
        if not name.startswith(".text.") or want not in name:
            continue
        insns = disassemble(nvdisasm, code)
        if not any(op.startswith("HGMMA") for _, op, _ in insns):
            continue
        n += 1
        problems = check(insns)
        kernel = name[len(".text."):]
        if problems:
            bad += 1
            a, r, x, o = problems[0]
            print(f"not ok {n} - {kernel}: HGMMA at 0x{a:x} reads A register R{r} carried into its loop, "
                  f"which {o} at 0x{x:x} overwrites later in the loop ({len(problems)} such HGMMA)")
        else:
            print(f"ok {n} - {kernel}: no HGMMA A operand overwritten in its loop")
    if n == 0:
        print("not ok 1 - no kernel with an HGMMA in the cubin")
        n, bad = 1, 1
    print(f"1..{n}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
