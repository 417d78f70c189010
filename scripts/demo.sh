#!/usr/bin/env bash
# The main job on a built-in default: installs what is missing, builds camgate, and runs it on
# http://127.0.0.1:7000/ with the built-in demo camera feeding the built-in HTTP-FLV preview (no camera and no
# RTMP server needed). Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --bin camgate

config=target/demo.toml
cat > "$config" <<'TOML'
listen = "127.0.0.1:7000"
output_template = "none"

[cameras.demo]
input = "demo://"
TOML

echo "camgate demo: play http://127.0.0.1:7000/live/demo.flv (ffplay/VLC); status: curl http://127.0.0.1:7000/api/v1/cameras"
exec ./target/release/camgate --config "$config"
