//! Typed netstrings, the encoding of mitmproxy's flow dumps: `LEN:DATA` and
//! a type tag (`,` bytes, `;` text, `#` integer, `^` float, `!` boolean,
//! `~` null, `]` list, `}` dict). This module owns the value type, the
//! encoder and a decoder that rejects malformed input instead of panicking.
//!
//! mitmproxy's variant (`mitmproxy/io/tnetstring.py`) adds the `;` tag for
//! text; dumps of Python 2 mitmproxy used `,` for dict keys, so lookups by
//! key accept both.

use std::io::{self, BufRead, Read};

/// Longest length prefix accepted, in digits (mitmproxy's limit too).
const MAX_LENGTH_DIGITS: usize = 12;
/// Deepest nesting accepted; flows nest five levels, this bounds recursion.
const MAX_DEPTH: usize = 64;

/// One tnetstring value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Str(String),
    List(Vec<Value>),
    /// Entries in file order; keys are usually `Str` (`Bytes` in old dumps).
    Dict(Vec<(Value, Value)>),
}

/// Why a tnetstring could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tnetstring at byte {offset}: {reason}")]
pub struct DecodeError {
    /// Offset from the start of the value being decoded.
    pub offset: usize,
    pub reason: String,
}

impl Value {
    /// The entry `key` of a dict (text or byte-string key).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries.iter().find_map(|(k, v)| match k {
                Value::Str(s) if s == key => Some(v),
                Value::Bytes(b) if b == key.as_bytes() => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Text of a `Str`, or of `Bytes` (lossy): mitmproxy moved several
    /// fields between the two over its format versions.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// Bytes of a `Bytes` or `Str`.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Some(*f as i64),
            _ => None,
        }
    }

    /// A number as a float (mitmproxy writes some timestamps as integers).
    pub fn float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A dict from text keys.
    pub fn dict<const N: usize>(entries: [(&str, Value); N]) -> Value {
        Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Str(k.to_owned()), v))
                .collect(),
        )
    }
}

/// Appends the encoding of `value` to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    let frame = |payload: &[u8], tag: u8, out: &mut Vec<u8>| {
        out.extend_from_slice(payload.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(payload);
        out.push(tag);
    };
    match value {
        Value::Null => frame(b"", b'~', out),
        Value::Bool(true) => frame(b"true", b'!', out),
        Value::Bool(false) => frame(b"false", b'!', out),
        Value::Int(i) => frame(i.to_string().as_bytes(), b'#', out),
        // Rust prints the shortest text that parses back to the same float,
        // which Python's float() reads ("inf" and "NaN" included).
        Value::Float(f) => frame(f.to_string().as_bytes(), b'^', out),
        Value::Bytes(b) => frame(b, b',', out),
        Value::Str(s) => frame(s.as_bytes(), b';', out),
        Value::List(items) => {
            let mut payload = Vec::new();
            for item in items {
                encode(item, &mut payload);
            }
            frame(&payload, b']', out)
        }
        Value::Dict(entries) => {
            let mut payload = Vec::new();
            for (k, v) in entries {
                encode(k, &mut payload);
                encode(v, &mut payload);
            }
            frame(&payload, b'}', out)
        }
    }
}

/// Decodes one value from the start of `input`; returns it and the rest.
pub fn decode(input: &[u8]) -> Result<(Value, &[u8]), DecodeError> {
    let (value, used) = decode_at(input, 0, 0)?;
    Ok((value, &input[used..]))
}

