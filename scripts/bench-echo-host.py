#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
#
# make bench's host end of the guest's baselines (scripts/bench.sh): listens
# on Unix sockets, one thread each: the one that QEMU's chardev of the
# guest's virtio-serial port connects to, and the one that
# vhost-device-vsock connects to when the guest connects to the host's
# vsock port (UDS_PATH_PORT). On each connection it reads frames (a 4-byte
# little-endian length, then that many bytes) and answers each with one
# byte. The guest's bufshare-bench measures the echo round trip (the
# transport's floor) and 8 MiB frames (the copy users would otherwise make).
#
#   bench-echo-host.py SOCKET...

import os
import socket
import struct
import sys
import threading


def read_exact(conn, view):
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def echo(conn, name):
    buf = bytearray(64 << 20)
    hdr = bytearray(4)
    frames = 0
    while read_exact(conn, memoryview(hdr)):
        (n,) = struct.unpack("<I", hdr)
        if n > len(buf) or not read_exact(conn, memoryview(buf)[:n]):
            break
        conn.sendall(b"\x01")
        frames += 1
    print(f"bench-echo-host: {name}: {frames} frames", flush=True)
    conn.close()


def serve(srv, name):
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=echo, args=(conn, name), daemon=True).start()


def main():
    servers = []
    for path in sys.argv[1:]:
        if os.path.exists(path):
            os.unlink(path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(4)
        servers.append((srv, os.path.basename(path)))
    threads = [threading.Thread(target=serve, args=s, daemon=True) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
