#!/usr/bin/env python3
"""Sampling profile of a guest under QEMU, through its HMP monitor.

Every INTERVAL seconds the script stops the machine (`stop`), reads each vCPU's
RIP and RBP (`cpu N`, `info registers`), walks the frame-pointer chain
(`x/2gx`) to DEPTH callers, and lets the machine go on (`cont`). The kernel
must be built with frame pointers (the testkernel is). Addresses are named
from the ELF's symbol table (`nm -n -C`).

Start the guest with the monitor on a socket, then this script:

    cargo run -q -p ktest-runner --release -- bench --tests softirq \\
        --append "cases=raise_run repeat=5000 leak_check=off" \\
        --qemu-arg -monitor --qemu-arg unix:/tmp/mon.sock,server=on,wait=off &
    scripts/guest-profile.py --socket /tmp/mon.sock \\
        --elf target/x86_64-unknown-linux-gnu/release/testkernel --cpus 2 --seconds 60

It prints the functions where the vCPUs were found (all CPUs, then each), and
the most frequent call chains; `--lines process_one_work` adds the source
lines of the samples inside that function, with the lines of what it
inlined (addr2line -i). Under TCG a stopped vCPU is at a translation
block boundary, so a function is found in proportion to the host time its
translated code takes, which is what TCG's wall-clock figures measure.
See docs/benchmarks.md ("Where the time goes").
"""

import argparse
import bisect
import collections
import re
import socket
import subprocess
import sys
import time

KERNEL_HALF = 0xFFFF_8000_0000_0000


class Monitor:
    """A line-oriented HMP session over a UNIX socket."""

    def __init__(self, path, wait_s):
        deadline = time.time() + wait_s
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit(f"guest-profile: no monitor at {path} after {wait_s} s")
                time.sleep(0.1)
        self.cmd("")

    def cmd(self, line):
        self.sock.sendall((line + "\n").encode())
        buf = b""
        while not buf.endswith(b"(qemu) "):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the monitor closed (the guest ended)")
            buf += chunk
        return buf.decode(errors="replace")


def symbols(elf):
    out = subprocess.run(["nm", "-n", "-C", elf], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16), parts[2]))
    return [a for a, _ in syms], [n for _, n in syms]


