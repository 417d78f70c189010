#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (Debian packages, crates, the web folder's npm
# packages), checks formatting, lints and the compose file, then runs unit, integration (real RTSP/RTMP servers
# on loopback, the dashboard in headless Chromium) and doc tests.
#
# Every step runs even when an earlier one fails, and every test binary runs even when another fails
# (--no-fail-fast), so one failure never hides the others; the summary at the end lists what failed and the
# exit status is non-zero if anything did.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh || exit 1

failed=()
step() {
    echo
    echo "== $*"
    if ! "$@"; then
        failed+=("$*")
    fi
}

step cargo fmt --all -- --check
step cargo clippy --all-targets -- -D warnings
# No Docker engine here: images are neither pulled nor built, but the compose file is checked against the
# Compose schema (services, ports, volumes, healthcheck) by whichever compose implementation is installed.
# The stack demands a token (CAMGATE_TOKEN); any value of the right shape will do for the check.
for compose_file in docker-compose.yml docker-compose.cluster.yml; do
    if docker compose version >/dev/null 2>&1; then
        step env CAMGATE_TOKEN=compose-check-token-0123456789 CAMGATE_HOOK_TOKEN=compose-check-hook-token-0123456789 docker compose -f "$compose_file" config -q
    elif command -v docker-compose >/dev/null; then
        step env CAMGATE_TOKEN=compose-check-token-0123456789 CAMGATE_HOOK_TOKEN=compose-check-hook-token-0123456789 docker-compose -f "$compose_file" config -q
    else
        echo "test: no docker compose implementation; $compose_file not checked" >&2
    fi
done
# Integration tests each start their own servers; two at a time fit the 2-core CI machine.
step cargo test --no-fail-fast --lib --bins --tests --examples -- --test-threads="${CAMGATE_TEST_THREADS:-2}"
# Criterion benches run once each as tests (their own harness takes no libtest flags).
step cargo test --no-fail-fast --benches
step cargo test --no-fail-fast --doc

echo
if [ "${#failed[@]}" -gt 0 ]; then
    echo "test: FAILED steps:"
    printf '  %s\n' "${failed[@]}"
    exit 1
fi
echo "test: everything passed"
