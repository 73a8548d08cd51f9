#!/usr/bin/env bash
# benches/compare.sh BASE [ROUNDS] [BENCH...]
#
# Measures this working tree against commit BASE in one session, as changes to hot paths
# should be: builds both in release, then runs `plexus bench BENCH` (default: remote) on
# one and the other in turn, ROUNDS times (default 3), printing every figure line with
# the side and round in front. Compare the lines of one round; a change that holds only
# on a fast day does not hold.
#
#   bash benches/compare.sh main            # cast throughput etc., three alternations
#   bash benches/compare.sh HEAD~3 3 launch allocator
set -euo pipefail
base=${1:?usage: benches/compare.sh BASE [ROUNDS] [BENCH...]}
rounds=${2:-3}
shift $(( $# >= 2 ? 2 : $# ))
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(remote)
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
cleanup() {
    git -C "$root" worktree remove --force "$work/base" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
git -C "$root" worktree add --detach "$work/base" "$base" >/dev/null
echo "building $base and the working tree (release)..." >&2
(cd "$work/base" && CARGO_TARGET_DIR="$root/target/compare-base" cargo build --release -q --bin plexus --bin plexus-shim)
(cd "$root" && cargo build --release -q --bin plexus --bin plexus-shim)
# Each run starts from an empty page cache when this may drop it: the page cache of
# tasks' deleted cgroups stays charged to them and slows every later run (launch
# throughput falls by half over six runs without it).
fresh() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}
declare -A exe=([base]="$root/target/compare-base/release/plexus" [head]="$root/target/release/plexus")
for r in $(seq "$rounds"); do
    for side in base head; do
        for b in "${benches[@]}"; do
            fresh
            "${exe[$side]}" --log error bench "$b" | grep '^plexus ' | sed "s/^/$side round=$r /"
        done
    done
done
