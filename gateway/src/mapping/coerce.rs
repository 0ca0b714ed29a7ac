//! Type coercion: `as: string | number | integer | boolean | date | datetime | epoch_ms | epoch_s`.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone};
use serde_json::{Number, Value};

#[derive(Clone, Debug, PartialEq)]
pub enum Coerce {
    String,
    Number,
    Integer,
    Boolean,
    Date(DateSpec),
    DateTime(DateSpec),
    EpochMs(DateSpec),
    EpochS(DateSpec),
}

/// How dates are read and written.
#[derive(Clone, Debug, PartialEq)]
pub struct DateSpec {
    pub parse: DateParse,
    /// strftime output format; the default is `%Y-%m-%d` for dates, RFC 3339 for datetimes.
    pub format: Option<String>,
    /// Offset for naive inputs, and the output offset when `explicit_tz` is set.
    pub tz: FixedOffset,
    /// When the mapping names a timezone, inputs with their own offset are converted to it;
    /// otherwise they keep theirs.
    pub explicit_tz: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DateParse {
    /// ISO 8601 / RFC 3339 in its common forms, `YYYY/MM/DD`, `YYYYMMDD`, SAP's
    /// `/Date(ms)/`, and numbers as epoch milliseconds.
    Auto,
    EpochMs,
    EpochS,
    /// A strftime pattern.
    Pattern(String),
}

pub const NAMES: [&str; 8] = ["string", "number", "integer", "boolean", "date", "datetime", "epoch_ms", "epoch_s"];

impl Coerce {
    /// `name` is one of [`NAMES`]; the date options apply to the date kinds only.
    pub fn from_name(name: &str, spec: DateSpec) -> Option<Self> {
        Some(match name {
            "string" => Self::String,
            "number" => Self::Number,
            "integer" => Self::Integer,
            "boolean" => Self::Boolean,
            "date" => Self::Date(spec),
            "datetime" => Self::DateTime(spec),
            "epoch_ms" => Self::EpochMs(spec),
            "epoch_s" => Self::EpochS(spec),
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Date(_) => "date",
            Self::DateTime(_) => "datetime",
            Self::EpochMs(_) => "epoch_ms",
            Self::EpochS(_) => "epoch_s",
        }
    }

    /// Converts `value`. `null` stays `null`: absence is `default`'s and `required`'s business.
    pub fn apply(&self, value: Value) -> Result<Value, String> {
        if value.is_null() {
            return Ok(value);
        }
        match self {
            Self::String => to_string(value),
            Self::Number => to_number(&value, false),
            Self::Integer => to_number(&value, true),
            Self::Boolean => to_bool(&value),
            Self::Date(spec) => {
                let dt = spec.read(&value)?;
                Ok(Value::String(match &spec.format {
                    Some(f) => format_date(&dt, f)?,
                    None => iso_date(dt.date_naive()),
                }))
            }
            Self::DateTime(spec) => {
                let dt = spec.read(&value)?;
                Ok(Value::String(match &spec.format {
                    Some(f) => format_date(&dt, f)?,
                    None => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                }))
            }
            Self::EpochMs(spec) => Ok(Value::from(spec.read(&value)?.timestamp_millis())),
            Self::EpochS(spec) => Ok(Value::from(spec.read(&value)?.timestamp())),
        }
    }
}

/// Writes `dt` with strftime pattern `f`. chrono reports some patterns it parses without
/// complaint as formatting errors (`%#z` is for parsing only), which `to_string` would turn
/// into a panic; here they are a mapping error.
pub fn format_date(dt: &DateTime<FixedOffset>, f: &str) -> Result<String, String> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", dt.format(f)).map_err(|_| format!("cannot write {dt} with the format `{f}`"))?;
    Ok(out)
}

/// `YYYY-MM-DD`, read by hand.
fn plain_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)
}

/// Whether `f` can write a date: what `compile` checks an output `format` with.
pub fn can_format(f: &str) -> bool {
    let sample = DateTime::parse_from_rfc3339("2025-03-18T13:00:00.123+08:00").expect("sample date");
    format_date(&sample, f).is_ok()
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 { format!("{}…", text.chars().take(40).collect::<String>()) } else { text }
}

fn to_string(value: Value) -> Result<Value, String> {
    Ok(Value::String(match value {
        Value::String(s) => s,
        Value::Bool(b) => b.to_string(),
        // 20.0 becomes "20": receivers that take numbers as text rarely want the ".0".
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                format!("{}", f as i64)
            }
            _ => n.to_string(),
        },
        other => return Err(format!("cannot turn {} into a string", kind_of(&other))),
    }))
}

