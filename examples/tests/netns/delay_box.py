#!/usr/bin/env python3
"""A delay line between two interfaces, for the network-namespace tests.

This machine's kernel lacks sch_netem, so added latency, jitter,
reordering and duplication are emulated here instead: every Ethernet frame
received on one interface is sent out of the other after DELAY_MS plus a
uniform random 0..JITTER_MS (frames overtake each other when the jitter
exceeds their spacing: reordering), and DUP_PERCENT of them are sent twice.
Runs in a namespace of its own holding only the two interfaces (no
addresses), until killed.

Usage: delay_box.py IF_A IF_B DELAY_MS [JITTER_MS [DUP_PERCENT]]
"""

import heapq
import random
import select
import socket
import sys
import time

ETH_P_ALL = 0x0003


def open_raw(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


def main():
    if_a, if_b = sys.argv[1], sys.argv[2]
    delay = float(sys.argv[3]) / 1000.0
    jitter = float(sys.argv[4]) / 1000.0 if len(sys.argv) > 4 else 0.0
    dup = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    a, b = open_raw(if_a), open_raw(if_b)
    other = {a: b, b: a}
    queue = []  # (due, seq, socket to send on, frame)
    seq = 0
    forwarded = 0
    print(f"delay_box: {if_a} <-> {if_b} delay {delay * 1000:.1f} ms "
          f"jitter {jitter * 1000:.1f} ms dup {dup}%", file=sys.stderr, flush=True)
    while True:
        wait = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        ready, _, _ = select.select([a, b], [], [], wait)
        now = time.monotonic()
        for s in ready:
            while True:
                try:
                    frame, addr = s.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue  # our own sends, seen on the way out
                copies = 2 if dup > 0 and random.random() * 100 < dup else 1
                for _ in range(copies):
                    due = now + delay + (random.random() * jitter if jitter else 0.0)
                    heapq.heappush(queue, (due, seq, other[s], frame))
                    seq += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                out.send(frame)
                forwarded += 1
            except OSError as e:
                print(f"delay_box: dropped a {len(frame)}-byte frame: {e}",
                      file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
