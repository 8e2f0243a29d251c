#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
#
# Guest-to-guest import against real QEMU, without a guest: two QEMUs run
# with the qtest accelerator (no guest code runs) and this script plays a
# minimal virtio-pci driver in each, through the qtest socket (PCI
# configuration, BARs, virtqueues in guest RAM, polling). Guest a registers
# buffers, guest b attaches to them; the bytes are compared through b's
# BAR 4 (the import region) and a's RAM. Run by scripts/import-qtest.sh.
#
#   import-qtest.py QTEST_A QTEST_B NBUF GRACE_SECONDS

import socket
import statistics
import struct
import sys
import time

QSIZE = 16
BARS = {1: 0xFEBFE000, 2: 0xFC000000, 4: 0xF8000000}
PAGE = 4096
BUF = 2 * PAGE
RAM = 0x100000  # where a's buffers are, BUF bytes apart
EVT = {0x1000: "RELEASED", 0x1001: "FREED", 0x1002: "CONSUMERS", 0x1003: "LOST",
       0x1004: "OVERFLOW", 0x1010: "ADDED", 0x1011: "UPDATED", 0x1012: "REMOVED",
       0x1013: "NO_SPACE"}
failures = 0


def check(ok, what):
    global failures
    print(("ok " if ok else "not ok ") + what, flush=True)
    failures += 0 if ok else 1
    return ok


class QTest:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        for _ in range(400):
            try:
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"cannot connect to {path}")
        self.f = self.s.makefile("rw")

    def cmd(self, line):
        self.f.write(line + "\n")
        self.f.flush()
        while True:
            r = self.f.readline().strip()
            if r.startswith("IRQ"):
                continue
            if not r.startswith("OK"):
                raise RuntimeError(f"{line}: {r}")
            return r[3:]

    def outl(self, port, v):
        self.cmd(f"outl {port:#x} {v:#x}")

    def inl(self, port):
        return int(self.cmd(f"inl {port:#x}"), 16)

    def w(self, size, a, v):
        self.cmd(f"write{size} {a:#x} {v:#x}")

    def r(self, size, a):
        return int(self.cmd(f"read{size} {a:#x}"), 16)

    def read(self, a, n):
        return bytes.fromhex(self.cmd(f"read {a:#x} {n:#x}")[2:])

    def write(self, a, data):
        self.cmd(f"write {a:#x} {len(data):#x} 0x{data.hex()}")


