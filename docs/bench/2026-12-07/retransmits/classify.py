#!/usr/bin/env python3
"""Classifies a record.sh capture: each iperf3 client's retransmits by the
sender's TCP counters and the receiver's, and the drops (skb:kfree_skb)
inside the clients' lives by reason and dropping function.

    classify.py OUT_DIR SCENARIO   (OUT_DIR may hold the files gzipped)
"""
import collections, gzip, json, os, re, statistics, sys

out, sc = sys.argv[1], sys.argv[2]


def lines(path):
    """A capture's file, or its gzipped copy (as committed)."""
    if os.path.exists(path):
        return open(path)
    return gzip.open(path + ".gz", "rt")

# The sender's view of its retransmits (include/uapi/linux/snmp.h).
CLASSES = [
    ("Tcp.RetransSegs", "segments retransmitted (all)"),
    ("TcpExt.TCPFastRetrans", "fast retransmits (SACK/dup-ACK recovery)"),
    ("TcpExt.TCPLostRetransmit", "retransmits lost again"),
    ("TcpExt.TCPLossProbes", "tail loss probes sent"),
    ("TcpExt.TCPLossProbeRecovery", "losses a probe recovered"),
    ("TcpExt.TCPTimeouts", "RTO timeouts"),
    ("TcpExt.TCPSynRetrans", "SYN retransmits"),
    ("TcpExt.TCPSlowStartRetrans", "retransmits in slow start after an RTO"),
    ("TcpExt.TCPSpuriousRtxHostQueues", "retransmits while the original sat in a host queue"),
    ("TcpExt.TCPDSACKRecv", "D-SACKs received (a retransmit was needless)"),
    ("TcpExt.TCPDSACKOfoRecv", "D-SACKs for out-of-order data"),
    ("TcpExt.TCPSACKReorder", "reordering detected by SACK"),
    ("TcpExt.TCPTSReorder", "reordering detected by timestamps"),
    ("TcpExt.TCPSackRecovery", "SACK recovery episodes"),
    ("TcpExt.TCPSACKReneging", "SACK reneging"),
]

# The receiver's view (its namespace's counters over the same run).
RECEIVER = [
    ("TcpExt.TCPOFOQueue", "segments queued out of order"),
    ("TcpExt.TCPDSACKOldSent", "D-SACKs sent for data already received"),
    ("TcpExt.TCPDSACKOfoSent", "D-SACKs sent for out-of-order duplicates"),
    ("TcpExt.TCPOFODrop", "out-of-order segments dropped (no memory)"),
    ("TcpExt.TCPRcvQDrop", "segments dropped, receive queue full"),
    ("TcpExt.TCPBacklogDrop", "segments dropped, socket backlog full"),
    ("Tcp.InSegs", "segments received"),
]

runs = []
for line in lines(f"{out}/clients-{sc}.jsonl"):
    p = json.loads(line)
    # The bench's warm-ups and probes are not the measured runs; the
    # measured ones run `-t 5` (and `-P 2` for two streams).
    argv = p["argv"]
    if "-t" not in argv or argv[argv.index("-t") + 1] != "5":
        continue
    streams = int(argv[argv.index("-P") + 1]) if "-P" in argv else 1
    d = {k: p["last"].get(k, 0) - p["first"].get(k, 0) for k, _ in CLASSES}
    # Only when the same receivers lived through the whole run.
    if p.get("receivers_ns_first") and p["receivers_ns_first"] == p.get("receivers_ns_last"):
        for k, _ in RECEIVER:
            d[k] = p["receivers_last"].get(k, 0) - p["receivers_first"].get(k, 0)
    runs.append((streams, p["start"], p["end"], d))

print(f"{sc}: {len(runs)} measured iperf3 client runs")
for streams in sorted({r[0] for r in runs}):
    rs = [r for r in runs if r[0] == streams]
    print(f"\n{streams} stream(s), {len(rs)} runs: median (min-max) per 5 s run")
    for k, what in CLASSES:
        v = [r[3][k] for r in rs]
        print(f"  {k:34} {statistics.median(v):>8.0f} ({min(v)}-{max(v)})  {what}")
    seen = [r for r in rs if RECEIVER[0][0] in r[3]]
    print(f"  receiver, {len(seen)} of the runs:")
    for k, what in RECEIVER if seen else []:
        v = [r[3][k] for r in seen]
        print(f"  {k:34} {statistics.median(v):>8.0f} ({min(v)}-{max(v)})  {what}")

# perf script -F time,trace: "  1234.567890: skbaddr=... protocol=2048 location=fn+0x12 reason: X"
pat = re.compile(r"^\s*([\d.]+):\s.*protocol=(\d+) location=(\S+) reason: (\S+)")
windows = [(r[1], r[2]) for r in runs]
inside = collections.Counter()
total = collections.Counter()
for line in lines(f"{out}/drops-{sc}.txt"):
    m = pat.match(line)
    if not m:
        continue
    t = float(m.group(1))
    fn = m.group(3).split("+")[0]
    key = (m.group(4), fn, int(m.group(2)))
    total[key] += 1
    if any(a <= t <= b for a, b in windows):
        inside[key] += 1
n = len(runs) or 1
print(f"\ndrops while a measured client ran, per run (all {n} runs), by reason and function:")
for (reason, fn, proto), c in inside.most_common(15):
    print(f"  {c / n:>9.1f}  {reason:24} {fn:36} proto 0x{proto:04x}")
print(f"\ndrops over the whole capture: {sum(total.values())}")
