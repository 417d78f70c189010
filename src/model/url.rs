//! Strict parsing of the network URLs camgate hands to FFmpeg (camera and RTMP URLs).
//!
//! A URL passes through two parsers: ours, which decides whether it is allowed, and FFmpeg's, which decides
//! what is sent where. Wherever they could disagree an attacker gets to choose, so this module refuses
//! everything that is not plainly one thing:
//!
//! - only printable ASCII: no space, tab, CR, LF, NUL or other control character, raw or percent-escaped
//!   (the `url` crate silently *drops* tab, CR and LF and trims control characters, and FFmpeg would put
//!   whatever survives into an RTSP request line), no non-ASCII (hosts must be written in punycode);
//! - no `\` (a path separator to some parsers, a user-info character to others), no fragment;
//! - every `%` starts a valid escape;
//! - a host that is a DNS name made of letters, digits, `-` and `_`, a dotted-quad IPv4 address, or a
//!   bracketed IPv6 address without a zone id; never something `inet_aton` would read as a number
//!   (`0x7f.1`, `2130706433`), which `getaddrinfo` would turn into an address nobody wrote.
//!
//! What passes is re-serialized by the `url` crate, and that canonical string — not the caller's — is what
//! is stored, shown (redacted) and given to FFmpeg.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::SpecError;

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// The host part of a checked URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost {
    /// A DNS name, as written (ASCII).
    Name(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address.
    V6(Ipv6Addr),
}

impl std::fmt::Display for UrlHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlHost::Name(name) => f.write_str(name),
            UrlHost::V4(ip) => write!(f, "{ip}"),
            UrlHost::V6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// A URL that passed every check, in canonical form.
#[derive(Debug, Clone)]
pub struct CheckedUrl {
    /// The canonical serialization: the only form stored and handed to FFmpeg.
    pub canonical: String,
    /// The scheme, lowercase.
    pub scheme: String,
    /// The host.
    pub host: UrlHost,
    /// The port, if written.
    pub port: Option<u16>,
    /// The path (percent-escaped as in the URL).
    pub path: String,
}

/// Checks `raw` as a URL of one of `schemes` and returns it in canonical form; errors name `field`.
pub fn check(field: &'static str, raw: &str, schemes: &[&str]) -> Result<CheckedUrl, SpecError> {
    let bad = |reason: String| SpecError::new(field, reason);
    if raw.len() > MAX_URL_LEN {
        return Err(bad(format!("URL is longer than {MAX_URL_LEN} bytes")));
    }
    if let Some((at, c)) = raw.char_indices().find(|&(_, c)| !c.is_ascii_graphic()) {
        return Err(bad(format!(
            "character {c:?} at byte {at} is not allowed in a URL (no spaces, control characters or non-ASCII; \
             percent-encode paths and write host names in punycode)"
        )));
    }
    if raw.contains('\\') {
        return Err(bad("'\\' is not allowed in a URL".into()));
    }
    if raw.contains('#') {
        return Err(bad("a URL fragment ('#') is not allowed".into()));
    }
    check_escapes(raw).map_err(bad)?;
    let url = url::Url::parse(raw).map_err(|e| bad(format!("not a valid URL: {e}")))?;
    if !schemes.contains(&url.scheme()) {
        let allowed: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        return Err(bad(format!("scheme {:?} is not allowed (use {})", url.scheme(), allowed.join(" or "))));
    }
    let host = match url.host() {
        None => return Err(bad("URL has no host".into())),
        Some(url::Host::Ipv4(ip)) => UrlHost::V4(ip),
        Some(url::Host::Ipv6(ip)) => UrlHost::V6(ip),
        Some(url::Host::Domain(name)) => check_host_name(name).map_err(bad)?,
    };
    let canonical = url.as_str().to_owned();
    // The canonical form must still pass the character checks (it only ever adds escapes).
    debug_assert!(canonical.chars().all(|c| c.is_ascii_graphic()));
    Ok(CheckedUrl { scheme: url.scheme().to_owned(), host, port: url.port(), path: url.path().to_owned(), canonical })
}

