# Sourced by daemon/demo.sh and tests/run: makes sure a Rust toolchain (cargo) is on PATH,
# installing rustup's stable toolchain for the current user when it is missing.
# rustup's toolchain first when there is one: Debian's cargo-web (the arm64 cross build of the
# package test) installs /usr/bin/cargo and /usr/bin/rustc, without rustfmt and clippy.
if [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "cargo not found: installing the Rust toolchain with rustup (https://rustup.rs)" >&2
    if ! command -v curl >/dev/null 2>&1; then
      as_root apt-get update
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y curl ca-certificates
    fi
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
