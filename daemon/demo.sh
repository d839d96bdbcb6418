#!/usr/bin/env bash
# Runs the Leitsystem appliance on its embedded demo config: a small citizens' office with three
# services and four desks, state under ~/.local/state/leitsystem-demo, no broker needed.
# Builds whatever it needs first. Extra arguments go to `leitsystemd demo` (e.g. --data-dir).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/as-root.sh
# Rust links with the system C compiler.
if ! command -v cc >/dev/null 2>&1; then
  echo "installing gcc (the linker Rust needs)" >&2
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y gcc libc6-dev
fi
source .ci/ensure-rust.sh
cargo build --release -p leitsystemd -p leitsystem-sim
echo "Leitsystem demo running: http://127.0.0.1:8080/display (also /kiosk, /clerk, /admin;" >&2
echo "users platz1 and admin, password demo). In another terminal try:" >&2
echo "  target/release/leitsystemd ctl walk-in ausweis" >&2
echo "  target/release/leitsystemd ctl open 1 && target/release/leitsystemd ctl next 1" >&2
echo "  target/release/leitsystemd sim scan DEMO-1           # check in a demo booking" >&2
echo "  target/release/leitsystemd sim scan --signed DEMO-2  # its signed QR code" >&2
echo "  target/release/leitsystemd sim button 1 next         # a desk button (simulated)" >&2
echo "  target/release/leitsystemd ctl state                 # tickets, desks, waits" >&2
echo "  target/release/leitsystemd ctl devices               # device health" >&2
echo "Stop with Ctrl-C." >&2
exec target/release/leitsystemd demo "$@"