/// Every `%` must start a two-digit hex escape, and no escape may decode to a control character.
fn check_escapes(raw: &str) -> Result<(), String> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let value = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| {
                format!("'%' at byte {i} does not start an escape of two hex digits (write a literal % as %25)")
            })?;
            if value < 0x20 || value == 0x7f {
                return Err(format!("escape %{:02X} at byte {i} decodes to a control character", value));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// A DNS name of letters, digits, `-` and `_` labels; never one that resolvers would read as a number, and a
/// dotted-quad address must be a plain one.
fn check_host_name(name: &str) -> Result<UrlHost, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    // Non-special schemes leave IPv4 addresses to us. Rust's parser takes only plain dotted decimal (no octal,
    // hex or short forms), which is what every resolver reads the same way.
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Ok(UrlHost::V4(ip));
    }
    if name.is_empty() || name.len() > 253 {
        return Err("host name must be 1 to 253 characters".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("host name {name:?} has an empty or over-long label"));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(format!("character {c:?} is not allowed in a host name"));
        }
    }
    // inet_aton reads decimal, octal (leading 0) and hex (0x) parts: any all-numeric name is an address to
    // the resolver, so it must be one we can read the same way.
    let numeric = |label: &str| {
        let lower = label.to_ascii_lowercase();
        lower.chars().all(|c| c.is_ascii_digit())
            || lower.strip_prefix("0x").is_some_and(|hex| hex.chars().all(|c| c.is_ascii_hexdigit()))
    };
    if labels.iter().all(|l| numeric(l)) || labels.last().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Err(format!(
            "host {name:?} looks like a number; write IPv4 addresses as four decimal parts (10.0.0.5)"
        ));
    }
    Ok(UrlHost::Name(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTSP: &[&str] = &["rtsp", "rtsps"];

    fn ok(raw: &str) -> CheckedUrl {
        check("input", raw, RTSP).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
    }

    fn refused(raw: &str) -> String {
        let e = check("input", raw, RTSP).expect_err(raw);
        assert_eq!(e.field(), "input");
        e.reason().to_owned()
    }

    #[test]
    fn plain_urls_pass_in_canonical_form() {
        assert_eq!(
            ok("rtsp://10.0.0.5:554/Streaming/Channels/101").canonical,
            "rtsp://10.0.0.5:554/Streaming/Channels/101"
        );
        assert_eq!(ok("RTSP://cam.local/a/../b?x=1").canonical, "rtsp://cam.local/b?x=1");
        assert_eq!(ok("rtsp://u%40x:p%3Aw@cam/s").canonical, "rtsp://u%40x:p%3Aw@cam/s");
        assert_eq!(ok("rtsp://[::1]:8554/s").host, UrlHost::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(ok("rtsp://10.0.0.5/s").host, UrlHost::V4(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(ok("rtsp://cam-1_b.example./s").host, UrlHost::Name("cam-1_b.example".into()));
        // An unescaped '@' in a password is the last '@' that ends the user info, as FFmpeg reads it too.
        let u = ok("rtsp://admin:p@ss@cam/s");
        assert_eq!((u.canonical.as_str(), &u.host), ("rtsp://admin:p%40ss@cam/s", &UrlHost::Name("cam".into())));
        // The host is the one after the user info, whatever the user info says.
        assert_eq!(ok("rtsp://good@evil/x").host, UrlHost::Name("evil".into()));
    }

    #[test]
    fn hostile_inputs_are_refused() {
        for raw in [
            "rtsp://127.0.0.1:9/a\0b",
            "rtsp://127.0.0.1:9554/a\r\nX-Injected: 1\r\nFoo:",
            "rtsp://h/a\tb",
            "rtsp://h/a b",
            " rtsp://h/a",
            "rtsp://h/a\u{7f}",
            "rtsp://h/%00",
            "rtsp://h/a%0D%0AX-Injected:%201",
            "rtsp://h/a%09b",
            "rtsp://u%0d%0a:p@h/a",
            "rtsp://h/%zz",
            "rtsp://h/%4",
            "rtsp://evil\\@good/x",
            "rtsp://h\\x/",
            "rtsp://[fe80::1%25eth0]/s",
            "rtsp://[fe80::1%eth0]/s",
            "rtsp://héllo/s",
            "rtsp://h/é",
            "rtsp://xn--hllo-bpa.example/s#frag",
            "rtsp://0x7f.1/s",
            "rtsp://2130706433/s",
            "rtsp://127.1/s",
            "rtsp://017700000001/s",
            "rtsp://010.0.0.1/s",
            "rtsp://1.2.3.4.5/s",
            "rtsp://h!x/s",
            "rtsp://h,x/s",
            "rtsp://:554/s",
            "rtsp:///s",
            "http://h/s",
            "file:///etc/passwd",
        ] {
            refused(raw);
        }
        assert!(refused(&format!("rtsp://h/{}", "a".repeat(MAX_URL_LEN))).contains("longer"));
        assert!(refused("rtsp://h/a\r\nb").contains("'\\r'"));
    }

    #[test]
    fn punycode_hosts_pass() {
        assert_eq!(ok("rtsp://xn--hllo-bpa.example/s").host, UrlHost::Name("xn--hllo-bpa.example".into()));
    }
}
