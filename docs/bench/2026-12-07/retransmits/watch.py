#!/usr/bin/env python3
"""Follows every `iperf3 -c` process while it lives and writes, when it ends,
one JSON line: its command line, executable, network namespace, start and
end (CLOCK_MONOTONIC, the clock record.sh gives perf), and its namespace's
TcpExt/Tcp counters when first and last seen; and the same counters of the
namespaces of every `iperf3 -s` alive, summed, at those two moments (the
receiver's side of the run).

A sender's retransmits are classified by these counters (fast retransmits,
tail loss probes, RTO timeouts, retransmits while the original was still in
a host queue, D-SACKs received). Counters are per network namespace; the
last read is at most one poll interval before the process exited, so a run's
final few milliseconds can be missed.

    watch.py OUT.jsonl   (until SIGTERM)
"""
import json, os, signal, sys, time

POLL = 0.05
out = open(sys.argv[1], "a", buffering=1)
live = {}
stop = False


def counters(pid):
    c = {}
    for name in ("netstat", "snmp"):
        with open(f"/proc/{pid}/net/{name}") as f:
            lines = f.read().splitlines()
        for head, vals in zip(lines[::2], lines[1::2]):
            keys, nums = head.split(), vals.split()
            prefix = keys[0].rstrip(":")
            for k, v in zip(keys[1:], nums[1:]):
                try:
                    c[f"{prefix}.{k}"] = int(v)
                except ValueError:
                    pass
    return c


def iperfs():
    """(pid, argv, is_client) of every iperf3 process."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"iperf3":
            yield int(d), [a.decode() for a in argv if a], b"-c" in argv


def finish(pid):
    p = live.pop(pid)
    p["end"] = p.pop("seen")
    out.write(json.dumps(p) + "\n")


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
while not stop:
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    seen = set()
    procs = list(iperfs())
    servers = {}
    for pid, _, is_client in procs:
        if not is_client:
            try:
                servers[os.readlink(f"/proc/{pid}/ns/net")] = counters(pid)
            except OSError:
                pass
    receivers = {}
    for c in servers.values():
        for k, v in c.items():
            receivers[k] = receivers.get(k, 0) + v
    for pid, argv, is_client in procs:
        if not is_client:
            continue
        seen.add(pid)
        try:
            c = counters(pid)
        except OSError:
            continue
        if pid not in live:
            try:
                ns = os.readlink(f"/proc/{pid}/ns/net")
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            live[pid] = {"pid": pid, "argv": argv, "exe": exe, "netns": ns,
                         "start": now, "first": c, "receivers_first": receivers,
                         "receivers_ns_first": sorted(servers)}
        live[pid]["last"] = c
        live[pid]["receivers_last"] = receivers
        live[pid]["receivers_ns_last"] = sorted(servers)
        live[pid]["seen"] = now
    for pid in [p for p in live if p not in seen]:
        finish(pid)
    time.sleep(POLL)
for pid in list(live):
    finish(pid)
