#!/usr/bin/env bash
# `make run`: starts the local playground cluster — one placement member and three stores
# on loopback, data under ./data/playground — runs its narrated demo (load keys, split the
# key space, kill a store while writing, restart it, read everything back), then serves
# until Ctrl-C. The client profile it writes (./.tessera-profile.toml) lets `tessera …`
# commands from this directory reach it with no flags. PLAYGROUND_ARGS adds flags (e.g.
# "--stores 5 --placement 3").
set -euo pipefail
bin_dir=$1
say() { printf '==> %s\n' "$*"; }

say "tessera binary: $bin_dir/tessera"
"$bin_dir/tessera" version
say "starting the playground and its demo (Ctrl-C stops it; data and logs in ./data/playground)"
say "in another terminal, from this directory: $bin_dir/tessera cluster status"
# shellcheck disable=SC2086 # PLAYGROUND_ARGS is a list of flags on purpose
exec "$bin_dir/tessera" playground --demo ${PLAYGROUND_ARGS:-}
