#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (Debian packages, crates), checks formatting
# and lints, then runs unit, integration (real RTSP/RTMP servers on loopback) and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Integration tests each start their own servers; two at a time fit the 2-core CI machine.
cargo test --all-targets -- --test-threads="${CAMGATE_TEST_THREADS:-2}"
cargo test --doc
