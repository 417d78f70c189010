#!/usr/bin/env bash
# Installs what camgate needs on Debian 12, for one of three uses, and checks for a Rust toolchain.
# Idempotent: does nothing when everything is there.
#
#   scripts/install-deps.sh            everything a developer and CI need: build (FFmpeg dev libraries, clang,
#                                      protoc for the etcd client), the integration tests' servers (GStreamer
#                                      RTSP, nginx-rtmp, etcd, ffmpeg CLI),
#                                      the browser test (chromium, node/npm, `npm ci` in web/) and the compose
#                                      file's check (docker-compose)
#   scripts/install-deps.sh --build    only what `cargo build` needs (the Dockerfile's build stage)
#   scripts/install-deps.sh --runtime  only the shared libraries and fonts the binary runs with (its run stage)
#   scripts/install-deps.sh --demo     build and run, plus the dashboard's player (scripts/demo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:---all}
case "$MODE" in
    --all | --build | --runtime | --demo) ;;
    *)
        echo "usage: $0 [--build | --runtime | --demo]" >&2
        exit 2
        ;;
esac

BUILD_PACKAGES=(
    pkg-config clang libclang-dev build-essential protobuf-compiler
    libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
    libavfilter-dev libavdevice-dev
    ca-certificates
)
# The libraries the dev packages above link against (Debian 12 / FFmpeg 5.1 sonames), the fonts the demo
# camera's clock is drawn with, and curl for container health checks.
RUNTIME_PACKAGES=(
    libavcodec59 libavformat59 libavutil57 libavfilter8 libswscale6 libswresample4 libavdevice59
    fonts-dejavu-core fontconfig ca-certificates curl
)
TEST_PACKAGES=(
    gir1.2-gst-rtsp-server-1.0 python3-gi
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
    gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-x
    nginx libnginx-mod-rtmp
    etcd-server
    ffmpeg curl
    fonts-dejavu-core fontconfig
    chromium docker-compose
)
case "$MODE" in
    --build) PACKAGES=("${BUILD_PACKAGES[@]}") ;;
    --runtime) PACKAGES=("${RUNTIME_PACKAGES[@]}") ;;
    --demo)
        PACKAGES=("${BUILD_PACKAGES[@]}" "${RUNTIME_PACKAGES[@]}")
        command -v node >/dev/null || PACKAGES+=(nodejs)
        command -v npm >/dev/null || PACKAGES+=(npm)
        ;;
    --all)
        PACKAGES=("${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}")
        # Node.js may come from elsewhere (NodeSource's nodejs includes npm); only without it take Debian's.
        command -v node >/dev/null || PACKAGES+=(nodejs)
        command -v npm >/dev/null || PACKAGES+=(npm)
        ;;
esac
# Edition 2024 needs Rust >= 1.85; Debian 12's own cargo/rustc (1.63) is too old.
MIN_RUST_MINOR=85

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    # Keep apt from starting the system nginx and etcd: the tests run private
    # instances on their own ports (a system etcd would take 2379), and a system
    # nginx failing to bind :80 would make the package's postinst, and so this
    # script, fail. policy-rc.d exit code 101 means "action forbidden"; only ours
    # is removed afterwards.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod +x "$policy"
        trap '"${SUDO[@]}" rm -f "$policy"' EXIT
    fi
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "install-deps: all Debian packages present"
fi

if [ "$MODE" = --runtime ]; then
    exit 0
fi

if [ "$MODE" = --demo ] && [ ! -f web/node_modules/mpegts.js/dist/mpegts.js ]; then
    echo "install-deps: npm ci in web/ (the dashboard's player only)"
    (cd web && npm ci --omit=dev --no-audit --no-fund)
fi

if [ "$MODE" = --all ]; then
    # The dashboard's player (mpegts.js) and the browser test's driver (playwright-core), as locked.
    # node_modules/.package-lock.json is npm's record of the last install: newer than the lock file means
    # the install is current — but `--demo` installs without dev dependencies, so the driver is checked too.
    if [ ! web/node_modules/.package-lock.json -nt web/package-lock.json ] ||
        [ ! -f web/node_modules/playwright-core/package.json ] ||
        [ ! -f web/node_modules/mpegts.js/dist/mpegts.js ]; then
        echo "install-deps: npm ci in web/"
        (cd web && npm ci --no-audit --no-fund)
    else
        echo "install-deps: web/node_modules up to date"
    fi

    # The RTSP fixture needs these GStreamer elements, with Debian's python3 seeing gi.
    for element in videotestsrc x264enc x265enc rtph264pay rtph265pay audiotestsrc \
        avenc_aac rtpmp4gpay alawenc rtppcmapay; do
        if ! gst-inspect-1.0 "$element" >/dev/null 2>&1; then
            echo "install-deps: GStreamer element $element is missing" >&2
            exit 1
        fi
    done
    if ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null; then
        echo "install-deps: /usr/bin/python3 cannot load GstRtspServer through gi" >&2
        exit 1
    fi
    if [ ! -f /usr/lib/nginx/modules/ngx_rtmp_module.so ]; then
        echo "install-deps: /usr/lib/nginx/modules/ngx_rtmp_module.so is missing" >&2
        exit 1
    fi
fi

# Rust: a rustup toolchain is usually in ~/.cargo/bin, which may not be on PATH.
cargo_bin=$(command -v cargo || true)
if [ -z "$cargo_bin" ] && [ -x "$HOME/.cargo/bin/cargo" ]; then
    cargo_bin="$HOME/.cargo/bin/cargo"
    echo "install-deps: cargo found at $cargo_bin; add $HOME/.cargo/bin to PATH"
fi
if [ -z "$cargo_bin" ]; then
    # Debian 12 has no rustup package (newer Debian releases do); its rustup
    # still has to download the toolchain itself.
    if apt-cache policy rustup 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        echo "install-deps: no cargo; installing Debian's rustup and the stable toolchain"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends rustup
        rustup default stable
    else
        echo "install-deps: no cargo, and this Debian has no rustup package." >&2
        echo "  Debian's own cargo/rustc is older than 1.${MIN_RUST_MINOR} (edition 2024);" >&2
        echo "  install a toolchain with rustup (https://rustup.rs)." >&2
        exit 1
    fi
else
    minor=$("$cargo_bin" --version | sed -E 's/^cargo 1\.([0-9]+).*/\1/')
    if [ "$minor" -lt "$MIN_RUST_MINOR" ] 2>/dev/null; then
        echo "install-deps: $("$cargo_bin" --version) is older than 1.$MIN_RUST_MINOR (edition 2024)" >&2
        exit 1
    fi
    echo "install-deps: $("$cargo_bin" --version)"
fi
