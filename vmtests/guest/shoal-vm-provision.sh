#!/usr/bin/env bash
# First boot of a qemu-lab VM: runs the users' vagrant/provision.sh from the
# shared folder, as Vagrant's shell provisioner would, and tells the host how
# it went in /vagrant/.vm/<node>.status ("provisioned" or "failed <code>").
set -uo pipefail

node=$(hostname)
addr=$(ip -o -4 addr show dev eth0 | awk '{ split($4, p, "/"); print p[1]; exit }')
vm=/vagrant/.vm
# SHOAL_MANAGERS, SHOAL_INIT_ARGS, SHOALD_ARGS: the lab's settings.
# shellcheck disable=SC1091
. "$vm/env"
export SHOAL_MANAGERS SHOAL_INIT_ARGS SHOALD_ARGS
export SHOAL_NODE=$node SHOAL_ADDR=$addr SHOAL_SHARE=/vagrant

/vagrant/provision.sh >"$vm/$node.provision.log" 2>&1
code=$?
if ((code == 0)); then
    mkdir -p /var/lib/shoal-vm
    touch /var/lib/shoal-vm/provisioned
    echo provisioned >"$vm/$node.status"
else
    echo "failed $code" >"$vm/$node.status"
fi
# Also on the serial console, for `vm up`'s error message.
tail -n 20 "$vm/$node.provision.log"
exit "$code"
