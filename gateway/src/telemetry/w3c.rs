//! W3C Trace Context, read to the letter: `traceparent` as Level 1 defines it (with the
//! random-trace-id flag of Level 2), `tracestate` as a list of vendor entries.
//!
//! OpenTelemetry's own propagator is lenient where the specification is not (a `00`
//! traceparent with trailing text, a second `traceparent` header ignored, only the first
//! `tracestate` header read, a whole `tracestate` lost to one bad entry) and drops the
//! random flag. Trace context crosses a trust boundary at Qiao's edge, so it is parsed here,
//! and anything that is not exactly a traceparent starts a new trace.

use opentelemetry::trace::{SpanId, TraceId};

/// The `sampled` flag: the caller may have recorded its span.
pub const SAMPLED: u8 = 0x01;
/// The `random` flag (Level 2): at least the right-most 7 bytes of the trace id are random.
pub const RANDOM: u8 = 0x02;

/// At most this many entries are kept from `tracestate`.
pub const MAX_MEMBERS: usize = 32;

/// A valid incoming `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// Only the flags this version knows (`sampled`, `random`); others are zeroed, as the
    /// specification asks of a vendor that passes the header on.
    pub flags: u8,
}

/// The caller's trace, from every `traceparent` header the request had: exactly one, and
/// valid, or none (a request with two is as good as one with none: the trace restarts).
pub fn traceparent<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Parent> {
    let mut values = values.into_iter();
    let (Some(only), None) = (values.next(), values.next()) else { return None };
    parse_traceparent(std::str::from_utf8(only).ok()?)
}

/// One `traceparent` value: `version-traceid-parentid-flags`, lowercase hex, version `00`
/// exactly 55 characters; a later version at least that, its first four fields read as
/// version `00`'s (a fifth, if any, after a `-`); version `ff`, an all-zero id, anything
/// else: `None`. Spaces and tabs around the value are allowed.
pub fn parse_traceparent(value: &str) -> Option<Parent> {
    let v = value.trim_matches([' ', '\t']).as_bytes();
    if v.len() < 55 {
        return None;
    }
    let version = hex_u8(&v[0..2])?;
    if version == 0xff || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    match (version, v.get(55)) {
        (0, None) => {}
        (0, Some(_)) => return None,
        (_, None | Some(b'-')) => {}
        (_, Some(_)) => return None,
    }
    let trace_id = u128::from_str_radix(lower_hex(&v[3..35])?, 16).ok()?;
    let span_id = u64::from_str_radix(lower_hex(&v[36..52])?, 16).ok()?;
    let flags = hex_u8(&v[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(Parent {
        trace_id: TraceId::from_bytes(trace_id.to_be_bytes()),
        span_id: SpanId::from_bytes(span_id.to_be_bytes()),
        flags: flags & (SAMPLED | RANDOM),
    })
}

/// `bytes` if it is lowercase hex only.
fn lower_hex(bytes: &[u8]) -> Option<&str> {
    bytes.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)).then(|| std::str::from_utf8(bytes).ok())?
}

fn hex_u8(two: &[u8]) -> Option<u8> {
    u8::from_str_radix(lower_hex(two)?, 16).ok()
}

/// The entries of every `tracestate` header, combined in order (as one comma-separated
/// list, RFC 9110 section 5.3): empty entries skipped, entries with an invalid key or value
/// dropped, a key seen before dropped (the left-most entry is a vendor's latest position),
/// and at most [`MAX_MEMBERS`] kept. Read only when the `traceparent` was valid.
pub fn tracestate<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = Vec::new();
    for member in values.into_iter().flat_map(|v| v.split(',')) {
        if kept.len() == MAX_MEMBERS {
            break;
        }
        let member = member.trim_matches([' ', '\t']);
        let Some((key, value)) = member.split_once('=') else { continue };
        if !valid_key(key) || !valid_value(value) || kept.iter().any(|(k, _)| k == key) {
            continue;
        }
        kept.push((key.to_string(), value.to_string()));
    }
    kept
}

/// `simple-key = lcalpha 0*255( lcalpha / DIGIT / "_" / "-" / "*" / "/" )`, or
/// `tenant-id "@" system-id` with `tenant-id = ( lcalpha / DIGIT ) 0*240( ... )` and
/// `system-id = lcalpha 0*13( ... )`.
pub fn valid_key(key: &str) -> bool {
    let k = key.as_bytes();
    let tail = |s: &[u8]| s.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b));
    match key.split_once('@') {
        None => (1..=256).contains(&k.len()) && k[0].is_ascii_lowercase() && tail(&k[1..]),
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && tail(&t[1..])
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && tail(&s[1..])
        }
    }
}

