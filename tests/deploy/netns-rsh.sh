#!/bin/sh
# Open MPI's remote agent for "hosts" that are network namespaces (deploy.netns_cluster):
# mpirun --mca plm_rsh_agent netns-rsh.sh runs `netns-rsh.sh HOST orted ARGS...` where it would run
# `ssh HOST orted ARGS...`. ssh hands the words to a remote shell, and Open MPI quotes them for
# one (e.g. -mca ess "env"); `ip netns exec HOST` alone would exec them verbatim, quotes and all.
# So: enter the namespace, and let a shell parse the command line as sshd's would. A UTS
# namespace gives the "host" its own host name too: Open MPI names per-host state after it
# (its session directory, the shared-memory segments of btl/vader), which must not collide.
set -eu
host=$1
shift
# shellcheck disable=SC2016  # $1 and $2 are the inner shell's
exec ip netns exec "$host" unshare --uts /bin/sh -c 'hostname "$1" && exec /bin/sh -c "$2"' sh "$host" "$*"
