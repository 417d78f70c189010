//! Embedding camgate in ten lines: relay one camera to one output and print its status every second.
//!
//! ```text
//! cargo run --example relay -- rtsp://cam.local/stream1 rtmp://127.0.0.1/live/cam1 [seconds]
//! ```
use std::time::Duration;

use camgate::{StreamSpec, Supervisor, SupervisorConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(output)) = (args.first(), args.get(1)) else {
        return Err("usage: relay <rtsp-url> <rtmp-url|file.flv> [seconds]".into());
    };
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let supervisor = Supervisor::new(SupervisorConfig::default());
    supervisor.start_blocking(StreamSpec::new("relay", input, output)?)?;
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        for cam in supervisor.snapshot() {
            println!("{}", serde_json::to_string(&cam)?);
        }
    }
    let last = supervisor.stop_blocking(&"relay".parse()?)?;
    println!("stopped: {}", serde_json::to_string(&last)?);
    Ok(())
}
