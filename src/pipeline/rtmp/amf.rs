//! AMF0, the encoding of RTMP's commands: what a publisher sends (`connect`, `createStream`, `publish` …) and
//! a reader for the server's answers, which are hostile input like anything else from the network.

use std::fmt::Write as _;

/// The deepest nesting of objects and arrays read; answers to a publisher nest one or two levels.
const MAX_DEPTH: usize = 8;
/// The most values read from one message, all levels together.
const MAX_VALUES: usize = 1024;

/// One AMF0 value as read from the server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    /// An object or an ECMA array: its properties in order.
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    StrictArray(Vec<Value>),
    Date(f64),
}

impl Value {
    /// The property `name` of an object.
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(properties) => properties.iter().find(|(key, _)| key == name).map(|(_, value)| value),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub(crate) fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AmfError {
    #[error("AMF0 value cut short")]
    Truncated,
    #[error("AMF0 type {0} is not supported")]
    UnknownType(u8),
    #[error("AMF0 values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_VALUES} AMF0 values in one message")]
    TooMany,
}

/// Writes `number`.
pub(crate) fn put_number(out: &mut Vec<u8>, number: f64) {
    out.push(0x00);
    out.extend_from_slice(&number.to_be_bytes());
}

/// Writes `text` (at most 65 535 bytes; longer text is cut, which no command of a publisher needs).
pub(crate) fn put_string(out: &mut Vec<u8>, text: &str) {
    out.push(0x02);
    put_utf8(out, text);
}

/// Writes null.
pub(crate) fn put_null(out: &mut Vec<u8>) {
    out.push(0x05);
}

/// Writes an object whose properties are all strings.
pub(crate) fn put_string_object(out: &mut Vec<u8>, properties: &[(&str, &str)]) {
    out.push(0x03);
    for (key, value) in properties {
        put_utf8(out, key);
        put_string(out, value);
    }
    out.extend_from_slice(&[0, 0, 0x09]);
}

fn put_utf8(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// Every value of a message's payload, in order.
pub(crate) fn read_all(mut bytes: &[u8]) -> Result<Vec<Value>, AmfError> {
    let mut values = Vec::new();
    let mut budget = MAX_VALUES;
    while !bytes.is_empty() {
        values.push(read_value(&mut bytes, 0, &mut budget)?);
    }
    Ok(values)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], AmfError> {
    if bytes.len() < n {
        return Err(AmfError::Truncated);
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn read_u16(bytes: &mut &[u8]) -> Result<usize, AmfError> {
    let b = take(bytes, 2)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn read_u32(bytes: &mut &[u8]) -> Result<usize, AmfError> {
    let b = take(bytes, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn read_f64(bytes: &mut &[u8]) -> Result<f64, AmfError> {
    let b = take(bytes, 8)?;
    Ok(f64::from_be_bytes(b.try_into().expect("8 bytes")))
}

fn read_text(bytes: &mut &[u8], len: usize) -> Result<String, AmfError> {
    Ok(String::from_utf8_lossy(take(bytes, len)?).into_owned())
}

fn read_value(bytes: &mut &[u8], depth: usize, budget: &mut usize) -> Result<Value, AmfError> {
    *budget = budget.checked_sub(1).ok_or(AmfError::TooMany)?;
    let marker = take(bytes, 1)?[0];
    Ok(match marker {
        0x00 => Value::Number(read_f64(bytes)?),
        0x01 => Value::Boolean(take(bytes, 1)?[0] != 0),
        0x02 => {
            let len = read_u16(bytes)?;
            Value::String(read_text(bytes, len)?)
        }
        0x03 => Value::Object(read_properties(bytes, depth, budget)?),
        0x05 => Value::Null,
        0x06 => Value::Undefined,
        0x08 => {
            // An ECMA array: a count (which writers do not always keep to), then properties as an object's.
            read_u32(bytes)?;
            Value::Object(read_properties(bytes, depth, budget)?)
        }
        0x0A => {
            if depth >= MAX_DEPTH {
                return Err(AmfError::TooDeep);
            }
            let count = read_u32(bytes)?;
            // Each value takes at least one byte: a count beyond what is left is a lie.
            if count > bytes.len() {
                return Err(AmfError::Truncated);
            }
            let mut items = Vec::with_capacity(count.min(*budget));
            for _ in 0..count {
                items.push(read_value(bytes, depth + 1, budget)?);
            }
            Value::StrictArray(items)
        }
        0x0B => {
            let millis = read_f64(bytes)?;
            take(bytes, 2)?; // time zone, unused by the format's own definition
            Value::Date(millis)
        }
        0x0C => {
            let len = read_u32(bytes)?;
            Value::String(read_text(bytes, len)?)
        }
        other => return Err(AmfError::UnknownType(other)),
    })
}

fn read_properties(bytes: &mut &[u8], depth: usize, budget: &mut usize) -> Result<Vec<(String, Value)>, AmfError> {
    if depth >= MAX_DEPTH {
        return Err(AmfError::TooDeep);
    }
    let mut properties = Vec::new();
    loop {
        let len = read_u16(bytes)?;
        if len == 0 && bytes.first() == Some(&0x09) {
            take(bytes, 1)?;
            return Ok(properties);
        }
        let key = read_text(bytes, len)?;
        properties.push((key, read_value(bytes, depth + 1, budget)?));
    }
}

/// A short account of `values` for an error message: strings and numbers, objects' `code` and
/// `description`, at most 200 characters.
pub(crate) fn describe(values: &[Value]) -> String {
    let mut text = String::new();
    for value in values {
        let part = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Object(_) => [value.get("code"), value.get("description")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(": "),
            _ => continue,
        };
        if !part.is_empty() {
            let _ = write!(text, "{}{part}", if text.is_empty() { "" } else { " " });
        }
    }
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let mut out = Vec::new();
        put_string(&mut out, "connect");
        put_number(&mut out, 1.0);
        put_string_object(&mut out, &[("app", "live"), ("type", "nonprivate")]);
        put_null(&mut out);
        let values = read_all(&out).unwrap();
        assert_eq!(values[0], Value::String("connect".into()));
        assert_eq!(values[1], Value::Number(1.0));
        assert_eq!(values[2].get("app").and_then(Value::as_str), Some("live"));
        assert_eq!(values[2].get("type").and_then(Value::as_str), Some("nonprivate"));
        assert_eq!(values[3], Value::Null);
    }

    #[test]
    fn an_answer_as_nginx_rtmp_sends_it_is_read_and_described() {
        // onStatus(0, null, {level: "error", code: "NetStream.Publish.BadName", description: "Already publishing"})
        let mut out = Vec::new();
        put_string(&mut out, "onStatus");
        put_number(&mut out, 0.0);
        put_null(&mut out);
        put_string_object(
            &mut out,
            &[("level", "error"), ("code", "NetStream.Publish.BadName"), ("description", "Already publishing")],
        );
        let values = read_all(&out).unwrap();
        assert_eq!(values[3].get("level").and_then(Value::as_str), Some("error"));
        assert_eq!(describe(&values), "onStatus 0 NetStream.Publish.BadName: Already publishing");
    }

    #[test]
    fn hostile_input_is_refused_not_followed() {
        // Objects nested past the limit.
        let deep: Vec<u8> = std::iter::repeat_n([0x03, 0x00, 0x01, b'a'], 20).flatten().collect();
        assert_eq!(read_all(&deep), Err(AmfError::TooDeep));
        // A strict array claiming four billion items in a few bytes.
        assert_eq!(read_all(&[0x0A, 0xff, 0xff, 0xff, 0xff, 0x05]), Err(AmfError::Truncated));
        // A string longer than the message.
        assert_eq!(read_all(&[0x02, 0x00, 0x10, b'a']), Err(AmfError::Truncated));
        assert_eq!(read_all(&[0x11]), Err(AmfError::UnknownType(0x11)));
    }

    proptest! {
        #[test]
        fn any_bytes_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_all(&bytes);
        }

        #[test]
        fn any_string_written_reads_back(text in ".{0,300}") {
            let mut out = Vec::new();
            put_string(&mut out, &text);
            prop_assert_eq!(read_all(&out).unwrap(), vec![Value::String(text)]);
        }
    }
}
