#!/usr/bin/env bash
# Provisions one Shoal node: installs the binaries built on the host, runs
# shoald as a systemd unit and forms the swarm (`swarm init` on n1, `swarm
# join` on the others with the tokens n1 leaves in the shared folder).
#
# The same script runs under Vagrant (vagrant/Vagrantfile) and in the qemu
# lab (`cargo xtask vm up`), so the users' path is the tested path. Running
# it again changes nothing: a node already in a swarm is left alone.
#
# Environment (the Vagrantfile and `cargo xtask vm` set these):
#   SHOAL_NODE          this node's name, n1..nN          [the hostname]
#   SHOAL_ADDR          this node's underlay address      (required)
#   SHOAL_MANAGERS      n1..nM are managers               [1]
#   SHOAL_SHARE         the folder every node shares      [/vagrant]
#   SHOAL_BIN           shoald, shoal, shoal-shim         [$SHOAL_SHARE/bin]
#   SHOAL_INIT_ARGS     extra `shoal swarm init` flags    []
#   SHOALD_ARGS         extra shoald flags                []
#   SHOAL_JOIN_TIMEOUT  seconds to wait for n1's tokens   [900]
#
# `provision.sh --print-packages` prints the Debian packages it needs (the
# qemu lab bakes them into its root filesystem, which has no network).
set -euo pipefail

PACKAGES=(runc iproute2 curl)
if [[ ${1:-} == --print-packages ]]; then
    echo "${PACKAGES[*]}"
    exit 0
fi

log() { echo "provision[${SHOAL_NODE:-?}]: $*"; }
die() {
    log "error: $*" >&2
    exit 1
}

