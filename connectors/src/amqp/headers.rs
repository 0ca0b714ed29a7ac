//! Reading AMQP headers as text, whatever type the sender used.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// A header value as text. Senders put strings in headers as long strings, short strings
/// or raw byte arrays (some clients, e.g. for `traceparent`), and numbers as numbers: all of
/// them read the same here.
pub fn header_str(table: Option<&FieldTable>, name: &str) -> Option<String> {
    value_str(table?.inner().get(name)?)
}

fn value_str(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        _ => return None,
    })
}

/// Every header that reads as text, names lowercased.
pub fn string_headers(table: Option<&FieldTable>) -> Vec<(String, String)> {
    let Some(table) = table else { return Vec::new() };
    table.inner().iter().filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), value_str(v)?))).collect()
}

/// Writing text and numbers into a [`FieldTable`] without spelling out the AMQP types.
pub trait FieldTableExt {
    fn put_str(&mut self, name: &str, value: &str);
    fn put_int(&mut self, name: &str, value: i64);
}

impl FieldTableExt for FieldTable {
    fn put_str(&mut self, name: &str, value: &str) {
        self.insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())));
    }

    fn put_int(&mut self, name: &str, value: i64) {
        self.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_bytes_and_numbers_read_as_text() {
        let mut t = FieldTable::default();
        t.put_str("x-qiao-route", "mes-completion");
        t.insert("traceparent".into(), AMQPValue::ByteArray(b"00-abc-def-01".to_vec().into()));
        t.insert("short".into(), AMQPValue::ShortString("s".into()));
        t.put_int("x-qiao-attempts", 3);
        assert_eq!(header_str(Some(&t), "x-qiao-route").as_deref(), Some("mes-completion"));
        assert_eq!(header_str(Some(&t), "traceparent").as_deref(), Some("00-abc-def-01"));
        assert_eq!(header_str(Some(&t), "short").as_deref(), Some("s"));
        assert_eq!(header_str(Some(&t), "x-qiao-attempts").as_deref(), Some("3"));
        assert_eq!(header_str(Some(&t), "missing"), None);
        assert_eq!(header_str(None, "x"), None);
        assert_eq!(string_headers(Some(&t)).len(), 4);
    }
}
