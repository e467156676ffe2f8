#!/usr/bin/env python3
"""Where a 1-byte round trip's CPU goes, from `perf record -a -g` over a
`cargo xtask bench overlay --only SCENARIO` run.

usage: breakdown.py PERF_DATA RESULT_JSON|ROUND_TRIPS_PER_S COMM

COMM is the process the round trips ran in: `lab-echo` for the overlay (the
client and echo server tasks), `shoal` for kernel-vxlan (shoal bench's own
client and echo threads). A round-trip phase is a thread of COMM that lived
5.5-7 s (1 s unmeasured + the 5 s measured); the 4 s phases of the eBPF
statistics (BPF_ENABLE_STATS on) are left out. Samples of COMM inside those
windows are grouped by their leaf function, and by whether given frames are
on their stack; both are turned into CPU-us per round trip with the round
trips the result file counts (rr rate x 6 s per repeat), or that a rate
given instead says (one run of 1 s + SECS, veth-pair.sh's: 7 s).
"""
import collections
import json
import re
import subprocess
import sys

HZ = 1999  # perf record -F

FAMILIES = [
    ("Shoal's eBPF (JIT code)", r"bpf_prog_"),
    ("eBPF helpers and maps", r"(bpf_|lookup_nulls_elem_raw|lookup_elem_raw|htab_|__htab|trie_|array_map|lru_|__bpf_|__inet_lookup|inet_lookup|__udp4_lib_lookup|skb_do_redirect)"),
    ("bridge", r"(br_|__br_|nbp_)"),
    ("VXLAN", r"(vxlan|gro_cell|udp_tunnel|iptunnel|__iptunnel)"),
    ("veth", r"(veth_|__veth)"),
    ("spinning on a lock", r"(__pv_queued_spin_lock_slowpath|native_queued_spin_lock_slowpath)"),
    ("irqs re-enabled (deferred samples)", r"(_raw_spin_unlock_irqrestore|_raw_spin_unlock_irq)$"),
    ("IP, TCP, core net", r"(tcp_|__tcp|ip_|__ip|inet_|ipv4_|udp|__udp|fib_|dst_|nf_|__nf|netif_|__netif|napi_|__napi|process_backlog|net_rx|__dev|dev_|validate_xmit|neigh|eth_|skb_|__skb|sock_|sk_|__sk|lock_sock|release_sock|csum|__csum|enqueue_to_backlog|gro_|qdisc|sch_|pskb|kmem_cache|__alloc_skb|kfree|consume_skb|__pi_mem|memcpy|memmove)"),
]
STACKS = [
    ("Shoal's eBPF, with its helpers", r"\bbpf_prog_"),
    ("the bridge, with what it calls", r"\bbr_handle_frame\b|\bbr_dev_xmit\b"),
    ("vxlan_xmit, with what it calls", r"\bvxlan_xmit\b"),
    ("VXLAN receive (vxlan_rcv, gro cells)", r"\bvxlan_rcv\b|\bgro_cell_poll\b"),
    ("socket lock taken after a wakeup (sk_wait_data)", r"__pv_queued_spin_lock_slowpath _raw_spin_lock_bh sk_wait_data"),
    ("the reader's wakeup (sock_def_readable)", r"\bsock_def_readable\b"),
]


def samples(data, comm):
    out = subprocess.run(
        ["perf", "script", "-i", data, "-F", "comm,tid,time,ip,sym", "--comms", comm],
        capture_output=True, text=True, check=True).stdout
    head, stack = None, []
    for line in out.splitlines() + [""]:
        m = re.match(r"^\s*(.+?)\s+(\d+)\s+(\d+\.\d+):\s*$", line)
        if m:
            head, stack = (m.group(1), int(m.group(2)), float(m.group(3))), []
        elif line.strip() and head:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                stack.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1].rsplit(" (", 1)[0]))
        elif head:
            yield head, stack
            head = None


def main():
    data, result, comm = sys.argv[1:4]
    all_samples = list(samples(data, comm))
    life = collections.defaultdict(list)
    for (_, tid, t), _ in all_samples:
        life[tid].append(t)
    windows = {(min(v), max(v)) for v in life.values() if 5.5 < max(v) - min(v) < 7}
    if result.replace(".", "", 1).isdigit():
        rate, cpu = [float(result)], [float("nan")]
        windows = {(min(v), max(v)) for v in life.values() if max(v) - min(v) > 5.5}
        trips = rate[0] * 7.0
    else:
        r = json.load(open(result))
        rate = next(m for s in r["scenarios"] for m in s["metrics"] if m["name"] == "rr rate")["samples"]
        cpu = next(m for s in r["scenarios"] for m in s["metrics"] if m["name"] == "cpu per round trip")["samples"]
        trips = sum(rate) * 6.0
    fam, inc, leaf, n = collections.Counter(), collections.Counter(), collections.Counter(), 0
    for (_, _, t), stack in all_samples:
        if not stack or not any(a <= t <= b for a, b in windows):
            continue
        n += 1
        leaf[stack[0]] += 1
        fam[next((f for f, p in FAMILIES if re.match(p, stack[0])), "other (syscalls, scheduler, user)")] += 1
        joined = " ".join(stack)
        for name, p in STACKS:
            if re.search(p, joined):
                inc[name] += 1
    us = lambda k: k / HZ * 1e6 / trips
    print(f"{comm}: {n} samples in {len(windows)} round-trip windows, {trips:.0f} round trips: "
          f"{us(n):.1f} CPU-us per round trip in {comm} "
          f"(shoal bench's cpu per round trip, whole machine, median: {sorted(cpu)[len(cpu) // 2]:.1f})")
    print("by leaf function:")
    for f, k in fam.most_common():
        print(f"  {f:48s} {100 * k / n:5.1f} %  {us(k):5.2f} us")
    print("by a frame on the stack (overlapping):")
    for f, k in inc.most_common():
        print(f"  {f:48s} {100 * k / n:5.1f} %  {us(k):5.2f} us")
    print("top leaf functions:")
    for f, k in leaf.most_common(12):
        print(f"  {f:48s} {100 * k / n:5.1f} %")


main()
