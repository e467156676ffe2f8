#!/usr/bin/env python3
"""Where Shoal's TC programs spend their samples, from `perf record -a -g`
over a `cargo xtask bench overlay --only overlay` run (record.sh's).

usage: by-program.py PERF_DATA [COMM]

For each program, the samples of COMM (default `lab-echo`, the round-trip
tasks) with that program on their stack, grouped by their leaf function:
the program's own JIT code, or the helper or map function it was in.
"""
import collections
import re
import subprocess
import sys

PROGRAMS = ["shoal_task_in", "shoal_mesh_in", "shoal_mesh_out",
            "shoal_task_out", "shoal_vxlan_in", "shoal_tc_in", "shoal_tc_out"]
LOOKUPS = re.compile(r"(lookup_nulls_elem_raw|__htab_map_lookup_elem|htab_map_hash|"
                     r"trie_lookup_elem|htab_lru_map_lookup_elem|array_map_lookup_elem)")


def stacks(data, comm):
    out = subprocess.run(
        ["perf", "script", "-i", data, "-F", "comm,tid,time,ip,sym", "--comms", comm],
        capture_output=True, text=True, check=True).stdout
    cur = []
    for line in out.splitlines():
        if re.match(r"^\s*\S.*\s+\d+\s+\d+\.\d+:\s*$", line):
            if cur:
                yield cur
            cur = []
        elif line.strip():
            parts = line.split()
            if len(parts) >= 2:
                cur.append(parts[1])
    if cur:
        yield cur


def main():
    data = sys.argv[1]
    comm = sys.argv[2] if len(sys.argv) > 2 else "lab-echo"
    all_stacks = list(stacks(data, comm))
    print(f"{comm}: {len(all_stacks)} samples")
    for prog in PROGRAMS:
        leaves = collections.Counter()
        for s in all_stacks:
            if any(f.startswith("bpf_prog_") and f.endswith(prog) for f in s):
                leaves[s[0]] += 1
        n = sum(leaves.values())
        if not n:
            continue
        own = sum(k for f, k in leaves.items() if f.startswith("bpf_prog_"))
        lookups = sum(k for f, k in leaves.items() if LOOKUPS.search(f))
        print(f"{prog}: {n} samples; its own code {own} ({100 * own / n:.0f} %), "
              f"map lookups {lookups} ({100 * lookups / n:.0f} %)")
        for f, k in leaves.most_common(12):
            print(f"    {f:<48} {k:>6}")


if __name__ == "__main__":
    main()
