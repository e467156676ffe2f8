#!/bin/bash
# Captures what becomes of the segments a bench's TCP streams retransmit:
# each iperf3 client's namespace counters (watch.py) and every skb the
# kernel frees as dropped, with its reason and the dropping function
# (the skb:kfree_skb tracepoint), over a whole
# `cargo xtask bench overlay --only SCENARIO --repeat 3` run. Run from the
# checkout's root, as root; classify.py reads OUT afterwards.
#   record.sh overlay|kernel-vxlan OUT_DIR
set -e
sc=$1 out=$2
here=$(dirname "$0")
mkdir -p "$out"
python3 "$here/watch.py" "$out/clients-$sc.jsonl" &
watcher=$!
perf record -k mono -e skb:kfree_skb -a -o "$out/drops-$sc.data" -- \
  cargo xtask bench overlay --only "$sc" --repeat 3 --out "$out/bench-$sc" > "$out/bench-$sc.log" 2>&1
kill -TERM $watcher
wait $watcher
perf script -i "$out/drops-$sc.data" -F time,trace > "$out/drops-$sc.txt"