/// `value = 0*255(chr) nblk-chr`: printable ASCII but `,` and `=`, up to 256 characters,
/// not ending in a space.
pub fn valid_value(value: &str) -> bool {
    let v = value.as_bytes();
    (1..=256).contains(&v.len())
        && v.iter().all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && v[v.len() - 1] != b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn tp(s: &str) -> Option<Parent> {
        parse_traceparent(s)
    }

    #[test]
    fn a_valid_traceparent_keeps_ids_and_known_flags() {
        let p = tp(&format!("00-{ID}-{SPAN}-01")).unwrap();
        assert_eq!(p.trace_id.to_string(), ID);
        assert_eq!(p.span_id.to_string(), SPAN);
        assert_eq!(p.flags, SAMPLED);
        assert_eq!(tp(&format!("00-{ID}-{SPAN}-03")).unwrap().flags, SAMPLED | RANDOM);
        assert_eq!(tp(&format!("00-{ID}-{SPAN}-02")).unwrap().flags, RANDOM);
        assert_eq!(tp(&format!("00-{ID}-{SPAN}-ff")).unwrap().flags, SAMPLED | RANDOM, "unknown flags zeroed");
        assert!(tp(&format!(" \t00-{ID}-{SPAN}-00\t ")).is_some(), "spaces and tabs around it");
    }

    #[test]
    fn a_malformed_traceparent_is_none() {
        for bad in [
            format!("00-{ID}-{SPAN}-01-"),
            format!("00-{ID}-{SPAN}-01."),
            format!("00-{ID}-{SPAN}-01-what-the-future-will-be-like"),
            format!("ff-{ID}-{SPAN}-01"),
            format!("0-{ID}-{SPAN}-01"),
            format!("000-{ID}-{SPAN}-01"),
            format!(".0-{ID}-{SPAN}-01"),
            format!("0A-{ID}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", ID.to_uppercase()),
            format!("00-{ID}-{}-01", SPAN.to_uppercase()),
            format!("00-{ID}-{SPAN}-0A"),
            format!("00-{ID}0-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", &ID[1..]),
            format!("00-{ID}-{SPAN}0-01"),
            format!("00-{ID}-{}-01", &SPAN[1..]),
            format!("00-{ID}-{SPAN}-001"),
            format!("00-{ID}-{SPAN}-1"),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{ID}-{}-01", "0".repeat(16)),
            format!("00-{}.-{SPAN}-01", &ID[1..]),
            format!("00_{ID}-{SPAN}-01"),
            format!("00-{ID}-{SPAN}"),
            String::new(),
        ] {
            assert_eq!(tp(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_far_as_it_is_known() {
        assert_eq!(tp(&format!("cc-{ID}-{SPAN}-01")).unwrap().trace_id.to_string(), ID);
        assert!(tp(&format!("cc-{ID}-{SPAN}-01-what-the-future-will-be-like")).is_some());
        assert!(tp(&format!("cc-{ID}-{SPAN}-01.what-the-future-will-be-like")).is_none());
    }

    #[test]
    fn two_traceparent_headers_are_none() {
        let one = format!("00-{ID}-{SPAN}-01");
        assert!(traceparent([one.as_bytes()]).is_some());
        assert!(traceparent([one.as_bytes(), one.as_bytes()]).is_none());
        assert!(traceparent(std::iter::empty()).is_none());
        assert!(traceparent([&b"00-\xff"[..]]).is_none());
    }

    #[test]
    fn tracestate_headers_are_combined_and_bad_entries_dropped() {
        let kept = |values: &[&str]| {
            tracestate(values.iter().copied()).into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()
        };
        assert_eq!(kept(&["foo=1,bar=2", "rojo=1,congo=2", "baz=3"]), ["foo=1", "bar=2", "rojo=1", "congo=2", "baz=3"]);
        assert_eq!(kept(&["foo=1 \t , \t bar=2,,", " ", ""]), ["foo=1", "bar=2"], "empty entries, OWS");
        assert_eq!(
            kept(&["FOO=1,foo.bar=2,foo =3,@x=4,x@=5,a@b@c=6,ok=7,k=v,al,k2=a=b,k3= lead"]),
            ["ok=7", "k=v", "k3= lead"],
            "invalid keys and values dropped, the others kept"
        );
        assert_eq!(kept(&["foo=1", "foo=2"]), ["foo=1"], "a repeated key: the first (latest) wins");
        assert_eq!(kept(&["t0-_*/@s1-_*/=x"]), ["t0-_*/@s1-_*/=x"], "multi-tenant keys");
        assert_eq!(kept(&["1tenant@system=x", "1simple=y"]), ["1tenant@system=x"]);
        let many: Vec<String> = (0..40).map(|i| format!("k{i}={i}")).collect();
        let got = kept(&[&many.join(",")]);
        assert_eq!(got.len(), MAX_MEMBERS);
        assert_eq!(got[31], "k31=31");
    }

    #[test]
    fn keys_and_values_follow_the_grammar() {
        assert!(valid_key(&format!("a{}", "b".repeat(255))));
        assert!(!valid_key(&format!("a{}", "b".repeat(256))));
        assert!(valid_key(&format!("{}@a{}", "t".repeat(241), "s".repeat(13))));
        assert!(!valid_key(&format!("{}@a{}", "t".repeat(242), "s".repeat(13))));
        assert!(!valid_key(&format!("t@a{}", "s".repeat(14))));
        assert!(!valid_key("t@1s"));
        assert!(valid_value(&"x".repeat(256)));
        assert!(!valid_value(&"x".repeat(257)));
        assert!(!valid_value("a\tb"));
        assert!(!valid_value("é"));
        assert!(!valid_value("trailing "));
        let all: String = (0x20u8..=0x7e).filter(|b| *b != b',' && *b != b'=').map(char::from).collect();
        assert!(valid_value(&all));
    }
}
