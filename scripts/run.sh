#!/usr/bin/env bash
# `make run`: runs what Tessera has so far and says what it did. When the playground exists
# this starts the local cluster instead.
set -euo pipefail
bin_dir=$1
seeds=${2:-200}
say() { printf '==> %s\n' "$*"; }

say "tessera binary: $bin_dir/tessera"
"$bin_dir/tessera" version
if [ -x "$bin_dir/tessera-sim" ]; then
  say "running the deterministic Raft simulator over $seeds seeds (faults, crashes, partitions; safety checked after every step)"
  "$bin_dir/tessera-sim" --seeds "$seeds" --first-seed 1
fi
