//! The offline slate: while a camera is away, its outputs stay published with a generated picture and silence,
//! so SRS keeps the stream and players stay attached; when the camera returns, the next session takes the same
//! outputs back and the stream carries on.
//!
//! A session that loses its camera (the connection ends, a read fails or times out) hands its outputs — the
//! RTMP output, the extra outputs and the preview, still connected — to a [`Slate`]. Reconnecting to the camera
//! blocks the camera's thread for up to the open timeout, longer than RTMP servers wait for a silent publisher
//! (SRS drops one after 5 s), so the slate runs on a thread of its own, `slate-<id>`, that owns the outputs
//! while it runs. Ownership is handed over and back, never shared: the next session, once its camera is open
//! and its streams known, calls [`Slate::take`], which stops the thread and returns the outputs.
//!
//! What keeps players decoding across both switches:
//! - every switch starts with a keyframe carrying its own SPS/PPS as new extradata, so the FLV muxer writes a
//!   new AVC sequence header right before it (the slate's x264 differs from the camera's encoder);
//! - the picture keeps the output's size, and the audio keeps its format: silent AAC-LC frames at the output's
//!   rate and channels, one continuous track;
//! - timestamps continue where the previous source stopped ([`FlvOutput::rejoin`]), so they only go forward.
//!
//! Outputs are only held when the next session can keep them: an output whose audio is not AAC-LC (which the
//! silence cannot match) or a warm camera's (connected only for viewers) is closed as before.

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ffmpeg_next::{Packet, Rational};
use tracing::{debug, info, warn};

use super::output::{FlvOutput, Measure, Track};
use super::silence::SilenceFiller;
use super::slate_picture::{self, SlateEncoder};
use super::{FINISH_WITHIN, Halt, attach_new_extradata, share, write_halt};
use crate::model::{CameraId, Stage};

/// Outputs a session left connected when its camera went away, with what a stand-in must match.
pub struct HeldOutputs {
    /// The RTMP/file outputs first, then the preview (as in the session).
    pub(super) outputs: Vec<FlvOutput>,
    /// How many of `outputs` are RTMP/file outputs.
    pub(super) mains: usize,
    /// The output's picture size.
    pub(super) size: (u32, u32),
    /// The output's audio, if it has a track: AAC-LC sample rate, channels and its AudioSpecificConfig.
    pub(super) audio: Option<HeldAudio>,
}

/// The audio track a held output announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAudio {
    pub rate: u32,
    pub channels: u16,
    pub extradata: Vec<u8>,
}

impl HeldOutputs {
    /// Writes the trailers: the outputs will not be used again.
    pub(super) fn finish(self, camera: &CameraId) {
        for output in self.outputs {
            if let Err(e) = output.finish(FINISH_WITHIN) {
                debug!(camera = %camera, "trailer not written: {e:?}");
            }
        }
    }
}

/// The running slate of one camera; dropping it finishes its outputs.
pub struct Slate {
    camera: CameraId,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<Option<HeldOutputs>>>,
}

impl Slate {
    /// Starts showing the slate on `held`'s outputs, on a thread of its own.
    pub(super) fn start(camera: &CameraId, held: HeldOutputs, secrets: Vec<String>) -> std::io::Result<Slate> {
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let thread = {
            let camera = camera.clone();
            thread::Builder::new().name(format!("slate-{camera}")).spawn(move || {
                super::ffmpeg_log::set_thread_camera(Some(camera.clone()));
                super::ffmpeg_log::set_thread_secrets(secrets);
                show(&camera, held, &stopped)
            })?
        };
        Ok(Slate { camera: camera.clone(), stop: Some(stop), thread: Some(thread) })
    }

    /// Stops the slate and returns its outputs, still connected; `None` if they broke meanwhile (an RTMP server
    /// that went away, a fence) or the slate thread panicked.
    pub(super) fn take(mut self) -> Option<HeldOutputs> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Option<HeldOutputs> {
        // Disconnecting the channel wakes the thread from its wait between frames.
        drop(self.stop.take());
        let thread = self.thread.take()?;
        match thread.join() {
            Ok(held) => held,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                warn!(camera = %self.camera, "the offline slate panicked: {message}");
                None
            }
        }
    }
}

impl Drop for Slate {
    fn drop(&mut self) {
        if let Some(held) = self.stop_thread() {
            held.finish(&self.camera);
        }
    }
}

/// The slate thread's body: a frame every 1/[`slate_picture::FPS`] s and silence to match, until told to stop.
fn show(camera: &CameraId, mut held: HeldOutputs, stop: &Receiver<()>) -> Option<HeldOutputs> {
    let since = Instant::now();
    let mut encoder = match SlateEncoder::new(held.size.0, held.size.1) {
        Ok(encoder) => encoder,
        Err(e) => {
            warn!(camera = %camera, "the offline slate cannot be encoded ({e}); the outputs wait for the camera");
            let _ = stop.recv();
            return Some(held);
        }
    };
    let mut silence = match &held.audio {
        Some(audio) => match SilenceFiller::new(audio.rate, audio.channels) {
            Ok(filler) => Some(filler),
            Err(e) => {
                warn!(camera = %camera, "the offline slate has no silence ({e}); video only");
                None
            }
        },
        None => None,
    };
    for output in &mut held.outputs {
        output.rejoin();
    }
    info!(camera = %camera, "camera away: its outputs show the offline slate");
    let mut announce = Some(encoder.extradata());
    let frame = Duration::from_secs(1) / slate_picture::FPS as u32;
    let name = camera.to_string();
    for n in 0u32.. {
        let at = frame * n;
        let lines = ["CAMERA OFFLINE".to_owned(), name.clone(), format!("FOR {}", clock(since.elapsed()))];
        let outputs = &mut held.outputs;
        let mut written = encoder.encode(&lines, at.as_millis() as i64, &mut |packet| {
            if let Some(extradata) = announce.take() {
                attach_new_extradata(packet, &extradata);
            }
            write_all(outputs, Track::Video, packet, slate_picture::TIME_BASE)
        });
        if let (Ok(()), Some(filler)) = (&written, silence.as_mut()) {
            written = filler.fill_all_to(at.as_secs_f64(), &mut |packet, time_base| {
                write_all(outputs, Track::Audio, packet, time_base)
            });
        }
        if let Err(halt) = written {
            // The outputs are gone (a broken RTMP server, a fence, a stop): nothing to hand back.
            warn!(camera = %camera, "the offline slate ended: {halt:?}");
            return None;
        }
        match stop.recv_timeout((since + frame * (n + 1)).saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(held)
}

fn write_all(outputs: &mut [FlvOutput], track: Track, packet: &mut Packet, time_base: Rational) -> Result<(), Halt> {
    for output in outputs {
        let mut copy = share(packet);
        let written = output.write(track, &mut copy, time_base, Measure::NONE);
        written.map_err(|e| write_halt(Stage::WriteOutput, e, output.interrupter()))?;
    }
    Ok(())
}

/// `h:mm:ss`.
fn clock(away: Duration) -> String {
    let s = away.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::clock;
    use std::time::Duration;

    #[test]
    fn away_reads_as_a_clock() {
        assert_eq!(clock(Duration::from_secs(7)), "0:00:07");
        assert_eq!(clock(Duration::from_secs(3 * 3600 + 61)), "3:01:01");
    }
}
