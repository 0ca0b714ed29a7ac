//! The mapping's parsers and converters on their own: source paths, templates, UTC
//! offsets and type coercions (with fuzzed date patterns and time zones).
//!
//! Input layout: the first byte picks the part; the text up to the next NUL byte is the
//! path, template or offset; the rest drives `arbitrary` for values and date specs.

#![no_main]

use arbitrary::Unstructured;
use chrono::FixedOffset;
use libfuzzer_sys::fuzz_target;
use qiao::mapping::coerce::{self, DateParse, DateSpec};
use qiao::mapping::{Coerce, Root, Scope, SourcePath, Template};
use serde_json::Value;

const ROOTS: [Root; 5] = [Root::Current, Root::Document, Root::Params, Root::Headers, Root::Meta];

/// A strftime pattern is accepted by `compile` only when chrono finds no error in it;
/// the fuzzer must not build specs the config would refuse.
fn valid_pattern(p: &str) -> bool {
    !chrono::format::StrftimeItems::new(p).any(|i| matches!(i, chrono::format::Item::Error))
}

fn pattern(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    const PATTERNS: &[&str] = &[
        "%Y-%m-%d",
        "%Y-%m-%d %H:%M:%S",
        "%d.%m.%Y %H:%M",
        "%Y%m%d%H%M",
        "%s",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%+",
        "%c",
        "%G-W%V-%u",
        "%C%y",
        "%j",
        "%.3f",
        "%Z",
        "%z",
        "%::z",
        "%#z",
        "%e %b %Y",
        "%A %B",
        "%P %I",
        "%t%n%%",
    ];
    Ok(if u.ratio(1u8, 2u8)? { (*u.choose(PATTERNS)?).to_string() } else { u.arbitrary()? })
}

fn spec(u: &mut Unstructured<'_>, text: &str) -> arbitrary::Result<Option<DateSpec>> {
    let mut spec = DateSpec::utc();
    spec.parse = match u.int_in_range(0..=3u8)? {
        0 => DateParse::Auto,
        1 => DateParse::EpochMs,
        2 => DateParse::EpochS,
        _ => DateParse::Pattern(pattern(u)?),
    };
    if u.arbitrary()? {
        spec.format = Some(pattern(u)?);
    }
    // The time zone: the NUL-terminated text through parse_offset, or any valid offset.
    match u.int_in_range(0..=2u8)? {
        0 => {}
        1 => {
            let Some(tz) = coerce::parse_offset(text) else { return Ok(None) };
            spec.tz = tz;
            spec.explicit_tz = true;
        }
        _ => {
            // Whole minutes, like every offset parse_offset returns.
            let minutes = u.int_in_range(-1439..=1439)?;
            spec.tz = FixedOffset::east_opt(minutes * 60).expect("in range");
            spec.explicit_tz = u.arbitrary()?;
        }
    }
    for p in [
        Some(&spec.format),
        Some(&Some(match &spec.parse {
            DateParse::Pattern(p) => p.clone(),
            _ => String::new(),
        })),
    ]
    .into_iter()
    .flatten()
    .flatten()
    {
        if !valid_pattern(p) {
            return Ok(None);
        }
    }
    Ok(Some(spec))
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let (text, tail) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let mut u = Unstructured::new(tail);
    let doc = qiao_fuzz::value(&mut u, 4).unwrap_or(Value::Null);
    let vars = qiao_fuzz::vars(&mut u).unwrap_or_else(|_| qiao_fuzz::default_vars());
    let root = ROOTS[(which as usize / 4) % ROOTS.len()];
    if std::env::var_os("QIAO_FUZZ_DEBUG").is_some() {
        eprintln!("part {} text {text:?} root {root:?} doc {doc} vars {vars}", which % 4);
    }
    match which % 4 {
        0 => {
            if let Ok(path) = SourcePath::parse_with_bare_root(text, root) {
                let _ = path.to_string();
                let current = doc.get(0).or_else(|| doc.as_object().and_then(|m| m.values().next())).unwrap_or(&doc);
                let _ = path.resolve(&Scope { current, document: &doc, vars: &vars });
                let _ = path.resolve(&Scope { current: &doc, document: &doc, vars: &Value::Null });
            }
        }
        1 => {
            if let Ok(t) = Template::parse(text, root) {
                let _ = t.is_literal();
                for p in t.paths() {
                    let _ = p.to_string();
                }
                let _ = t.render(&Scope { current: &doc, document: &doc, vars: &vars });
            }
        }
        2 => {
            let _ = coerce::parse_offset(text);
        }
        _ => {
            let Ok(name) = u.choose(&coerce::NAMES) else { return };
            let Ok(Some(spec)) = spec(&mut u, text) else { return };
            let c = Coerce::from_name(name, spec).expect("a known name");
            let _ = c.name();
            // The value: the text itself half of the time (dates are mostly strings).
            let value = if which & 0x80 != 0 { Value::String(text.to_string()) } else { doc };
            if std::env::var_os("QIAO_FUZZ_DEBUG").is_some() {
                eprintln!("coerce {c:?} of {value}");
            }
            if let Ok(out) = c.apply(value) {
                qiao_fuzz::serialize(&out);
            }
        }
    }
});
