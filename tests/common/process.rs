//! Child processes that can never outlive the test binary, plus /proc readings of their cost.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long [`ChildGuard`]'s `Drop` waits after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// A spawned child that is terminated (SIGTERM, then SIGKILL) and reaped on drop.
///
/// The child also gets `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test
/// binary even when the binary is killed and no destructor runs.
pub struct ChildGuard {
    child: Child,
    name: String,
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The thread every child is forked from.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
/// the process. libtest runs each test on its own short-lived thread, so a
/// server forked there (or shared between tests through a static) would be
/// killed as soon as that test's thread returned. Forking from one thread that
/// lives as long as the process ties the children to the process instead.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // The requester may have given up; nothing to do then.
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the child-spawner thread");
        Mutex::new(tx)
    })
}

impl ChildGuard {
    /// Spawns `cmd` tied to this process's lifetime. `name` is used in messages.
    pub fn spawn(name: &str, mut cmd: Command) -> io::Result<ChildGuard> {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (prctl, getppid) without allocating.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl; the signal
                // would then never come, so refuse to start at all.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()
            .lock()
            .map_err(|_| io::Error::other("child-spawner lock poisoned"))?
            .send((cmd, reply_tx))
            .map_err(|_| io::Error::other("child-spawner thread is gone"))?;
        let child = reply_rx.recv().map_err(|_| io::Error::other("child-spawner thread dropped the request"))??;
        Ok(ChildGuard { child, name: name.to_string() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The wrapped child, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits until something accepts connections on 127.0.0.1:`port`: an error naming the process if it exits
    /// first or nothing listens within `within`.
    pub fn wait_listening(&mut self, port: u16, within: Duration) -> Result<(), String> {
        let name = self.name.clone();
        super::net::wait_for_port(port, within, || match self.try_exit_status() {
            Some(status) => Err(format!("{name} exited with {status}")),
            None => Ok(()),
        })
    }

    /// `Some(status)` once the child has exited (reaping it), `None` while it runs.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILLs; always reaps.
    ///
    /// Returns the exit status, or `None` if the child could not be reaped.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_exit_status() {
            return Some(status);
        }
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{}: no exit {grace:?} after SIGTERM, sending SIGKILL", self.name);
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// CPU time (user + system, all threads) the child has used so far.
    pub fn cpu_time(&self) -> io::Result<Duration> {
        cpu_time(self.pid())
    }

    /// Resident set size of the child right now.
    pub fn rss_bytes(&self) -> io::Result<u64> {
        rss_bytes(self.pid())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate(TERM_GRACE);
    }
}

/// CPU time (user + system, all threads) process `pid` has used, from /proc.
///
/// Sample it twice and divide the difference by the wall time in between to
/// get the share of one core.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after its closing
    // parenthesis are space-separated: state is field 3, utime 14, stime 15.
    let after =
        stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no field {n} in /proc/{pid}/stat")))
    };
    let ticks = field(14)? + field(15)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return Err(io::Error::other("sysconf(_SC_CLK_TCK) failed"));
    }
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// Resident set size of process `pid` right now, from /proc.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))?;
    Ok(kib * 1024)
}

/// This process's live threads named exactly `name` (as `/proc/self/task/<tid>` directories): the camera
/// threads are `cam-<id>`.
///
/// A thread on its way out is not counted: `pthread_join` returns once the kernel has cleared the thread's id,
/// which it does part-way through the thread's exit, so for a moment after the join a joined thread is still
/// listed, running, with its name (seen in 2–15 % of 20,000 spawn-join-list rounds on this kind of machine) —
/// but with `PF_EXITING` set in its flags. Counting it would have a camera restarted right after its old thread
/// was joined look like two threads of one camera.
pub fn own_threads_named(name: &str) -> Vec<std::path::PathBuf> {
    /// `PF_EXITING` in `/proc/<tid>/stat`'s flags: the thread is in `do_exit`.
    const PF_EXITING: u64 = 0x4;
    let live = |task: &std::path::Path| {
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else { return false };
        // The name is in parentheses and may hold anything; the fields after it are state, ppid, pgrp,
        // session, tty_nr, tpgid, flags.
        let flags = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(6)?.parse::<u64>().ok());
        flags.is_some_and(|flags| flags & PF_EXITING == 0)
    };
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| Some(t.ok()?.path()))
                .filter(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|comm| comm.trim_end() == name))
                .filter(|t| live(t))
                .collect()
        })
        .unwrap_or_default()
}
