//! What /proc says about CPU time and memory: of a whole process, and of this process's own threads.

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Clock ticks per second, for the tick counts in /proc/*/stat.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// utime + stime in seconds from the text of a /proc/.../stat file.
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces and parentheses: fields are counted after the last ')'.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second())
}

/// CPU seconds (user + system, all threads) used so far by process `pid` (`None`: this process).
pub fn process_cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    stat_cpu_secs(&fs::read_to_string(path).ok()?)
}

/// One line of /proc/PID/status (or smaps_rollup) in kB, as bytes.
fn kb_field(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let kb: u64 = text.lines().find_map(|l| l.strip_prefix(key))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size of `pid` (`None`: this process).
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let who = pid.map_or("self".to_owned(), |p| p.to_string());
    kb_field(&format!("/proc/{who}/status"), "VmRSS:")
}

/// Proportional set size of `pid`: shared pages (the FFmpeg libraries, mostly) divided among the processes that
/// map them. The fairer figure when many processes run the same binary.
pub fn pss_bytes(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// CPU seconds of every thread of this process whose name starts with `prefix`, by thread id.
///
/// Threads inherit their creator's name on Linux, so the threads x264 and the H.264 decoder start from a
/// `cam-<id>` worker are named `cam-<id>` too (FFmpeg 5.1 and x264 do not rename their threads).
pub fn threads_cpu_secs(prefix: &str) -> Vec<(u32, String, f64)> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else { return Vec::new() };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let dir = task.path();
        let Ok(comm) = fs::read_to_string(dir.join("comm")) else { continue };
        let comm = comm.trim_end().to_owned();
        if !comm.starts_with(prefix) {
            continue;
        }
        if let Some(secs) = fs::read_to_string(dir.join("stat")).ok().as_deref().and_then(stat_cpu_secs) {
            out.push((tid, comm, secs));
        }
    }
    out
}

/// CPU seconds the threads in `end` used since `start` (threads that started in between count from zero).
pub fn threads_delta(start: &[(u32, String, f64)], end: &[(u32, String, f64)]) -> f64 {
    end.iter().map(|(tid, _, secs)| secs - start.iter().find(|(t, _, _)| t == tid).map_or(0.0, |(_, _, s)| *s)).sum()
}

/// Context switches (voluntary and involuntary) of every thread of process `pid` so far (`None`: this
/// process): each is a wake-up or a preemption.
pub fn context_switches(pid: Option<u32>) -> u64 {
    let who = pid.map_or("self".to_owned(), |p| p.to_string());
    let Ok(tasks) = fs::read_dir(format!("/proc/{who}/task")) else { return 0 };
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else { continue };
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// The machine's online CPUs, whatever this thread is pinned to.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// The CPU set holding `cpus`.
pub fn cpu_set(cpus: &[usize]) -> Result<libc::cpu_set_t, String> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("CPU {cpu} is beyond what a CPU set can hold"));
        }
        // SAFETY: `cpu` is below CPU_SETSIZE, checked above, so the bit is inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    Ok(set)
}

/// Restricts thread `tid` (0: the calling thread) to the CPUs in `set`. Async-signal-safe, so a forked child
/// may call it before exec.
pub fn set_affinity(tid: i32, set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t and the size passed is its own.
    if unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Restricts threads to the CPUs in `cpus`: every thread of process `pid`, or with `None` the calling thread
/// only (the threads and processes it starts later inherit its set, so call it before they start).
pub fn pin(pid: Option<u32>, cpus: &[usize]) -> Result<(), String> {
    let set = cpu_set(cpus)?;
    let tids: Vec<i32> = match pid {
        None => vec![0],
        Some(pid) => fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|e| format!("threads of process {pid}: {e}"))?
            .flatten()
            .filter_map(|task| task.file_name().to_str()?.parse().ok())
            .collect(),
    };
    for tid in tids {
        set_affinity(tid, &set).map_err(|e| format!("pinning thread {tid} to CPUs {cpus:?}: {e}"))?;
    }
    Ok(())
}

/// The 1-minute load average and the running/total task counts, as /proc/loadavg shows them.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Microseconds since the Unix epoch: comparable between processes on this machine.
pub fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Summary of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub n: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Summary {
    pub fn of_ms(mut values: Vec<f64>) -> Summary {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n == 0 {
            return Summary::default();
        }
        // Nearest-rank percentiles: with fewer than 100 samples p99 is the maximum.
        let rank = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Summary { n, p50: Some(rank(0.5)), p99: Some(rank(0.99)), max: values.last().copied() }
    }

    pub fn of_durations(values: &[Duration]) -> Summary {
        Summary::of_ms(values.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
    }
}

/// A pause of 0–100 ms, different every call. Stopping hung cameras one after the other would otherwise fall
/// into step with libavformat's 100 ms socket polling and always hit the same phase of it.
pub fn jitter_pause() {
    use std::hash::{BuildHasher, RandomState};
    let ms = RandomState::new().hash_one(unix_us()) % 101;
    std::thread::sleep(Duration::from_millis(ms));
}
