#!/usr/bin/env bash
# Every boot of a qemu-lab VM, before sshd and shoald: what Vagrant does for a
# box before its provisioner runs. The host passes this VM's place in the lab
# on the kernel command line (shoal.node=n2 shoal.addr=198.18.0.2
# shoal.prefix=24): hostname, the underlay address on eth0, the shared folder
# on /vagrant (9p, tag "vagrant") and the lab's ssh key.
set -euo pipefail

cmdline_arg() {
    local kv
    # Word splitting of the command line is what we want here.
    # shellcheck disable=SC2013
    for kv in $(cat /proc/cmdline); do
        if [[ $kv == "shoal.$1="* ]]; then
            echo "${kv#*=}"
            return 0
        fi
    done
    echo "shoal-vm-net: no shoal.$1= on the kernel command line" >&2
    return 1
}

node=$(cmdline_arg node)
addr=$(cmdline_arg addr)
prefix=$(cmdline_arg prefix)

hostname "$node"
echo "$node" >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$node" >/etc/hosts
ip link set lo up
ip addr replace "$addr/$prefix" dev eth0
ip link set eth0 up

mkdir -p /vagrant
if ! mountpoint -q /vagrant; then
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vagrant /vagrant
fi
install -d -m 0700 /root/.ssh
install -m 0600 /vagrant/.vm/authorized_keys /root/.ssh/authorized_keys
