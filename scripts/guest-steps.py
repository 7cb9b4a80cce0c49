#!/usr/bin/env python3
"""Count the guest instructions of one pass of a hot path, by single-stepping.

QEMU's gdb stub steps one vCPU an instruction at a time. This script attaches
gdb to a guest started with `-s -S` (stopped at reset), puts a hardware
breakpoint on a function, lets the guest run to its SKIP-th call, then steps
STEPS instructions and records each address. The instructions between two
calls of the function are one pass of the loop that calls it (one work item:
the function's own instructions, what it calls, and the loop around it). It
prints the passes' lengths, and for the second pass the instructions TCG
handles at a cost (returns and indirect calls, which end a translation block
and look the next one up; locked read-modify-writes; `sti`, `cli`, `pushf`,
`rdtsc`) and the instruction count per function (outermost symbol).

Start the guest with one CPU (several vCPUs interleave their steps) and the
stub, then this script:

    cargo run -q -p ktest-runner --release -- bench --smp 1 --tests workqueue \\
        --append "cases=throughput_bound repeat=1 leak_check=off" \\
        --kernel target/x86_64-unknown-linux-gnu/release/testkernel --no-build \\
        --qemu-arg -s --qemu-arg -S &
    scripts/guest-steps.py --elf target/x86_64-unknown-linux-gnu/release/testkernel \\
        --function workqueue::pool::process_one_work

Inside Redox pass the shim as the kernel, the Redox kernel as the initrd and
its ELF here (`target/redox/build/kernel` after `make redox-test`). Needs gdb
and binutils (not installed by `scripts/ensure-deps.sh`: this is a tool for
looking, not part of the tests). See docs/benchmarks.md ("Counted by
single-stepping").
"""

import argparse
import bisect
import collections
import os
import shutil
import subprocess
import sys
import tempfile

GDB_SCRIPT = r"""
import gdb
gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("target remote {target}")
gdb.execute("hbreak *{addr:#x}")
gdb.execute("continue")
for _ in range({skip}):
    gdb.execute("continue")
with open({out!r}, "w") as out:
    for _ in range({steps}):
        out.write("%x\n" % (int(gdb.parse_and_eval("$pc")) & 0xffffffffffffffff))
        gdb.execute("stepi", to_string=True)
gdb.execute("kill")
"""

COSTLY = ("sti", "cli", "pushf", "popf", "rdtsc", "lfence", "mfence")


def symbols(elf):
    """(address, name) of the ELF's functions, sorted, demangled."""
    out = subprocess.run(["nm", "-n", "-C", elf], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16), parts[2]))
    return syms


def mnemonics(elf):
    """Address -> instruction text, from objdump."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", elf], capture_output=True, text=True, check=True).stdout
    ins = {}
    for line in out.splitlines():
        head, _, text = line.partition(":\t")
        head = head.strip()
        if text and all(c in "0123456789abcdef" for c in head):
            ins[int(head, 16)] = text.strip()
    return ins


def kind(text):
    op = text.split()[0] if text else "?"
    if op.startswith("ret"):
        return "ret"
    if op.startswith("call"):
        return "call-indirect" if "*" in text else "call"
    if op.startswith("jmp") and "*" in text:
        return "jmp-indirect"
    if op.startswith("lock") or op.startswith("xchg") and "(" in text:
        return "locked"
    for c in COSTLY:
        if op.startswith(c):
            return c
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--elf", required=True, help="the kernel ELF, for symbols")
    ap.add_argument("--function", required=True, help="a function name as nm -C prints it, or 0xADDRESS")
    ap.add_argument("--target", default=":1234", help="gdb stub address (default :1234)")
    ap.add_argument("--skip", type=int, default=50, help="calls to let pass first (default 50: past warm-up)")
    ap.add_argument("--steps", type=int, default=2000, help="instructions to step (default 2000)")
    a = ap.parse_args()
    for tool, package in (("gdb", "gdb"), ("nm", "binutils"), ("objdump", "binutils")):
        if shutil.which(tool) is None:
            sys.exit(f"guest-steps: needs {tool} (Debian package {package}: apt-get install {package})")

    syms = symbols(a.elf)
    if a.function.startswith("0x"):
        addr = int(a.function, 16)
    else:
        hits = [s for s, n in syms if n == a.function]
        if len(hits) != 1:
            sys.exit(f"guest-steps: {len(hits)} functions named {a.function!r} in {a.elf}")
        addr = hits[0]
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "pcs")
        script = os.path.join(tmp, "steps.py")
        with open(script, "w") as f:
            f.write(GDB_SCRIPT.format(target=a.target, addr=addr, skip=a.skip, steps=a.steps, out=trace))
        subprocess.run(["gdb", "-q", "-batch", "-x", script, a.elf], capture_output=True, text=True)
        if not os.path.exists(trace):
            sys.exit("guest-steps: gdb recorded nothing (is the guest waiting with -s -S?)")
        pcs = [int(x, 16) for x in open(trace).read().split()]
    starts = [i for i, pc in enumerate(pcs) if pc == pcs[0]]
    passes = [b - a for a, b in zip(starts, starts[1:])]
    print(f"{len(pcs)} instructions stepped from {a.function}; passes: {passes}")
    if len(starts) < 3:
        print("fewer than two whole passes: step further (--steps)")
        return
    one = pcs[starts[1]:starts[2]]
    ins = mnemonics(a.elf)
    addrs = [s for s, _ in syms]
    kinds = collections.Counter()
    where = collections.defaultdict(collections.Counter)
    per_fn = []
    for pc in one:
        name = syms[bisect.bisect_right(addrs, pc) - 1][1]
        if not per_fn or per_fn[-1][0] != name:
            per_fn.append([name, 0])
        per_fn[-1][1] += 1
        k = kind(ins.get(pc, ""))
        if k:
            kinds[k] += 1
            where[k][name] += 1
    print(f"pass 2: {len(one)} instructions; " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    for k in ("ret", "call-indirect", "locked"):
        if where[k]:
            print(f"  {k}: " + "; ".join(f"{n} x{c}" for n, c in where[k].most_common()))
    print("in order (instructions, function):")
    for name, n in per_fn:
        print(f"  {n:5} {name}")


if __name__ == "__main__":
    main()