/// Decodes the value at `input[0..]`, `base` bytes into the outer value
/// (for error offsets); returns the value and the bytes it used.
fn decode_at(input: &[u8], base: usize, depth: usize) -> Result<(Value, usize), DecodeError> {
    let error = |at: usize, reason: String| DecodeError {
        offset: base + at,
        reason,
    };
    if depth > MAX_DEPTH {
        return Err(error(0, format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let digits = input.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_LENGTH_DIGITS {
        return Err(error(0, "missing or invalid length prefix".into()));
    }
    if input.get(digits) != Some(&b':') {
        return Err(error(digits, "expected ':' after the length".into()));
    }
    let len: usize = std::str::from_utf8(&input[..digits])
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| error(0, "invalid length prefix".into()))?;
    let start = digits + 1;
    let end = start
        .checked_add(len)
        .filter(|end| *end < input.len())
        .ok_or_else(|| error(0, format!("length {len} runs past the end of the data")))?;
    let payload = &input[start..end];
    let value = parse(input[end], payload, base + start, depth)?;
    Ok((value, end + 1))
}

fn parse(tag: u8, payload: &[u8], base: usize, depth: usize) -> Result<Value, DecodeError> {
    let error = |reason: String| DecodeError {
        offset: base,
        reason,
    };
    let text = || std::str::from_utf8(payload).map_err(|e| error(format!("not UTF-8: {e}")));
    Ok(match tag {
        b',' => Value::Bytes(payload.to_vec()),
        b';' => Value::Str(text()?.to_owned()),
        b'#' => Value::Int(text()?.parse().map_err(|_| {
            error(format!(
                "invalid integer {:?}",
                String::from_utf8_lossy(payload)
            ))
        })?),
        b'^' => Value::Float(text()?.parse().map_err(|_| {
            error(format!(
                "invalid float {:?}",
                String::from_utf8_lossy(payload)
            ))
        })?),
        b'!' => match payload {
            b"true" => Value::Bool(true),
            b"false" => Value::Bool(false),
            _ => return Err(error("invalid boolean".into())),
        },
        b'~' if payload.is_empty() => Value::Null,
        b'~' => return Err(error("null with a payload".into())),
        b']' => {
            let mut items = Vec::new();
            let mut at = 0;
            while at < payload.len() {
                let (item, used) = decode_at(&payload[at..], base + at, depth + 1)?;
                items.push(item);
                at += used;
            }
            Value::List(items)
        }
        b'}' => {
            let mut entries = Vec::new();
            let mut at = 0;
            while at < payload.len() {
                let (key, used) = decode_at(&payload[at..], base + at, depth + 1)?;
                at += used;
                if at >= payload.len() {
                    return Err(error("dict key without a value".into()));
                }
                let (value, used) = decode_at(&payload[at..], base + at, depth + 1)?;
                at += used;
                entries.push((key, value));
            }
            Value::Dict(entries)
        }
        other => {
            return Err(DecodeError {
                offset: base + payload.len(),
                reason: format!("unknown type tag {:?}", other as char),
            })
        }
    })
}

/// Reads the next whole value from a stream of concatenated tnetstrings
/// (a mitmproxy dump) without reading past it; `None` at a clean end.
pub fn read_one(input: &mut impl BufRead) -> io::Result<Option<Value>> {
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
    let mut prefix = Vec::new();
    loop {
        let buf = input.fill_buf()?;
        let Some(&byte) = buf.first() else {
            if prefix.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the data ends inside a length prefix",
            ));
        };
        input.consume(1);
        prefix.push(byte);
        if byte == b':' {
            break;
        }
        if !byte.is_ascii_digit() || prefix.len() > MAX_LENGTH_DIGITS {
            return Err(invalid(format!(
                "not a tnetstring: invalid length prefix {:?}",
                String::from_utf8_lossy(&prefix)
            )));
        }
    }
    let len: usize = std::str::from_utf8(&prefix[..prefix.len() - 1])
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| invalid("not a tnetstring: missing length".into()))?;
    // Read payload and tag without trusting the length for an allocation
    // up front: a corrupt prefix must not reserve terabytes.
    let mut whole = prefix;
    let wanted = len as u64 + 1;
    let read = input.take(wanted).read_to_end(&mut whole)?;
    if (read as u64) < wanted {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the data ends inside a value of {len} bytes"),
        ));
    }
    let (value, rest) = decode(&whole).map_err(|e| invalid(e.to_string()))?;
    debug_assert!(rest.is_empty());
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value: Value) {
        let mut out = Vec::new();
        encode(&value, &mut out);
        let (back, rest) = decode(&out).unwrap();
        assert_eq!(back, value, "{}", String::from_utf8_lossy(&out));
        assert!(rest.is_empty());
        let back = read_one(&mut &out[..]).unwrap().unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn every_type_encodes_as_mitmproxy_does_and_round_trips() {
        let cases: [(Value, &[u8]); 9] = [
            (Value::Null, b"0:~"),
            (Value::Bool(true), b"4:true!"),
            (Value::Bool(false), b"5:false!"),
            (Value::Int(-12345), b"6:-12345#"),
            (Value::Float(946681200.5), b"11:946681200.5^"),
            (Value::Bytes(b"\x00\xff".to_vec()), b"2:\x00\xff,"),
            (Value::Str("h\u{e9}".into()), b"3:h\xc3\xa9;"),
            (
                Value::List(vec![Value::Int(12345), Value::Bool(true), Value::Int(0)]),
                b"19:5:12345#4:true!1:0#]",
            ),
            (
                Value::dict([("a", Value::Bytes(b"b".to_vec()))]),
                b"8:1:a;1:b,}",
            ),
        ];
        for (value, encoded) in cases {
            let mut out = Vec::new();
            encode(&value, &mut out);
            assert_eq!(out, encoded, "{value:?}");
            round_trip(value);
        }
    }

    #[test]
    fn nested_values_round_trip_and_keys_may_be_bytes() {
        let value = Value::Dict(vec![
            (
                Value::Str("headers".into()),
                Value::List(vec![Value::List(vec![
                    Value::Bytes(b"host".to_vec()),
                    Value::Bytes(b"example.com".to_vec()),
                ])]),
            ),
            (
                Value::Bytes(b"old".to_vec()),
                Value::dict([("inner", Value::Dict(vec![])), ("f", Value::Float(-0.25))]),
            ),
            (Value::Str("empty".into()), Value::List(vec![])),
        ]);
        round_trip(value.clone());
        assert_eq!(
            value.get("old").and_then(|v| v.get("f")),
            Some(&Value::Float(-0.25))
        );
        assert!(value.get("missing").is_none());
    }

    #[test]
    fn python_float_spellings_parse() {
        for (text, want) in [
            ("1e+20", 1e20),
            ("946681200.0", 946681200.0),
            ("-inf", f64::NEG_INFINITY),
        ] {
            let encoded = format!("{}:{text}^", text.len());
            assert_eq!(decode(encoded.as_bytes()).unwrap().0, Value::Float(want));
        }
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let bad: &[&[u8]] = &[
            b"",
            b":",
            b"5",
            b"x:abc,",
            b"3:ab,",
            b"3:abc",
            b"3:abc?",
            b"2:12!",
            b"1:x~",
            b"2:1x#",
            b"3:1.x^",
            b"2:\xff\xfe;",
            b"4:1:a;}",
            b"6:1:a;1}",
            b"9999999999999:x,",
            b"99999999999999999999:x,",
            b"18446744073709551615:x,",
        ];
        for input in bad {
            assert!(
                decode(input).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(read_one(&mut &input[..]).is_err() || input.is_empty());
        }
        // Nesting beyond the bound is refused, not a stack overflow.
        let mut deep = b"0:]".to_vec();
        for _ in 0..100 {
            deep = [format!("{}:", deep.len()).as_bytes(), &deep, b"]"].concat();
        }
        assert!(decode(&deep).unwrap_err().reason.contains("nested"));
        // Every prefix of a valid value is an error too.
        let mut whole = Vec::new();
        encode(
            &Value::dict([("a", Value::List(vec![Value::Int(1), Value::Null]))]),
            &mut whole,
        );
        for cut in 0..whole.len() {
            assert!(decode(&whole[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_stream_of_values_reads_one_at_a_time() {
        let mut stream = Vec::new();
        encode(&Value::Int(1), &mut stream);
        encode(&Value::Str("two".into()), &mut stream);
        let mut input = &stream[..];
        assert_eq!(read_one(&mut input).unwrap(), Some(Value::Int(1)));
        assert_eq!(
            read_one(&mut input).unwrap(),
            Some(Value::Str("two".into()))
        );
        assert_eq!(read_one(&mut input).unwrap(), None);
        let torn = &stream[..stream.len() - 1];
        let mut input = torn;
        read_one(&mut input).unwrap();
        assert_eq!(
            read_one(&mut input).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