class Virtio:
    """A virtio 1.x PCI driver of the bufshare device: polling, no MSI-X."""

    def __init__(self, qt, features):
        self.qt, self.backlog = qt, []
        for dev in range(32):
            self.dev = dev
            if self.cfg(0) == 0x10651AF4:
                break
        else:
            raise RuntimeError("no bufshare device")
        self.cfg_write(0x14, BARS[1])
        self.cfg_write(0x18, BARS[2])
        self.cfg_write(0x1C, 0)
        self.cfg_write(0x20, BARS[4])
        self.cfg_write(0x24, 0)
        self.cfg_write(0x04, self.cfg(0x04) | 0x6)
        self.caps, cap = {}, self.cfg8(0x34)
        while cap:
            if self.cfg8(cap) == 0x09 and self.cfg8(cap + 4) in BARS:
                typ, bar = self.cfg8(cap + 3), self.cfg8(cap + 4)
                off, length = self.cfg(cap + 8), self.cfg(cap + 12)
                if typ == 8:  # shared memory: 64-bit offset and length
                    off |= self.cfg(cap + 16) << 32
                    length |= self.cfg(cap + 20) << 32
                    self.caps[("shm", self.cfg8(cap + 5))] = (BARS[bar] + off, length)
                else:
                    extra = self.cfg(cap + 16) if typ == 2 else 0
                    self.caps[typ] = (BARS[bar] + off, extra)
            cap = self.cfg8(cap + 1)
        c = self.common = self.caps[1][0]
        self.reset()
        qt.w("b", c + 0x14, 1)
        qt.w("b", c + 0x14, 3)
        qt.w("l", c + 0x00, 0)
        lo = qt.r("l", c + 0x04)
        qt.w("l", c + 0x00, 1)
        self.offered = lo | qt.r("l", c + 0x04) << 32
        self.acked = self.offered & features
        qt.w("l", c + 0x08, 0)
        qt.w("l", c + 0x0C, self.acked & 0xFFFFFFFF)
        qt.w("l", c + 0x08, 1)
        qt.w("l", c + 0x0C, self.acked >> 32)
        qt.w("b", c + 0x14, 0xB)
        if not qt.r("b", c + 0x14) & 8:
            raise RuntimeError("FEATURES_OK refused")
        notify, mult = self.caps[2]
        self.queues = {}
        for q in (0, 1):
            base = 0x10000 + q * 0x4000
            qt.write(base, bytes(0x3000))
            qt.w("w", c + 0x16, q)
            qt.w("w", c + 0x18, QSIZE)
            qt.w("q", c + 0x20, base)
            qt.w("q", c + 0x28, base + 0x1000)
            qt.w("q", c + 0x30, base + 0x2000)
            self.queues[q] = dict(base=base, avail=0, used=0,
                                  notify=notify + qt.r("w", c + 0x1E) * mult)
            qt.w("w", c + 0x1C, 1)
        qt.w("b", c + 0x14, 0xF)
        for i in range(QSIZE):
            self.desc(1, i, 0x50000 + i * 0x100, 96, 2, 0)
            self.offer(1, i)
        self.kick(1)

    def cfg(self, reg):
        self.qt.outl(0xCF8, 0x80000000 | self.dev << 11 | (reg & 0xFC))
        return self.qt.inl(0xCFC)

    def cfg8(self, reg):
        return self.cfg(reg) >> (8 * (reg & 3)) & 0xFF

    def cfg_write(self, reg, v):
        self.qt.outl(0xCF8, 0x80000000 | self.dev << 11 | reg)
        self.qt.outl(0xCFC, v)

    def reset(self):
        self.qt.w("b", self.common + 0x14, 0)

    def desc(self, q, i, addr, length, flags, nxt):
        self.qt.write(self.queues[q]["base"] + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def offer(self, q, head):
        Q = self.queues[q]
        avail = Q["base"] + 0x1000
        self.qt.w("w", avail + 4 + 2 * (Q["avail"] % QSIZE), head)
        Q["avail"] += 1
        self.qt.w("w", avail + 2, Q["avail"] & 0xFFFF)

    def kick(self, q):
        self.qt.w("w", self.queues[q]["notify"], q)

    def used(self, q, timeout):
        Q = self.queues[q]
        used, start = Q["base"] + 0x2000, time.monotonic()
        while self.qt.r("w", used + 2) == Q["used"] & 0xFFFF:
            if time.monotonic() - start > timeout:
                return None
        elem = self.qt.read(used + 4 + 8 * (Q["used"] % QSIZE), 8)
        Q["used"] += 1
        return struct.unpack("<II", elem)

    def command(self, cmd, room=4096):
        self.qt.write(0x40000, cmd)
        self.desc(0, 0, 0x40000, len(cmd), 1, 1)
        self.desc(0, 1, 0x41000, room, 2, 0)
        self.offer(0, 0)
        self.kick(0)
        used = self.used(0, 10)
        if not used:
            raise RuntimeError("no answer")
        return self.qt.read(0x41000, used[1])

    def status(self, cmd):
        return struct.unpack_from("<I", self.command(cmd))[0]

    def poll_events(self, timeout):
        """Reads the events used within `timeout` into the backlog."""
        while True:
            used = self.used(1, timeout)
            if not used:
                return
            i, length = used
            ev = self.qt.read(0x50000 + i * 0x100, length)
            self.offer(1, i)
            self.kick(1)
            t = struct.unpack_from("<I", ev)[0]
            e = dict(type=EVT.get(t, hex(t)), at=time.monotonic())
            if t >= 0x1010:
                (e["import_id"], e["seqno"], e["attachment"], _, e["shm_offset"],
                 e["size"], e["buffer_id"]) = struct.unpack_from("<QQIIQQQ", ev, 8)
            else:
                e["buffer_id"], e["seqno"] = struct.unpack_from("<QQ", ev, 8)
            self.backlog.append(e)
            timeout = 0

    def wait(self, timeout=10.0, **want):
        """The first event (backlog first) with the fields of `want`."""
        start = time.monotonic()
        while True:
            for e in self.backlog:
                if all(e.get(k) == v for k, v in want.items()):
                    self.backlog.remove(e)
                    return e
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                return None
            self.poll_events(min(left, 0.05))


def hdr(t):
    return struct.pack("<II", t, 0)


def name(s, n):
    return s.encode().ljust(n, b"\0")


def register(id, app, addr, length):
    cmd = hdr(0x100) + struct.pack("<QQIIII", id, length, 1, 1, 0, 0) + name(app, 64)
    return cmd + struct.pack("<QQ", addr, length)


def attach(source, app):
    return hdr(0x200) + name(source, 32) + name(app, 64)


def main():
    qa, qb = QTest(sys.argv[1]), QTest(sys.argv[2])
    nbuf, grace = int(sys.argv[3]), float(sys.argv[4])
    features = 1 << 32 | 0xF  # VERSION_1, BUFFERS, GENERATION, EVENTS, IMPORT
    a, b = Virtio(qa, features), Virtio(qb, features)
    check(b.acked & 8 != 0, f"VIRTIO_BUFSHARE_F_IMPORT offered ({b.offered:#x})")
    base, length = b.caps[("shm", 0)]
    check(length == 64 << 20, f"b's import region: {length:#x} bytes at {base:#x}")

    check(b.status(attach("a", "other")) == 6, "ATTACH to an application no rule allows: S_DENIED")
    check(b.status(attach("c", "frames")) == 6, "ATTACH to a guest that does not exist: S_DENIED")
    ans = b.command(attach("a", "frames"))
    check(ans[:4] == bytes(4) and ans[8:12] == struct.pack("<I", 1), "ATTACH a/frames: attachment 1")
    check(a.wait(consumers=None, type="CONSUMERS") is not None, "a hears of one consumer more")

    imports = {}
    start = time.monotonic()
    for i in range(1, nbuf + 1):
        addr = RAM + (i - 1) * BUF
        qa.write(addr, f"buffer {i} written by a".encode())
        if a.status(register(i, "frames", addr, BUF)) != 0:
            check(False, f"REGISTER {i}")
        e = b.wait(type="ADDED", buffer_id=i)
        if not check(e is not None and e["size"] == BUF, f"IMPORT_ADDED for buffer {i}"):
            return
        imports[i] = e
    added = time.monotonic() - start
    shared = 0
    for i, e in imports.items():
        off = base + e["shm_offset"]
        seen = qb.read(off, 24)
        qb.write(off + BUF - 16, b"written by b")
        back = qa.read(RAM + (i - 1) * BUF + BUF - 16, 12)
        shared += seen.startswith(f"buffer {i} written by a".encode()) and back == b"written by b"
    check(shared == nbuf, f"{shared} of {nbuf} imports: the same bytes both ways "
          f"(mapped in {added:.2f} s)")

    # Updates: a's UPDATE to b's IMPORT_UPDATED; RELEASED once b releases.
    last, imp = nbuf, imports[nbuf]["import_id"]
    latencies, released = [], 0
    for seqno in range(1, 21):
        qa.write(RAM + (last - 1) * BUF, struct.pack("<Q", seqno))
        sent = time.monotonic()
        a.status(hdr(0x102) + struct.pack("<QQIIQQIIII", last, seqno, 0, 0, 0, 0, 0, 0, 0, 0))
        e = b.wait(type="UPDATED", import_id=imp, seqno=seqno)
        if e is None:
            check(False, f"IMPORT_UPDATED {seqno}")
            break
        latencies.append(e["at"] - sent)
        frame = struct.unpack("<Q", qb.read(base + imports[last]["shm_offset"], 8))[0]
        early = a.wait(timeout=0, type="RELEASED", buffer_id=last)
        b.status(hdr(0x203) + struct.pack("<QQ", imp, seqno))
        rel = a.wait(type="RELEASED", buffer_id=last, seqno=seqno)
        released += frame == seqno and early is None and rel is not None
    check(released == 20, f"{released} of 20 updates: b reads the frame, a gets RELEASED "
          "only after b's RELEASE")
    if latencies:
        print(f"# UPDATE answered to IMPORT_UPDATED read, through qtest: median "
              f"{statistics.median(latencies) * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms")

    # Unregistered: FREED only after b's CLOSE (and the unmap).
    a.status(hdr(0x104) + struct.pack("<Q", 1))
    e = b.wait(type="REMOVED", import_id=imports[1]["import_id"])
    check(e is not None, "a unregisters buffer 1: IMPORT_REMOVED")
    check(a.wait(timeout=0.3, type="FREED", buffer_id=1) is None, "no FREED while b maps it")
    check(b.status(hdr(0x204) + struct.pack("<Q", imports[1]["import_id"])) == 0, "b CLOSEs it")
    check(a.wait(type="FREED", buffer_id=1) is not None, "FREED once b closed")
    check(qb.read(base + imports[1]["shm_offset"], 24) == bytes(24), "b's range unmapped")

    # Not closed: revoked after the grace time.
    if nbuf >= 3:
        a.status(hdr(0x104) + struct.pack("<Q", 2))
        removed = time.monotonic()
        check(b.wait(type="REMOVED", import_id=imports[2]["import_id"]) is not None,
              "a unregisters buffer 2: IMPORT_REMOVED")
        freed = a.wait(timeout=grace + 5, type="FREED", buffer_id=2)
        took = time.monotonic() - removed
        check(freed is not None and took >= grace, f"b does not close it: revoked, FREED "
              f"after {took:.2f} s (grace {grace} s)")
        check(qb.read(base + imports[2]["shm_offset"], 24) == bytes(24), "b's range unmapped")
        check(b.status(hdr(0x202) + struct.pack("<Q", imports[2]["import_id"]))
              == 0, "IMPORT_INFO of the revoked import: it is still b's")

        # b resets its device: its imports end; a's unregistered buffer 3
        # is freed once unmapped, which waits for b's device to start
        # again (QEMU 11.1.3 takes no map request on a stopped device).
        a.status(hdr(0x104) + struct.pack("<Q", 3))
        b.reset()
        check(a.wait(type="CONSUMERS") is not None, "b resets: a hears of one consumer less")
        check(a.wait(timeout=1, type="FREED", buffer_id=3) is None,
              "no FREED for buffer 3 while b's device is stopped")
        b = Virtio(qb, features)
        check(a.wait(type="FREED", buffer_id=3) is not None,
              "b's device starts again: unmapped, FREED for buffer 3")
        ans = b.command(attach("a", "frames"))
        check(ans[:4] == bytes(4), "b attaches again")
        e = b.wait(type="ADDED", buffer_id=nbuf)
        ok = e is not None and qb.read(base + e["shm_offset"], BUF) == qa.read(
            RAM + (nbuf - 1) * BUF, BUF)
        check(ok, f"buffer {nbuf} imported again, at {e and e['shm_offset']:#x}, the same bytes")
    print(f"# {failures} failed")
    sys.exit(1 if failures else 0)


main()
