//! The CPU each camera really uses: its threads' user and system time, read from `/proc/self/task`.
//!
//! A camera's threads are named `cam-<id>`: its own thread, and the decoder and x264 threads FFmpeg starts from
//! it, which inherit the name (Linux copies a thread's name to the threads it creates). The kernel keeps 15
//! bytes of a name, so ids that share their first 11 characters share their threads' names; their CPU is then
//! split evenly between them. Elsewhere than Linux nothing is measured and estimates stand.

use std::collections::HashMap;
use std::time::Instant;

use crate::model::CameraId;

/// The thread name of camera `id`, as the kernel keeps it (15 bytes).
pub fn thread_name(id: &CameraId) -> String {
    let mut name = format!("cam-{id}");
    name.truncate(15);
    name
}

/// CPU time per thread name, sampled now and then; cores per camera between two samples.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: Option<(Instant, HashMap<String, u64>)>,
}

impl CpuMeter {
    /// Samples the threads and returns cores per thread name since the previous sample (empty at the first).
    pub fn sample(&mut self) -> HashMap<String, f64> {
        let now = Instant::now();
        let ticks = thread_ticks();
        let mut cores = HashMap::new();
        if let Some((then, before)) = &self.last {
            let secs = now.duration_since(*then).as_secs_f64();
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            if secs > 0.0 {
                for (name, now_ticks) in &ticks {
                    let used = now_ticks.saturating_sub(before.get(name).copied().unwrap_or(0));
                    cores.insert(name.clone(), used as f64 / hz / secs);
                }
            }
        }
        self.last = Some((now, ticks));
        cores
    }
}

/// utime + stime per thread name (summed over threads of the same name), in clock ticks.
fn thread_ticks() -> HashMap<String, u64> {
    let mut ticks = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return ticks };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // `pid (comm) state …`: the name may hold spaces and parentheses; fields follow the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = &stat[open + 1..close];
        if !name.starts_with("cam-") {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        *ticks.entry(name.to_owned()).or_default() += field(14) + field(15);
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_camera_thread_is_measured() {
        let id: CameraId = "cpu-meter-test-camera".parse().unwrap();
        assert_eq!(thread_name(&id), "cam-cpu-meter-t");
        let name = thread_name(&id);
        let mut meter = CpuMeter::default();
        let spinning = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = spinning.clone();
        let spinner = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || while flag.load(std::sync::atomic::Ordering::Relaxed) {})
            .unwrap();
        meter.sample();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let cores = meter.sample();
        spinning.store(false, std::sync::atomic::Ordering::Relaxed);
        spinner.join().unwrap();
        let used = cores.get(&name).copied().unwrap_or(0.0);
        // A spinning thread would use a whole core on an idle machine; other tests may share the cores.
        assert!(used > 0.1, "a spinning thread is measured, {used:.2} cores");
    }
}
