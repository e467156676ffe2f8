#!/bin/bash
# lab-echo's server and rr client as two processes in two namespaces on one
# veth pair: no Shoal, no VXLAN, no containers. Does the socket-lock
# spinning show without any of them?
#   veth-pair.sh LAB_ECHO OUT_DIR
set -e
L=$1 out=$2
A=shoalexp-a-$$ B=shoalexp-b-$$
cleanup() { ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; kill $S 2>/dev/null; true; }
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip link add ve-a netns $A type veth peer name ve-b netns $B
ip -n $A addr add 10.250.0.1/24 dev ve-a; ip -n $B addr add 10.250.0.2/24 dev ve-b
for n in $A $B; do ip -n $n link set lo up; done
ip -n $A link set ve-a up; ip -n $B link set ve-b up
ip netns exec $B "$L" serve 7000 & S=$!
sleep 0.5
perf record -a -g -F 1999 -o "$out/perf-veth-pair.data" -- \
  ip netns exec $A "$L" rr 10.250.0.2:7000 6 > "$out/veth-pair-rr.txt"
