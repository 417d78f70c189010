//! Properties of the parsers every request goes through first: camera ids and camera/RTMP URLs. Inputs are
//! arbitrary strings and URLs assembled from hostile pieces (control characters raw and escaped, `@`, `\`,
//! brackets, zone ids, non-ASCII, numeric hosts). Whatever the input, parsing never panics, and what is
//! accepted is canonical: re-parsing it gives it back unchanged, it is printable ASCII only, and shown
//! redacted it carries no password.

use camgate::model::url::MAX_URL_LEN;
use camgate::{CameraId, OutputTarget, SourceUrl};
use proptest::prelude::*;

/// Pieces an attacker would put in a URL.
fn hostile_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("\0".to_owned()),
        1 => Just("\r\n".to_owned()),
        1 => Just("\r\nX-Injected: 1\r\n".to_owned()),
        1 => Just("\t".to_owned()),
        1 => Just(" ".to_owned()),
        1 => Just("%00".to_owned()),
        1 => Just("%0D%0A".to_owned()),
        1 => Just("%0a".to_owned()),
        1 => Just("%09".to_owned()),
        1 => Just("%20".to_owned()),
        1 => Just("%".to_owned()),
        1 => Just("%zz".to_owned()),
        1 => Just("@".to_owned()),
        1 => Just("\\".to_owned()),
        1 => Just("\\@".to_owned()),
        1 => Just("#".to_owned()),
        1 => Just("?".to_owned()),
        1 => Just("/".to_owned()),
        1 => Just(":".to_owned()),
        1 => Just("[".to_owned()),
        1 => Just("]".to_owned()),
        1 => Just("%25eth0".to_owned()),
        1 => Just("é".to_owned()),
        1 => Just("\u{202e}".to_owned()),
        1 => Just("\u{7f}".to_owned()),
        1 => Just("0x7f".to_owned()),
        1 => Just("127.1".to_owned()),
        1 => Just("..".to_owned()),
        // Mostly harmless text, so that a good share of the URLs pass and the properties of accepted URLs are
        // exercised, with a hostile piece here and there.
        40 => "[a-zA-Z0-9._~-]{0,8}",
        10 => "%[0-9A-Fa-f]{2}",
        5 => "[!$&'()*+,;=]",
    ]
}

fn hostile_url() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![Just("rtsp"), Just("rtsps"), Just("RTSP"), Just("rtmp"), Just("http"), Just("file")];
    let user = proptest::collection::vec(hostile_piece(), 0..3).prop_map(|p| p.concat());
    let pass = proptest::collection::vec(hostile_piece(), 0..3).prop_map(|p| p.concat());
    let host = prop_oneof![
        Just("10.0.0.5".to_owned()),
        Just("cam.local".to_owned()),
        Just("[::1]".to_owned()),
        Just("[fe80::1%25eth0]".to_owned()),
        proptest::collection::vec(hostile_piece(), 1..3).prop_map(|p| p.concat()),
    ];
    let port =
        prop_oneof![Just(String::new()), Just(":554".to_owned()), Just(":99999".to_owned()), Just(":".to_owned())];
    let path = proptest::collection::vec(hostile_piece(), 0..5).prop_map(|p| p.concat());
    (scheme, user, pass, host, port, path).prop_map(|(scheme, user, pass, host, port, path)| {
        let auth = match (user.is_empty(), pass.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!("{user}@"),
            _ => format!("{user}:{pass}@"),
        };
        format!("{scheme}://{auth}{host}{port}/{path}")
    })
}

fn assert_canonical(canonical: &str) {
    assert!(canonical.len() <= MAX_URL_LEN * 3, "{canonical:?}");
    assert!(canonical.chars().all(|c| c.is_ascii_graphic()), "not printable ASCII: {canonical:?}");
    assert!(!canonical.contains('\\') && !canonical.contains('#'), "{canonical:?}");
    for (i, _) in canonical.match_indices('%') {
        let escape = &canonical[i + 1..(i + 3).min(canonical.len())];
        let value = u8::from_str_radix(escape, 16).unwrap_or_else(|_| panic!("bad escape in {canonical:?}"));
        assert!(value >= 0x20 && value != 0x7f, "control escape in {canonical:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn camera_ids_accept_exactly_the_narrow_alphabet(s in "\\PC{0,70}|[A-Za-z0-9_-]{0,70}") {
        let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        match s.parse::<CameraId>() {
            Ok(id) => { prop_assert!(ok); prop_assert_eq!(id.as_str(), s.as_str()); }
            Err(e) => { prop_assert!(!ok); prop_assert_eq!(e.field(), "id"); }
        }
    }

    #[test]
    fn camera_urls_that_pass_are_canonical(raw in prop_oneof![4 => hostile_url(), 1 => "\\PC{0,80}", 1 => any::<String>()]) {
        let Ok(url) = raw.parse::<SourceUrl>() else { return Ok(()) };
        let canonical = url.expose().to_owned();
        assert_canonical(&canonical);
        let again: SourceUrl = canonical.parse().expect("the canonical form parses");
        prop_assert_eq!(again.expose(), canonical.as_str(), "canonical form is a fixed point");
        prop_assert_eq!(again.host_port(), url.host_port());
        // The password never shows, whatever the user info looked like — unless the same characters are also
        // in the host, the path or the query, which are not secret (`rtsp://u:127.1@cam/127.1`).
        if let Ok(parsed) = url::Url::parse(&canonical)
            && let Some(password) = parsed.password().filter(|p| p.len() > 3)
        {
            let mut public = parsed.clone();
            let _ = public.set_username("");
            let _ = public.set_password(None);
            if !public.as_str().contains(password) {
                prop_assert!(!url.redacted().contains(password), "{} shows {}", url.redacted(), password);
            }
        }
    }

    #[test]
    fn rtmp_urls_that_pass_are_canonical(raw in prop_oneof![hostile_url().prop_map(|u| u.replacen("rtsp", "rtmp", 1)), any::<String>()]) {
        let Ok(output) = raw.parse::<OutputTarget>() else { return Ok(()) };
        if let OutputTarget::Rtmp(canonical) = &output {
            assert_canonical(canonical);
            let again: OutputTarget = canonical.parse().expect("the canonical form parses");
            prop_assert_eq!(&again, &output);
        }
    }
}