def sample(mon, cpus, depth, seconds, interval):
    """Samples as a Counter of (vCPU, call chain), innermost address first."""
    samples = collections.Counter()
    end = time.time() + seconds
    try:
        while time.time() < end:
            mon.cmd("stop")
            for c in range(cpus):
                if cpus > 1:
                    mon.cmd(f"cpu {c}")
                regs = mon.cmd("info registers")
                rip = re.search(r"RIP=([0-9a-f]{16})", regs)
                rbp = re.search(r"RBP=([0-9a-f]{16})", regs)
                if not rip:
                    continue
                chain = [int(rip.group(1), 16)]
                bp = int(rbp.group(1), 16) if rbp else 0
                for _ in range(depth):
                    if bp < KERNEL_HALF:
                        break
                    words = mon.cmd(f"x/2gx {bp:#x}")
                    vals = re.findall(r"0x([0-9a-f]{16})", words.split(":", 1)[1]) if ":" in words else []
                    if len(vals) < 2:
                        break
                    next_bp, ret = int(vals[0], 16), int(vals[1], 16)
                    chain.append(ret)
                    if next_bp <= bp:
                        break
                    bp = next_bp
                samples[(c, tuple(chain))] += 1
            mon.cmd("cont")
            time.sleep(interval)
    except EOFError:
        pass
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", required=True, help="the guest's HMP monitor socket")
    ap.add_argument("--elf", required=True, help="the kernel ELF, for symbols")
    ap.add_argument("--cpus", type=int, default=2, help="vCPUs to sample (default 2)")
    ap.add_argument("--seconds", type=float, default=30, help="how long to sample (default 30)")
    ap.add_argument("--interval", type=float, default=0.003, help="seconds between samples (default 0.003)")
    ap.add_argument("--depth", type=int, default=6, help="callers per sample (default 6; 0: none)")
    ap.add_argument("--top", type=int, default=40, help="lines per table (default 40)")
    ap.add_argument("--wait", type=float, default=30, help="seconds to wait for the socket (default 30)")
    ap.add_argument(
        "--lines",
        metavar="SUBSTR",
        action="append",
        default=[],
        help="also count the samples inside functions whose name contains SUBSTR by source line,"
        " inlined callers included (addr2line -i); repeatable",
    )
    ap.add_argument(
        "--exclude",
        metavar="SUBSTR",
        action="append",
        default=[],
        help="drop the samples with a function whose name contains SUBSTR anywhere in their call"
        " chain (to leave out a benchmark's untimed set-up, e.g. its allocations); repeatable",
    )
    a = ap.parse_args()

    addrs, names = symbols(a.elf)

    def name(addr):
        i = bisect.bisect_right(addrs, addr) - 1
        return names[i] if i >= 0 else hex(addr)

    samples = sample(Monitor(a.socket, a.wait), a.cpus, a.depth, a.seconds, a.interval)
    pcs = collections.Counter()
    chains = collections.Counter()
    dropped = 0
    for (c, chain), k in samples.items():
        if any(sub in name(x) for x in chain for sub in a.exclude):
            dropped += k
            continue
        pcs[(c, chain[0])] += k
        chains[chain] += k
    total = sum(pcs.values())
    print(f"{total} samples" + (f" ({dropped} excluded)" if a.exclude else ""))
    by_fn = collections.Counter()
    per_cpu = collections.defaultdict(collections.Counter)
    for (c, pc), k in pcs.items():
        by_fn[name(pc)] += k
        per_cpu[c][name(pc)] += k
    for n, k in by_fn.most_common(a.top):
        print(f"{k:7d} {100.0 * k / max(total, 1):5.1f}% {n}")
    for c in sorted(per_cpu):
        sub = sum(per_cpu[c].values())
        print(f"--- cpu {c}: {sub} samples")
        for n, k in per_cpu[c].most_common(a.top):
            print(f"{k:7d} {100.0 * k / max(sub, 1):5.1f}% {n}")
    if a.depth:
        by_chain = collections.Counter()
        for chain, k in chains.items():
            by_chain[" <- ".join(name(x) for x in chain)] += k
        print("--- call chains")
        for t, k in by_chain.most_common(a.top):
            print(f"{k:7d} {t}")
    for sub in a.lines:
        lines_of(a.elf, sub, pcs, name, a.top)


def lines_of(elf, sub, pcs, name, top):
    """Samples inside the functions named like `sub`, by source line: each
    sample counts for the innermost line and for each inlined caller's line,
    so a line shows what it cost with what it inlined."""
    at = collections.Counter()
    for (_, pc), k in pcs.items():
        if sub in name(pc):
            at[pc] += k
    total = sum(at.values())
    print(f"--- lines in *{sub}*: {total} samples")
    if not total:
        return
    order = sorted(at)
    # -a prints each address before its frames (one line each with -i).
    query = "".join(f"{pc:#x}\n" for pc in order)
    out = subprocess.run(["addr2line", "-a", "-i", "-e", elf], input=query, capture_output=True, text=True, check=True)
    counts = collections.Counter()
    pc = None
    frames = []
    for line in out.stdout.splitlines() + ["0x"]:
        if line.startswith("0x"):
            if pc is not None:
                for f in dict.fromkeys(frames):
                    counts[f.split(" (discriminator")[0]] += at[pc]
            pc = int(line, 16) if len(line) > 2 else None
            frames = []
        else:
            frames.append(line)
    for t, k in counts.most_common(top):
        print(f"{k:7d} {100.0 * k / total:5.1f}% {t}")


if __name__ == "__main__":
    main()
