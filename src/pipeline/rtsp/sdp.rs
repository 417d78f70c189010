//! What camgate's reader needs from a camera's session description (RFC 4566): each media section's control
//! URL (to SET it up) and payload types (to route its packets), and the description handed on to libavformat,
//! which parses codecs and parameters itself.

/// One `m=` section.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Media {
    /// `video`, `audio`, `application` …
    pub kind: String,
    /// The payload types the section lists.
    pub payload_types: Vec<u8>,
    /// Its `a=control:` value, if any (absolute, relative, or `*`).
    pub control: Option<String>,
}

/// A parsed description.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Description {
    /// The session-level `a=control:`, if any.
    pub control: Option<String>,
    pub media: Vec<Media>,
}

/// Why a description cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SdpError {
    #[error("the session description is not UTF-8")]
    NotText,
    #[error("the session description has no media")]
    NoMedia,
    #[error("the session description's media line {0:?} is unreadable")]
    BadMedia(String),
}

/// Parses the parts of `text` the reader uses.
pub(crate) fn parse(text: &[u8]) -> Result<Description, SdpError> {
    let text = std::str::from_utf8(text).map_err(|_| SdpError::NotText)?;
    let mut description = Description { control: None, media: Vec::new() };
    for line in text.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            let mut words = media.split_ascii_whitespace();
            let (Some(kind), Some(_port), Some(_proto)) = (words.next(), words.next(), words.next()) else {
                return Err(SdpError::BadMedia(line.to_owned()));
            };
            let payload_types = words
                .map(str::parse::<u8>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| SdpError::BadMedia(line.to_owned()))?;
            if payload_types.is_empty() || payload_types.iter().any(|&pt| pt > 127) {
                return Err(SdpError::BadMedia(line.to_owned()));
            }
            description.media.push(Media { kind: kind.to_owned(), payload_types, control: None });
        } else if let Some(control) = line.strip_prefix("a=control:") {
            let control = Some(control.trim().to_owned());
            match description.media.last_mut() {
                Some(media) => media.control = control,
                None => description.control = control,
            }
        }
    }
    if description.media.is_empty() {
        return Err(SdpError::NoMedia);
    }
    Ok(description)
}

/// `text` with an `a=ssrc:` line after the `m=` line of each media section whose SSRC is known, so that
/// libavformat can tell whose RTCP sender reports are whose (it routes them by SSRC; without them it cannot
/// line the streams' clocks up).
pub(crate) fn with_ssrcs(text: &[u8], ssrcs: &[Option<u32>]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    let mut out = String::with_capacity(text.len() + 32 * ssrcs.len());
    let mut index = 0;
    for line in text.lines() {
        out.push_str(line);
        out.push_str("\r\n");
        if line.starts_with("m=") {
            if let Some(Some(ssrc)) = ssrcs.get(index) {
                out.push_str(&format!("a=ssrc:{ssrc} cname:camgate\r\n"));
            }
            index += 1;
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAMERA: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=Session\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
a=control:*\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:stream=0\r\n\
m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=control:stream=1\r\n";

    #[test]
    fn media_controls_and_payload_types_are_read() {
        let d = parse(CAMERA).unwrap();
        assert_eq!(d.control.as_deref(), Some("*"));
        assert_eq!(d.media.len(), 2);
        assert_eq!(
            d.media[0],
            Media { kind: "video".into(), payload_types: vec![96], control: Some("stream=0".into()) }
        );
        assert_eq!(d.media[1].payload_types, vec![97]);
        assert_eq!(d.media[1].control.as_deref(), Some("stream=1"));
    }

    #[test]
    fn unusable_descriptions_are_refused() {
        assert_eq!(parse(b"v=0\r\ns=x\r\n"), Err(SdpError::NoMedia));
        assert!(matches!(parse(b"m=video 0 RTP/AVP\r\n"), Err(SdpError::BadMedia(_))));
        assert!(matches!(parse(b"m=video 0 RTP/AVP 300\r\n"), Err(SdpError::BadMedia(_))));
        assert_eq!(parse(b"m=video 0 RTP/AVP \xff\r\n"), Err(SdpError::NotText));
    }

    #[test]
    fn known_ssrcs_are_added_under_their_media() {
        let text = String::from_utf8(with_ssrcs(CAMERA, &[Some(1234), None])).unwrap();
        let video = text.find("m=video").unwrap();
        let ssrc = text.find("a=ssrc:1234 cname:camgate\r\n").unwrap();
        assert!(ssrc > video && ssrc < text.find("m=audio").unwrap(), "{text}");
        assert_eq!(text.matches("a=ssrc").count(), 1);
    }
}