SHOAL_NODE=${SHOAL_NODE:-$(hostname)}
SHOAL_ADDR=${SHOAL_ADDR:?set SHOAL_ADDR to this node\'s underlay address}
SHOAL_MANAGERS=${SHOAL_MANAGERS:-1}
SHOAL_SHARE=${SHOAL_SHARE:-/vagrant}
SHOAL_BIN=${SHOAL_BIN:-$SHOAL_SHARE/bin}
SHOAL_INIT_ARGS=${SHOAL_INIT_ARGS:-}
SHOALD_ARGS=${SHOALD_ARGS:-}
SHOAL_JOIN_TIMEOUT=${SHOAL_JOIN_TIMEOUT:-900}
# Tokens and n1's address, handed from n1 to the others.
SWARM_DIR=$SHOAL_SHARE/.shoal-swarm

[[ $SHOAL_NODE =~ ^n([1-9][0-9]*)$ ]] || die "SHOAL_NODE=$SHOAL_NODE: nodes are named n1, n2, …"
INDEX=${BASH_REMATCH[1]}
[[ $SHOAL_MANAGERS =~ ^[1-9][0-9]*$ ]] || die "SHOAL_MANAGERS=$SHOAL_MANAGERS: give a number of at least 1"
[[ $EUID -eq 0 ]] || die "run as root (Vagrant's shell provisioner does)"

# Docker's default seccomp profile, which every task gets; Debian ships it in
# golang-github-docker-docker-dev, a source package with many dependencies,
# so a copy next to the binaries (seccomp.json) is taken first.
SECCOMP=/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json
SECCOMP_PACKAGE=golang-github-docker-docker-dev

install_packages() {
    local missing=() p
    if [[ ! -f $SECCOMP ]]; then
        if [[ -f $SHOAL_BIN/seccomp.json ]]; then
            install -D -m 0644 "$SHOAL_BIN/seccomp.json" "$SECCOMP"
        else
            missing+=("$SECCOMP_PACKAGE")
        fi
    fi
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_binaries() {
    local b
    for b in shoald shoal shoal-shim; do
        [[ -x $SHOAL_BIN/$b ]] ||
            die "$SHOAL_BIN/$b is missing: build on the host with \`cargo build --release --workspace\` and copy target/release/{shoald,shoal,shoal-shim} there"
    done
    # The lab tools are optional: services can run them with the `host` image.
    for b in shoald shoal shoal-shim lab-http lab-echo; do
        if [[ -x $SHOAL_BIN/$b ]]; then
            install -C -m 0755 "$SHOAL_BIN/$b" "/usr/local/bin/$b"
        fi
    done
}

# The interface that holds SHOAL_ADDR carries the overlays and published ports.
data_interface() {
    local i iface
    for ((i = 0; i < 60; i++)); do
        iface=$(ip -o -4 addr show | awk -v a="$SHOAL_ADDR" '{ split($4, p, "/"); if (p[1] == a) { print $2; exit } }')
        if [[ -n $iface ]]; then
            echo "$iface"
            return 0
        fi
        sleep 1
    done
    die "no interface has the address $SHOAL_ADDR"
}

install_unit() {
    local iface=$1 unit=/etc/systemd/system/shoald.service new
    new=$(
        cat <<EOF
[Unit]
Description=Shoal node daemon
Documentation=https://github.com/shoal/shoal
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/shoald --hostname $SHOAL_NODE --data-interface $iface $SHOALD_ARGS
# Tasks (their shims and containers) outlive a restart of shoald, which
# takes them back: stop only the daemon itself.
KillMode=process
Restart=on-failure
RestartSec=2
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
EOF
    )
    if [[ -f $unit ]] && [[ "$(cat "$unit")" == "$new" ]]; then
        systemctl enable --now shoald.service
        return 0
    fi
    log "installing $unit (data interface $iface)"
    printf '%s\n' "$new" >"$unit"
    systemctl daemon-reload
    systemctl enable shoald.service
    systemctl restart shoald.service
}

wait_daemon() {
    local i
    for ((i = 0; i < 300; i++)); do
        shoal info >/dev/null 2>&1 && return 0
        sleep 1
    done
    journalctl -u shoald --no-pager -n 40 >&2 || true
    die "shoald did not answer within 300 s"
}

# Written to a temporary name and renamed, so a reader never sees half a token.
publish() {
    printf '%s\n' "$2" >"$SWARM_DIR/.$1.tmp"
    mv "$SWARM_DIR/.$1.tmp" "$SWARM_DIR/$1"
}

form_swarm() {
    if ! shoal info | grep -q '^Swarm: inactive'; then
        log "already in a swarm"
        return 0
    fi
    mkdir -p "$SWARM_DIR"
    if ((INDEX == 1)); then
        # Tokens of an earlier cluster must not be taken for this one's.
        rm -f "$SWARM_DIR/manager" "$SWARM_DIR/worker" "$SWARM_DIR/addr"
        log "shoal swarm init --advertise-addr $SHOAL_ADDR $SHOAL_INIT_ARGS"
        # shellcheck disable=SC2086 # extra flags are split on purpose
        shoal swarm init --advertise-addr "$SHOAL_ADDR" $SHOAL_INIT_ARGS
        publish manager "$(shoal swarm join-token -q manager)"
        publish worker "$(shoal swarm join-token -q worker)"
        publish addr "$SHOAL_ADDR:2377"
        return 0
    fi
    local role=worker i
    ((INDEX <= SHOAL_MANAGERS)) && role=manager
    for ((i = 0; i < SHOAL_JOIN_TIMEOUT; i++)); do
        [[ -s $SWARM_DIR/$role && -s $SWARM_DIR/addr ]] && break
        sleep 1
    done
    [[ -s $SWARM_DIR/$role ]] || die "no $role token in $SWARM_DIR after ${SHOAL_JOIN_TIMEOUT}s: is n1 provisioned?"
    log "shoal swarm join ($role) $(cat "$SWARM_DIR/addr")"
    shoal swarm join --token "$(cat "$SWARM_DIR/$role")" "$(cat "$SWARM_DIR/addr")"
}

install_packages
install_binaries
install_unit "$(data_interface)"
wait_daemon
form_swarm
log "done: $(shoal info | grep -E '^ *(Swarm|NodeID|Is Manager):' | tr -s ' \n' ' ')"
