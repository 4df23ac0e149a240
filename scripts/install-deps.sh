#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Tessera, and says what it
# does. Safe to run again: it installs only what is missing. Used by `make run`, `make test`
# and CI (through `make test`).
set -euo pipefail

say() { printf '==> %s\n' "$*"; }

# Debian packages: a C/C++ toolchain for RocksDB and ring, libclang for RocksDB's bindgen,
# iproute2/iptables for the network-namespace fault tests, and protoc with its well-known
# .proto files (libprotobuf-dev) for etcd-client's gRPC code, generated at build time
# (tessera-bench's etcd driver).
packages=(build-essential pkg-config libclang-dev clang iproute2 iptables protobuf-compiler libprotobuf-dev)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} > 0)); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "Debian packages present: ${packages[*]}"
fi

command -v cargo >/dev/null || { echo "cargo not found: install a stable Rust toolchain (rustup)" >&2; exit 1; }
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    say "adding the $component component"
    rustup component add "$component"
  fi
done

if cargo nextest --version >/dev/null 2>&1; then
  say "test runner: $(cargo nextest --version | head -n 1)"
else
  say "cargo-nextest not found: tests will run with 'cargo test'"
fi
