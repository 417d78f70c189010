//! Turns the FFmpeg version that ffmpeg-sys-next found into `feature = "ffmpeg_X_Y"` cfgs, the same way
//! ffmpeg-next does, so the few version-dependent lines (channel layouts) can be cfg-gated in one place.
use std::env;

fn main() {
    for (name, value) in env::vars() {
        if let Some(feature) = name.strip_prefix("DEP_FFMPEG_") {
            let feature = feature.to_lowercase();
            println!(r#"cargo:rustc-check-cfg=cfg(feature, values("{feature}"))"#);
            if value == "true" {
                println!(r#"cargo:rustc-cfg=feature="{feature}""#);
            }
        }
    }
}
