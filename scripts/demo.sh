#!/usr/bin/env bash
# The README's main command: on Debian 12, installs what is missing (Debian packages, the dashboard's player),
# builds camgate in release mode and runs it with demo.toml, so the dashboard at http://127.0.0.1:7000/ shows
# a synthetic camera playing. Stop it with Ctrl-C. CAMGATE_LISTEN (e.g. 127.0.0.1:7100) picks another address.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --demo
cargo build --release --locked --bin camgate

listen=${CAMGATE_LISTEN:-127.0.0.1:7000}
echo
echo "camgate dashboard: http://${listen/0.0.0.0/127.0.0.1}/   (Ctrl-C stops)"
echo
exec "${CARGO_TARGET_DIR:-target}/release/camgate" --config demo.toml --web-dir web
