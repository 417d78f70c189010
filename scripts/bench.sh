#!/usr/bin/env bash
# The published benchmark run (BENCHMARKS.md): camgate against one ffmpeg CLI process per camera, on
# synthetic 25 fps cameras served on loopback. Takes about 20 minutes on 2 cores. Writes JSON and the printed
# tables to target/bench/ and the plots to docs/. Run it on a quiet machine: check `uptime` first.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/bench
mkdir -p "$out" docs
cargo build --release --example bench
bench() {
    local name=$1
    shift
    echo "== $name: bench $*" | tee "$out/$name.txt"
    cargo run --quiet --release --example bench -- "$@" --json "$out/$name.json" | tee -a "$out/$name.txt"
}

uptime | tee "$out/uptime.txt"
# Transcoding with identical x264 settings (and the old service's command), 1-8 cameras; stop latency of
# cameras whose camera stopped answering.
bench transcode-720p --source 720p-h264-aac --mode transcode --cameras 1,2,4,8 --seconds 8 --warmup 2 \
    --hung-stop 20 --plot docs/bench-transcode-720p.svg
# camgate's defaults (H.264 copied) at scale, against ffmpeg -c copy.
bench copy-720p --source 720p-h264-aac --mode auto --cameras 50,100,200 --systems camgate,ffmpeg-same \
    --seconds 8 --warmup 2 --plot docs/bench-copy-720p.svg
# x264 with one thread per camera, where many cameras share two cores.
bench transcode-720p-threads1 --source 720p-h264-aac --mode transcode --threads 1 --cameras 4,8 \
    --systems camgate,ffmpeg-same --seconds 8 --warmup 2
# 1080p transcoding.
bench transcode-1080p --source 1080p-h264-aac --mode transcode --cameras 1,2 --systems camgate,ffmpeg-same \
    --seconds 8 --warmup 2
# G.711 audio (camgate's defaults: video copied, audio to AAC).
bench alaw-720p --source 720p-h264-alaw --mode auto --cameras 4 --seconds 8 --warmup 2
# H.265 cameras (camgate's defaults transcode them) against the old service.
bench h265-720p --source 720p-h265-aac --mode auto --cameras 1,2,4 --systems camgate,ffmpeg-old --hung-stop 10 \
    --seconds 8 --warmup 2
# Round 2 (issue 13): the binary's defaults (preview on) against ffmpeg -c copy, with a warm-up long enough for
# 100 ffmpeg processes to settle; the copy curve; transcoding with threads = 0 on the ball and the busy scene.
bench copy-100-preview --source 720p-h264-aac --mode auto --cameras 100 --systems camgate,ffmpeg-same \
    --preview on --seconds 10 --warmup 10
bench copy-curve --source 720p-h264-aac --mode auto --cameras 1,100,200,300,400,450 --rtsp-servers 2 \
    --systems camgate --preview on --seconds 8 --warmup 2 --plot docs/bench-copy-curve.svg
# Batched reads (read_batch_ms, the default 100) against reading each packet as it arrives.
bench copy-100-unbatched --source 720p-h264-aac --mode auto --cameras 100 --systems camgate --preview on \
    --read-batch-ms 0 --seconds 10 --warmup 5
bench copy-100-batched --source 720p-h264-aac --mode auto --cameras 100 --systems camgate --preview on \
    --read-batch-ms 100 --seconds 10 --warmup 5
bench transcode-adaptive --source 720p-h264-aac --mode transcode --cameras 4,8 --systems camgate,ffmpeg-same \
    --seconds 8 --warmup 2
bench transcode-busy --source 720p-h264-aac-busy --mode transcode --cameras 2,4 --systems camgate,ffmpeg-same \
    --seconds 8 --warmup 2
uptime | tee -a "$out/uptime.txt"
