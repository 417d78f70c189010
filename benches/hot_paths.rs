//! Per-packet work camgate adds on top of FFmpeg: the timestamp guard every packet passes, and the statistics
//! every packet bumps and the supervisor samples.
//!
//! `cargo bench --bench hot_paths`. The FLV preview hub's fan-out is not benchmarked: the hub does not exist
//! yet.

use std::hint::black_box;
use std::time::{Duration, Instant};

use camgate::TimestampGuard;
use camgate::stats::{Counters, RateWindow};
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

criterion_group!(benches, timestamp_guard, stats);
criterion_main!(benches);
