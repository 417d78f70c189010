//! Per-packet work camgate adds on top of FFmpeg: the timestamp guard every packet passes, the statistics
//! every packet bumps and the supervisor samples, and the preview hub's fan-out of each FLV tag to its viewers.
//!
//! `cargo bench --bench hot_paths`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use camgate::internals::{Counters, TimestampGuard};
use camgate::preview::flv_tags::{Piece, TagSplitter};
use camgate::preview::{Channel, HubWriter};
use camgate::runtime::RateWindow;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// 1000 packets of a 25 fps stream in a 90 kHz time base, with the faults cameras produce: repeats, small
/// steps back, and one jump.
fn camera_timestamps() -> Vec<i64> {
    let mut t = 0i64;
    (0..1000)
        .map(|i| {
            t += match i % 100 {
                17 => 0,
                42 => -1800,
                99 => 90_000 * 60,
                _ => 3600,
            };
            t
        })
        .collect()
}

fn timestamp_guard(c: &mut Criterion) {
    let stamps = camera_timestamps();
    let mut group = c.benchmark_group("timestamp_guard");
    group.throughput(Throughput::Elements(stamps.len() as u64));
    group.bench_function("repair_1000_packets", |b| {
        b.iter_batched(
            || TimestampGuard::new(10 * 90_000, 3600),
            |mut guard| {
                for &t in &stamps {
                    black_box(guard.repair(Some(t), Some(t), 0));
                }
                guard
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("repair_live_1000_packets", |b| {
        b.iter_batched(
            || TimestampGuard::new(10 * 90_000, 3600),
            |mut guard| {
                for (i, &t) in stamps.iter().enumerate() {
                    black_box(guard.repair_live(Some(t), Some(t), 0, i as i64 * 3600));
                }
                guard
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats");
    let counters = Counters::default();
    // What a copy-mode worker does per video packet: count it in, count it out with its size.
    group.throughput(Throughput::Elements(1));
    group.bench_function("counters_per_packet", |b| {
        b.iter(|| {
            Counters::add(&counters.video_packets_in, 1);
            Counters::add(&counters.video_frames_out, 1);
            Counters::add(&counters.bytes_out, black_box(4096));
        })
    });
    group.bench_function("counters_totals", |b| b.iter(|| black_box(counters.totals())));
    // The supervisor's tick, per camera: a sample into a 5 s window sampled every 250 ms.
    group.bench_function("rate_window_push", |b| {
        let mut window = RateWindow::new(Duration::from_secs(5));
        let start = Instant::now();
        let mut tick = 0u64;
        b.iter(|| {
            tick += 1;
            let mut totals = counters.totals();
            totals.video_frames_out = tick * 6;
            black_box(window.push(start + Duration::from_millis(250 * tick), totals))
        })
    });
    group.finish();
}

/// One FLV video tag of `size` body bytes (an inter frame), as the muxer writes it.
fn flv_tag(size: usize) -> Vec<u8> {
    let mut tag = vec![9, (size >> 16) as u8, (size >> 8) as u8, size as u8, 0, 0, 0, 0, 0, 0, 0];
    tag.push(0x27);
    tag.extend(std::iter::repeat_n(0u8, size - 1));
    tag.extend_from_slice(&(11 + size as u32).to_be_bytes());
    tag
}

fn hub_fan_out(c: &mut Criterion) {
    const HEADER: &[u8] = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00";
    let keyframe = {
        let mut tag = flv_tag(20_000);
        tag[11] = 0x17;
        tag
    };
    let frame = flv_tag(4_000);
    let mut group = c.benchmark_group("hub");
    // The muxer's bytes cut back into tags (what a camera pays per packet while its preview is watched).
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("split_4k_tag", |b| {
        let mut splitter = TagSplitter::default();
        splitter.push(HEADER);
        b.iter(|| black_box(splitter.push(black_box(&frame))))
    });
    for viewers in [0usize, 1, 10, 100] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("publish_4k_tag_to_{viewers}_viewers"), |b| {
            let channel = std::sync::Arc::new(Channel::default());
            let mut writer = HubWriter::new(std::sync::Arc::clone(&channel));
            std::io::Write::write_all(&mut writer, HEADER).unwrap();
            std::io::Write::write_all(&mut writer, &keyframe).unwrap();
            let mut queues: Vec<_> = (0..viewers).map(|_| channel.subscribe(usize::MAX).expect("no limit")).collect();
            let mut splitter = TagSplitter::default();
            splitter.push(HEADER);
            let tag = match splitter.push(&frame).pop() {
                Some(Piece::Tag(tag)) => tag,
                _ => unreachable!("a whole tag"),
            };
            let mut n = 0u32;
            b.iter(|| {
                channel.publish(Piece::Tag(tag.clone()));
                // Viewers read as fast as the network takes it; drain now and then so queues never fill.
                n += 1;
                if n % 256 == 0 {
                    for queue in &mut queues {
                        while queue.live.try_recv().is_ok() {}
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, timestamp_guard, stats, hub_fan_out);
criterion_main!(benches);
