#!/bin/bash
# perf over a whole `cargo xtask bench overlay --only SCENARIO --repeat 3`
# run (from the checkout's root, as root); the round-trip phases are told
# apart afterwards by breakdown.py. SHOAL_FAST_PATH=off in the environment
# gives the bridge path.
#   record.sh overlay|kernel-vxlan OUT_DIR
set -e
sc=$1 out=$2
mkdir -p "$out"
perf record -a -g -F 1999 -o "$out/perf-$sc.data" -- \
  cargo xtask bench overlay --only "$sc" --repeat 3 --out "$out/bench-$sc" > "$out/bench-$sc.log" 2>&1
