#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
#
# make bench's host end of the guest's virtio-serial port (scripts/bench.sh):
# listens on a Unix socket that QEMU's chardev connects to, reads frames (a
# 4-byte little-endian length, then that many bytes) and answers each with
# one byte. The guest's bufshare-bench measures the echo round trip (the
# transport's floor) and 8 MiB frames (the copy users would otherwise make).
#
#   bench-serial-host.py SOCKET

import os
import socket
import struct
import sys


def read_exact(conn, view):
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def main():
    path = sys.argv[1]
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    buf = bytearray(64 << 20)
    hdr = bytearray(4)
    while True:
        conn, _ = srv.accept()
        frames = 0
        while read_exact(conn, memoryview(hdr)):
            (n,) = struct.unpack("<I", hdr)
            if n > len(buf) or not read_exact(conn, memoryview(buf)[:n]):
                break
            conn.sendall(b"\x01")
            frames += 1
        print(f"bench-serial-host: {frames} frames", flush=True)
        conn.close()


if __name__ == "__main__":
    main()
