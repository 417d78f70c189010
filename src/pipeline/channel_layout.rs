//! The one place that knows FFmpeg changed its channel-layout API.
//!
//! FFmpeg 5.1 (Debian 12) still fills the legacy `channel_layout` bit mask + `channels` fields, and leaves the
//! mask at 0 for many mono decoders (G.711); FFmpeg 7 only has `AVChannelLayout`. ffmpeg-next follows the
//! version it was built against, so everything version-dependent about layouts is cfg-gated here.

use ffmpeg_next::ChannelLayout;
use ffmpeg_next::codec::{decoder, encoder};

/// The decoder's channel layout, never empty: a decoder that reports only a channel count gets the default
/// layout for it (mono, stereo, …).
pub fn of_decoder(decoder: &decoder::Audio) -> ChannelLayout {
    let layout = decoder.channel_layout();
    if layout.is_empty() || layout.channels() <= 0 {
        ChannelLayout::default(i32::from(decoder.channels().max(1)))
    } else {
        layout
    }
}

/// The layout sent to the AAC encoder: mono stays mono, everything else is mixed to stereo (what browsers play
/// everywhere).
pub fn for_output(input_channels: i32) -> ChannelLayout {
    if input_channels <= 1 { ChannelLayout::MONO } else { ChannelLayout::STEREO }
}

/// Sets the encoder's layout (and, before FFmpeg 7, the separate channel count).
pub fn set_on_encoder(encoder: &mut encoder::audio::Audio, layout: ChannelLayout) {
    #[cfg(not(feature = "ffmpeg_7_0"))]
    encoder.set_channels(layout.channels());
    encoder.set_channel_layout(layout);
}

/// The layout as `abuffer` takes it in its argument string (a hex mask works in FFmpeg 5.1 and 7).
pub fn filter_arg(layout: &ChannelLayout) -> String {
    format!("0x{:x}", layout.bits())
}