fn to_number(value: &Value, integer: bool) -> Result<Value, String> {
    let target = if integer { "an integer" } else { "a number" };
    let n: Number = match value {
        Value::Number(n) => n.clone(),
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Number::from(i)
            } else if let Some(f) = t.parse::<f64>().ok().filter(|f| f.is_finite()) {
                Number::from_f64(f).ok_or_else(|| format!("cannot coerce {} to {target}", describe(value)))?
            } else {
                return Err(format!("cannot coerce {} to {target}", describe(value)));
            }
        }
        other => {
            return Err(format!("cannot coerce {} ({}) to {target}", describe(other), kind_of(other)));
        }
    };
    if !integer || n.is_i64() || n.is_u64() {
        return Ok(Value::Number(n));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Value::from(f as i64)),
        _ => Err(format!("cannot coerce {} to an integer without losing its fraction", describe(value))),
    }
}

fn to_bool(value: &Value) -> Result<Value, String> {
    let b = match value {
        Value::Bool(b) => *b,
        Value::Number(n) if n.as_f64() == Some(1.0) => true,
        Value::Number(n) if n.as_f64() == Some(0.0) => false,
        Value::String(s) => match s.trim().to_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "on" | "是" => true,
            "false" | "no" | "n" | "0" | "off" | "否" => false,
            _ => return Err(format!("cannot coerce {} to a boolean", describe(value))),
        },
        other => return Err(format!("cannot coerce {} to a boolean", describe(other))),
    };
    Ok(Value::Bool(b))
}

pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a `+08:00` / `-05:30` / `UTC` / `Z` offset.
pub fn parse_offset(text: &str) -> Option<FixedOffset> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    // `+08:00`, `+0800` or `+8`: digits and a colon only, so that neither part has a sign
    // of its own (`+-99999999` overflowed) and `split_at` cannot cut a character in two.
    if !rest.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return None;
    }
    let (h, m) = match rest.split_once(':') {
        Some(hm) => hm,
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

impl DateSpec {
    pub fn utc() -> Self {
        Self {
            parse: DateParse::Auto,
            format: None,
            tz: FixedOffset::east_opt(0).expect("zero offset"),
            explicit_tz: false,
        }
    }

    fn read(&self, value: &Value) -> Result<DateTime<FixedOffset>, String> {
        let dt = self.parse_value(value)?;
        Ok(if self.explicit_tz { dt.with_timezone(&self.tz) } else { dt })
    }

    fn at_epoch(&self, n: i64, millis: bool) -> Result<DateTime<FixedOffset>, String> {
        let utc = if millis { DateTime::from_timestamp_millis(n) } else { DateTime::from_timestamp(n, 0) };
        utc.map(|d| d.with_timezone(&self.tz)).ok_or_else(|| format!("{n} is out of the range of dates"))
    }

    fn naive(&self, n: NaiveDateTime) -> Result<DateTime<FixedOffset>, String> {
        self.tz.from_local_datetime(&n).single().ok_or_else(|| format!("{n} does not exist in {}", self.tz))
    }

    fn parse_value(&self, value: &Value) -> Result<DateTime<FixedOffset>, String> {
        let err = || format!("cannot read {} as a date", describe(value));
        let epoch_arg = |v: &Value| -> Option<i64> {
            match v {
                Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
        };
        match &self.parse {
            DateParse::EpochMs => return self.at_epoch(epoch_arg(value).ok_or_else(err)?, true),
            DateParse::EpochS => return self.at_epoch(epoch_arg(value).ok_or_else(err)?, false),
            DateParse::Pattern(p) => {
                let s = value.as_str().ok_or_else(err)?.trim();
                if let Ok(dt) = DateTime::parse_from_str(s, p) {
                    return Ok(dt);
                }
                if let Ok(n) = NaiveDateTime::parse_from_str(s, p) {
                    return self.naive(n);
                }
                if let Ok(d) = NaiveDate::parse_from_str(s, p) {
                    return self.naive(d.and_hms_opt(0, 0, 0).expect("midnight"));
                }
                return Err(format!("cannot read {} with the format `{p}`", describe(value)));
            }
            DateParse::Auto => {}
        }
        let s = match value {
            Value::Number(_) => return self.at_epoch(epoch_arg(value).ok_or_else(err)?, true),
            Value::String(s) => s.trim(),
            _ => return Err(err()),
        };
        // The common case first, without chrono's pattern parser: YYYY-MM-DD.
        if let Some(d) = plain_date(s) {
            return self.naive(d.and_hms_opt(0, 0, 0).expect("midnight"));
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Ok(dt);
        }
        if let Some(ms) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
            // SAP OData v2: /Date(1744243200000)/ or /Date(1744243200000+0800)/
            let digits = ms.split(['+', '-']).next().unwrap_or(ms);
            let n: i64 = digits.parse().map_err(|_| err())?;
            return self.at_epoch(n, true);
        }
        // Digits only: 13 are epoch milliseconds, 10 are epoch seconds (8 are YYYYMMDD).
        if (s.len() == 10 || s.len() == 13) && s.bytes().all(|b| b.is_ascii_digit()) {
            return self.at_epoch(s.parse().map_err(|_| err())?, s.len() == 13);
        }
        for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
            if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
                return self.naive(n);
            }
        }
        for f in ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"] {
            if let Ok(d) = NaiveDate::parse_from_str(s, f) {
                return self.naive(d.and_hms_opt(0, 0, 0).expect("midnight"));
            }
        }
        Err(err())
    }
}

