#!/bin/sh
# One-shot: make the six nodes of the `cluster` profile one Valkey Cluster
# (3 masters + 3 replicas), then wait until it serves every slot.
# Safe to run again: a cluster that already has all its slots is left as it
# is. Needs CLUSTER_NODES ("ip:port ..."), and REDISCLI_AUTH when the nodes
# have a password (valkey-cli reads it).
set -eu

first=${CLUSTER_NODES%% *}
host=${first%:*}
port=${first##*:}

info() { valkey-cli -h "$host" -p "$port" cluster info; }

if info | grep -q '^cluster_slots_assigned:16384'; then
    echo "cluster-init: cluster already created"
else
    # shellcheck disable=SC2086 # one argument per node
    valkey-cli --cluster create $CLUSTER_NODES --cluster-replicas 1 --cluster-yes
fi

tries=0
until info | grep -q '^cluster_state:ok'; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
        echo "cluster-init: cluster_state is not ok after 60 s" >&2
        info >&2
        exit 1
    fi
    sleep 1
done
echo "cluster-init: cluster_state:ok"
