#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Sampling profiler for a test guest's kernel under TCG, over QEMU's monitor.

The debug kernel of the test guests has no perf, and its /proc/profile
charges every tick taken with interrupts off to the instruction that turns
them back on. This reads the vCPUs themselves instead, through the QMP
socket that scripts/vm.sh gives every run (RUN/qmp.sock):

  guest-profile.py sample RUN OUT [--until FILE] [--interval S]
      Until QEMU exits (or RUN/FILE appears, e.g. "started" for the boot
      alone), asks the monitor for every vCPU's registers ("info registers
      -a") and, for each vCPU running kernel code, for 48 words at its
      stack pointer ("x/48gx"). One line per sample goes to OUT:
      "TIME|CPU CPL HLT RIP [KERNEL-ADDRESSES-ON-THE-STACK]|...".

  guest-profile.py report SYSTEM_MAP SAMPLES [--top N]
      Where the kernel's samples fell: per function, "self" (the RIP) and
      "inclusive" (the RIP or any kernel text address in the stack window;
      the window holds return addresses and stale words alike, so
      inclusive counts are an upper bound). Halted vCPUs and user mode are
      counted apart. Addresses are looked up in System.map as they are:
      boot the guest with BUFSHARE_APPEND=nokaslr. Module text is
      reported as [module].

A sample costs the guest nothing but the monitor's lock; the sampler
takes about 10% of a host core.
"""

import argparse
import bisect
import json
import os
import re
import socket
import sys
import time


class Monitor:
    """A QMP connection, for human monitor commands."""

    def __init__(self, path, wait=60.0):
        deadline = time.monotonic() + wait
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")
        self._answer()
        self._send({"execute": "qmp_capabilities"})
        self._answer()

    def _send(self, msg):
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()

    def _answer(self):
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("QEMU closed its monitor")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def hmp(self, command):
        self._send({"execute": "human-monitor-command",
                    "arguments": {"command-line": command}})
        msg = self._answer()
        if "error" in msg:
            raise RuntimeError(f"{command}: {msg['error']}")
        return msg["return"]


REG = {name: re.compile(name + r"=([0-9a-f]+)")
       for name in ("[RE]IP", "[RE]SP", "CPL", "HLT")}
TEXT = re.compile(r"0x(ffffffff[0-9a-f]{8})")


def sample(args):
    # Monitor() waits for the socket, up to a minute, as QEMU starts.
    try:
        mon = Monitor(os.path.join(args.run, "qmp.sock"))
    except OSError as e:
        sys.exit(f"guest-profile: {e}")
    n = 0
    with open(args.out, "w") as out:
        try:
            while not (args.until and os.path.exists(os.path.join(args.run, args.until))):
                cpus = []
                regs = mon.hmp("info registers -a")
                for i, block in enumerate(re.split(r"\r?\nCPU#\d+\r?\n", "\n" + regs)[1:]):
                    rip, rsp, cpl, hlt = (REG[r].search(block) for r in REG)
                    if not (rip and rsp and cpl and hlt):
                        continue
                    stack = ""
                    if cpl.group(1) == "0" and hlt.group(1) == "0":
                        mon.hmp(f"cpu {i}")
                        stack = " ".join(TEXT.findall(mon.hmp(f"x/48gx 0x{rsp.group(1)}")))
                    cpus.append(f"{i} {cpl.group(1)} {hlt.group(1)} {rip.group(1)} {stack}".rstrip())
                out.write(f"{time.time():.3f}|" + "|".join(cpus) + "\n")
                n += 1
                time.sleep(args.interval)
        except (EOFError, OSError):
            pass
    print(f"guest-profile: {n} samples in {args.out}")


class Symbols:
    def __init__(self, path):
        syms = []
        marks = {}
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                addr, kind, name = int(fields[0], 16), fields[1], fields[2]
                if kind in "tTwW":
                    syms.append((addr, name))
                if name in ("_stext", "_etext", "_sinittext", "_einittext"):
                    marks[name] = addr
        if len(marks) != 4:
            sys.exit(f"guest-profile: no _stext, _etext, _sinittext or _einittext in {path}")
        # The kernel's text, and its init text, which the boot runs.
        self.text = ((marks["_stext"], marks["_etext"]), (marks["_sinittext"], marks["_einittext"]))
        syms.sort()
        self.addrs = [a for a, _ in syms]
        self.names = [n for _, n in syms]

    def name(self, text):
        """The function at a kernel address, "[module]", or None."""
        addr = int(text, 16)
        # The module area, from MODULES_VADDR (without or with KASLR's
        # 1 GiB kernel image) to MODULES_END; above it are the fixmap and
        # what is not an address at all (-1, -errno).
        if 0xffffffffa0000000 <= addr < 0xffffffffff000000:
            return "[module]"
        if not any(lo <= addr < hi for lo, hi in self.text):
            return None
        i = bisect.bisect_right(self.addrs, addr) - 1
        return self.names[i] if i >= 0 else None


def report(args):
    syms = Symbols(args.system_map)
    own, incl = {}, {}
    total = halted = user = 0
    with open(args.samples) as f:
        for line in f:
            for cpu in line.rstrip("\n").split("|")[1:]:
                fields = cpu.split()
                if len(fields) < 4:
                    continue
                total += 1
                _, cpl, hlt, rip = fields[:4]
                if hlt == "1":
                    halted += 1
                    continue
                if cpl != "0":
                    user += 1
                    continue
                name = syms.name(rip)
                if name is None:
                    # Kernel mode below the kernel's mapping: the firmware,
                    # or the decompressor before the kernel runs.
                    name = "[firmware, decompressor]" if int(rip, 16) < 1 << 47 else "[unknown]"
                own[name] = own.get(name, 0) + 1
                seen = {name} | {s for s in map(syms.name, fields[4:]) if s}
                for s in seen:
                    incl[s] = incl.get(s, 0) + 1
    kernel = total - halted - user
    print(f"{total} vCPU samples: {halted} halted, {user} in user mode, {kernel} in the kernel")
    if not kernel:
        return
    for title, counts in (("self", own), ("inclusive", incl)):
        print(f"-- {title}")
        for name, c in sorted(counts.items(), key=lambda x: -x[1])[:args.top]:
            print(f"{c:7d} {100.0 * c / kernel:5.1f}%  {name}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sample", help="sample a running guest")
    p.add_argument("run", help="the run directory (RUN/qmp.sock)")
    p.add_argument("out", help="where the samples go")
    p.add_argument("--until", help="stop when RUN/UNTIL appears")
    p.add_argument("--interval", type=float, default=0.01,
                   help="seconds between samples (0.01)")
    p.set_defaults(func=sample)
    p = sub.add_parser("report", help="profile from samples")
    p.add_argument("system_map", help="the guest kernel's System.map")
    p.add_argument("samples")
    p.add_argument("--top", type=int, default=40, help="functions listed (40)")
    p.set_defaults(func=report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