/// `YYYY-MM-DD`, as chrono's `Display` of a date writes it, without its formatting
/// machinery (2.5k instructions per date); years chrono writes otherwise (before 0 or after
/// 9999: a sign and more digits) are left to chrono.
fn iso_date(d: NaiveDate) -> String {
    use chrono::Datelike;
    let Ok(year) = u16::try_from(d.year()) else { return d.to_string() };
    if year > 9999 {
        return d.to_string();
    }
    let digit = |n: u32| char::from(b'0' + (n % 10) as u8);
    let (y, m, day) = (u32::from(year), d.month(), d.day());
    let mut out = String::with_capacity(10);
    for c in [digit(y / 1000), digit(y / 100), digit(y / 10), digit(y), '-', digit(m / 10), digit(m), '-'] {
        out.push(c);
    }
    out.push(digit(day / 10));
    out.push(digit(day));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(name: &str) -> Coerce {
        Coerce::from_name(name, DateSpec::utc()).unwrap()
    }

    fn cst() -> DateSpec {
        DateSpec { tz: parse_offset("+08:00").unwrap(), explicit_tz: true, ..DateSpec::utc() }
    }

    #[test]
    fn dates_are_written_as_chrono_writes_them() {
        let mut d = NaiveDate::from_ymd_opt(-3, 1, 1).unwrap();
        let mut seen = 0;
        while d < NaiveDate::from_ymd_opt(10_003, 1, 1).unwrap() {
            assert_eq!(iso_date(d), d.to_string());
            d = d + chrono::Days::new(17);
            seen += 1;
        }
        assert!(seen > 200_000, "{seen}");
        for d in [NaiveDate::MIN, NaiveDate::MAX, NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()] {
            assert_eq!(iso_date(d), d.to_string());
        }
    }

    #[test]
    fn strings_and_numbers_convert_both_ways() {
        assert_eq!(c("number").apply(json!("4520.00")).unwrap(), json!(4520.0));
        assert_eq!(c("number").apply(json!(" 20 ")).unwrap(), json!(20));
        assert_eq!(c("string").apply(json!(20)).unwrap(), json!("20"));
        assert_eq!(c("string").apply(json!(20.0)).unwrap(), json!("20"));
        assert_eq!(c("string").apply(json!(96.5)).unwrap(), json!("96.5"));
        assert_eq!(c("string").apply(json!(true)).unwrap(), json!("true"));
        assert!(c("number").apply(json!("abc")).unwrap_err().contains("\"abc\""));
        assert!(c("number").apply(json!({"a": 1})).is_err());
        assert!(c("string").apply(json!([1])).is_err());
    }

    #[test]
    fn integers_refuse_fractions() {
        assert_eq!(c("integer").apply(json!("20")).unwrap(), json!(20));
        assert_eq!(c("integer").apply(json!(20.0)).unwrap(), json!(20));
        assert_eq!(c("integer").apply(json!("96.0")).unwrap(), json!(96));
        assert!(c("integer").apply(json!(96.5)).unwrap_err().contains("fraction"));
    }

    #[test]
    fn booleans_accept_common_spellings() {
        for (input, expect) in [
            (json!("yes"), true),
            (json!("N"), false),
            (json!(1), true),
            (json!("是"), true),
            (json!("否"), false),
            (json!(false), false),
        ] {
            assert_eq!(c("boolean").apply(input.clone()).unwrap(), json!(expect), "{input}");
        }
        assert!(c("boolean").apply(json!("maybe")).is_err());
        assert!(c("boolean").apply(json!(2)).is_err());
    }

    #[test]
    fn null_passes_through() {
        for name in NAMES {
            assert_eq!(c(name).apply(Value::Null).unwrap(), Value::Null, "{name}");
        }
    }

    #[test]
    fn dates_from_many_shapes() {
        let d = c("date");
        assert_eq!(d.apply(json!("2025-03-18")).unwrap(), json!("2025-03-18"));
        assert_eq!(d.apply(json!("2025/03/18")).unwrap(), json!("2025-03-18"));
        assert_eq!(d.apply(json!("20250318")).unwrap(), json!("2025-03-18"));
        assert_eq!(d.apply(json!("2025-03-20 14:32:10")).unwrap(), json!("2025-03-20"));
        assert_eq!(d.apply(json!("2025-03-25T08:00:00+08:00")).unwrap(), json!("2025-03-25"));
        assert_eq!(d.apply(json!("/Date(1744243200000)/")).unwrap(), json!("2025-04-10"));
        assert_eq!(d.apply(json!("1742274000")).unwrap(), json!("2025-03-18"), "10 digits: epoch seconds");
        assert_eq!(d.apply(json!("1742274000000")).unwrap(), json!("2025-03-18"), "13 digits: epoch ms");
        assert!(d.apply(json!("2025-13-45")).is_err());
        assert!(d.apply(json!(true)).is_err());
    }

    #[test]
    fn epoch_milliseconds_become_local_dates_in_the_named_timezone() {
        // DingTalk createTime 1742274000000 = 2025-03-18T05:00:00Z = 13:00 in Beijing.
        let spec = cst();
        assert_eq!(Coerce::Date(spec.clone()).apply(json!(1742274000000_i64)).unwrap(), json!("2025-03-18"));
        assert_eq!(
            Coerce::DateTime(spec.clone()).apply(json!(1742274000000_i64)).unwrap(),
            json!("2025-03-18T13:00:00+08:00")
        );
        // Feishu sends the same as a string.
        assert_eq!(
            Coerce::DateTime(spec).apply(json!("1742281200123")).unwrap(),
            json!("2025-03-18T15:00:00.123+08:00")
        );
    }

    #[test]
    fn datetimes_keep_their_offset_unless_a_timezone_is_named() {
        let v = json!("2025-03-25T08:00:00+08:00");
        assert_eq!(c("datetime").apply(v.clone()).unwrap(), json!("2025-03-25T08:00:00+08:00"));
        let utc = DateSpec { explicit_tz: true, ..DateSpec::utc() };
        assert_eq!(Coerce::DateTime(utc).apply(v.clone()).unwrap(), json!("2025-03-25T00:00:00Z"));
        assert_eq!(c("epoch_ms").apply(v.clone()).unwrap(), json!(1742860800000_i64));
        assert_eq!(c("epoch_s").apply(v).unwrap(), json!(1742860800_i64));
    }

    #[test]
    fn custom_parse_and_format() {
        let spec =
            DateSpec { parse: DateParse::Pattern("%d.%m.%Y %H:%M".into()), format: Some("%Y%m%d%H%M".into()), ..cst() };
        assert_eq!(Coerce::DateTime(spec.clone()).apply(json!("18.03.2025 09:30")).unwrap(), json!("202503180930"));
        assert!(Coerce::DateTime(spec).apply(json!("2025-03-18")).unwrap_err().contains("%d.%m.%Y"));
        let s = DateSpec { parse: DateParse::EpochS, ..DateSpec::utc() };
        assert_eq!(Coerce::Date(s).apply(json!("1742274000")).unwrap(), json!("2025-03-18"));
    }

    #[test]
    fn parse_only_patterns_are_an_error_not_a_panic() {
        // Found by fuzzing (fuzz/ mapping_parts): `%#z` passes StrftimeItems but cannot format.
        let spec = DateSpec { format: Some("%#z".into()), ..DateSpec::utc() };
        assert!(Coerce::Date(spec.clone()).apply(json!("2025-03-18")).unwrap_err().contains("%#z"));
        assert!(Coerce::DateTime(spec).apply(json!("2025-03-18")).is_err());
        assert!(!can_format("%#z"));
        assert!(can_format("%Y-%m-%d %H:%M:%S%.3f %:z"));
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+08:00").unwrap().local_minus_utc(), 8 * 3600);
        assert_eq!(parse_offset("-05:30").unwrap().local_minus_utc(), -(5 * 3600 + 1800));
        assert_eq!(parse_offset("UTC").unwrap().local_minus_utc(), 0);
        assert_eq!(parse_offset("+0800").unwrap().local_minus_utc(), 8 * 3600);
        assert_eq!(parse_offset("+8").unwrap().local_minus_utc(), 8 * 3600);
        assert!(parse_offset("Asia/Shanghai").is_none());
        assert!(parse_offset("+25:00").is_none());
    }

    #[test]
    fn malformed_offsets_are_refused_not_a_panic() {
        // Found by fuzzing (fuzz/, target mapping_parts): a signed hour overflowed `h * 3600`,
        // and a 4-byte rest with a multi-byte character panicked in `split_at`.
        assert!(parse_offset("--0404525205").is_none());
        assert!(parse_offset("+-5").is_none());
        assert!(parse_offset("+08:-30").is_none());
        assert!(parse_offset("+1é1").is_none());
        assert!(parse_offset("+").is_none());
        assert_eq!(parse_offset("-0530").unwrap().local_minus_utc(), -(5 * 3600 + 1800));
    }
}
