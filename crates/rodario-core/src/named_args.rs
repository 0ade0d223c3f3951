//! Arguments by parameter name: a call's `kwargs` map appended to its positional `args`.
//!
//! Both are MessagePack, and the merge splices their encoded values without decoding them
//! (a value is only measured, never built), so a hostile map costs its own bytes and no
//! more: the walk is iterative (no recursion to exhaust) and allocates nothing per value.

use crate::error::{quote_name, RemoteError, RemoteErrorKind};

/// Appends the values of `kwargs` (a MessagePack map from parameter name to value) to the
/// positional `args` (a MessagePack array), in the order of `params` (name, type), and
/// returns the encoded argument tuple.
///
/// A parameter neither argument list gives is `nil` when its type is an `Option` (what a
/// Python caller omitting an optional argument means), and an error otherwise.
pub(crate) fn merge_named(
    args: &[u8],
    kwargs: &[u8],
    params: &[(&'static str, &'static str)],
) -> Result<Vec<u8>, RemoteError> {
    // An empty tuple is encoded as `nil`.
    let (positional, body) = match args {
        [NIL] => (0, &args[1..]),
        _ => container_header(args, ContainerKind::Array)
            .ok_or_else(|| bad("the positional arguments are not a MessagePack array"))?,
    };
    if skip_values(body, positional as u64) != Some(body.len()) {
        return Err(bad("the positional arguments are malformed"));
    }
    let positional = positional as usize;
    if positional > params.len() {
        return Err(bad(format!(
            "takes {} arguments, {positional} were given",
            params.len()
        )));
    }
    let named = named_values(kwargs)?;
    let mut values: Vec<Option<&[u8]>> = vec![None; params.len() - positional];
    for (name, value) in named {
        let Some(index) = params.iter().position(|(param, _)| *param == name) else {
            return Err(bad(format!("no parameter named {}", quote_name(name))));
        };
        if index < positional {
            return Err(bad(format!(
                "argument {} was given by position and by name",
                quote_name(name)
            )));
        }
        values[index - positional] = Some(value);
    }
    let mut merged = Vec::with_capacity(args.len() + kwargs.len());
    write_array_header(&mut merged, params.len());
    merged.extend_from_slice(body);
    for (value, (name, type_name)) in values.into_iter().zip(&params[positional..]) {
        match value {
            Some(value) => merged.extend_from_slice(value),
            None if type_name.trim_start().starts_with("Option") => merged.push(NIL),
            None => return Err(bad(format!("missing argument {}", quote_name(name)))),
        }
    }
    Ok(merged)
}

/// Whether a `kwargs` map names any argument (an empty map, which a caller that always sends
/// one does, names none).
pub(crate) fn names_arguments(kwargs: &[u8]) -> bool {
    container_header(kwargs, ContainerKind::Map).is_none_or(|(count, _)| count > 0)
}

fn bad(message: impl Into<String>) -> RemoteError {
    RemoteError::new(RemoteErrorKind::BadArguments, message)
}

/// The (name, encoded value) pairs of a MessagePack map with string keys.
fn named_values(kwargs: &[u8]) -> Result<Vec<(&str, &[u8])>, RemoteError> {
    let (count, mut rest) = container_header(kwargs, ContainerKind::Map)
        .ok_or_else(|| bad("the named arguments are not a MessagePack map"))?;
    let malformed = || bad("the named arguments are malformed");
    let mut pairs = Vec::new();
    for _ in 0..count {
        let (name, after_name) = read_str(rest).ok_or_else(malformed)?;
        let size = skip_values(after_name, 1).ok_or_else(malformed)?;
        pairs.push((name, &after_name[..size]));
        rest = &after_name[size..];
    }
    if !rest.is_empty() {
        return Err(malformed());
    }
    Ok(pairs)
}

const NIL: u8 = 0xc0;

#[derive(Clone, Copy, PartialEq)]
enum ContainerKind {
    Array,
    Map,
}

/// The element count of the array or map at the start of `bytes`, and what follows its
/// header.
fn container_header(bytes: &[u8], kind: ContainerKind) -> Option<(u32, &[u8])> {
    let (&marker, rest) = bytes.split_first()?;
    let (fixed, wide16, wide32) = match kind {
        ContainerKind::Array => (0x90..=0x9f, 0xdc, 0xdd),
        ContainerKind::Map => (0x80..=0x8f, 0xde, 0xdf),
    };
    match marker {
        m if fixed.contains(&m) => Some((u32::from(m & 0x0f), rest)),
        m if m == wide16 => {
            let (len, rest) = read_be(rest, 2)?;
            Some((len as u32, rest))
        }
        m if m == wide32 => {
            let (len, rest) = read_be(rest, 4)?;
            Some((len as u32, rest))
        }
        _ => None,
    }
}

fn write_array_header(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xdc);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// The string at the start of `bytes`, and what follows it.
fn read_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (&marker, rest) = bytes.split_first()?;
    let (len, rest) = match marker {
        0xa0..=0xbf => (u64::from(marker & 0x1f), rest),
        0xd9 => read_be(rest, 1)?,
        0xda => read_be(rest, 2)?,
        0xdb => read_be(rest, 4)?,
        _ => return None,
    };
    let len = usize::try_from(len).ok()?;
    let text = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((text, &rest[len..]))
}

/// A big-endian unsigned integer of `width` bytes at the start of `bytes`.
fn read_be(bytes: &[u8], width: usize) -> Option<(u64, &[u8])> {
    let raw = bytes.get(..width)?;
    let value = raw.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Some((value, &bytes[width..]))
}

/// The byte length of the `count` MessagePack values at the start of `bytes`, or `None`
/// when they are truncated or malformed.
fn skip_values(bytes: &[u8], count: u64) -> Option<usize> {
    let mut at = 0usize;
    let mut remaining = count;
    while remaining > 0 {
        // Every value takes at least one byte: a count beyond what is left is a lie.
        if remaining > (bytes.len() - at) as u64 {
            return None;
        }
        remaining -= 1;
        let marker = bytes[at];
        at += 1;
        let rest = &bytes[at..];
        let (payload, children) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => prefixed(rest, 1, 0)?,
            0xc5 | 0xda => prefixed(rest, 2, 0)?,
            0xc6 | 0xdb => prefixed(rest, 4, 0)?,
            0xc7 => prefixed(rest, 1, 1)?,
            0xc8 => prefixed(rest, 2, 1)?,
            0xc9 => prefixed(rest, 4, 1)?,
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, read_be(rest, 2)?.0),
            0xdd => (4, read_be(rest, 4)?.0),
            0xde => (2, 2 * read_be(rest, 2)?.0),
            0xdf => (4, 2 * read_be(rest, 4)?.0),
            // 0xc1 is never used.
            _ => return None,
        };
        let payload = usize::try_from(payload).ok()?;
        if payload > bytes.len() - at {
            return None;
        }
        at += payload;
        remaining = remaining.checked_add(children)?;
    }
    Some(at)
}

/// The header and data size of a length-prefixed value (`width` length bytes, then `extra`
/// type bytes for an extension), as (bytes after the marker, children).
fn prefixed(rest: &[u8], width: usize, extra: u64) -> Option<(u64, u64)> {
    let (len, _) = read_be(rest, width)?;
    Some((width as u64 + extra + len, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_value, encode_value};
    use std::collections::BTreeMap;

    const PARAMS: &[(&str, &str)] = &[
        ("name", "String"),
        ("times", "u32"),
        ("note", "Option<String>"),
    ];

    fn kwargs(pairs: &[(&str, rmp_like::V)]) -> Vec<u8> {
        let map: BTreeMap<&str, &rmp_like::V> = pairs.iter().map(|(k, v)| (*k, v)).collect();
        encode_value(&map, "kwargs").unwrap()
    }

    /// Values of mixed types for the maps under test.
    mod rmp_like {
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        pub enum V {
            Text(&'static str),
            Number(u32),
            List(Vec<u32>),
        }
    }
    use rmp_like::V;

    #[test]
    fn named_arguments_follow_the_positional_ones_in_parameter_order() {
        let args = encode_value(&("Ann",), "args").unwrap();
        let merged = merge_named(
            &args,
            &kwargs(&[("note", V::Text("hi")), ("times", V::Number(3))]),
            PARAMS,
        )
        .unwrap();
        let decoded: (String, u32, Option<String>) = decode_value(&merged, "args").unwrap();
        assert_eq!(decoded, ("Ann".into(), 3, Some("hi".into())));
    }

    #[test]
    fn an_omitted_option_is_none_and_other_omissions_are_errors() {
        let args = encode_value(&(), "args").unwrap();
        let merged = merge_named(
            &args,
            &kwargs(&[("name", V::Text("Bo")), ("times", V::Number(1))]),
            PARAMS,
        )
        .unwrap();
        let decoded: (String, u32, Option<String>) = decode_value(&merged, "args").unwrap();
        assert_eq!(decoded, ("Bo".into(), 1, None));

        let err = merge_named(&args, &kwargs(&[("name", V::Text("Bo"))]), PARAMS).unwrap_err();
        assert_eq!(err.kind, RemoteErrorKind::BadArguments);
        assert!(err.message.contains("missing argument \"times\""), "{err}");
    }

    #[test]
    fn unknown_duplicate_and_surplus_arguments_are_refused() {
        let one = encode_value(&("Ann",), "args").unwrap();
        let err = merge_named(&one, &kwargs(&[("colour", V::Text("red"))]), PARAMS).unwrap_err();
        assert!(
            err.message.contains("no parameter named \"colour\""),
            "{err}"
        );
        let err = merge_named(&one, &kwargs(&[("name", V::Text("Bo"))]), PARAMS).unwrap_err();
        assert!(err.message.contains("by position and by name"), "{err}");
        let four = encode_value(&("a", 1, "b", 2), "args").unwrap();
        let err = merge_named(&four, &kwargs(&[]), PARAMS).unwrap_err();
        assert!(
            err.message.contains("takes 3 arguments, 4 were given"),
            "{err}"
        );
    }

    #[test]
    fn nested_values_are_spliced_whole() {
        let params = &[("xs", "Vec<u32>"), ("label", "String")];
        let args = encode_value(&(vec![1u32, 2, 3],), "args").unwrap();
        let merged = merge_named(&args, &kwargs(&[("label", V::Text("x"))]), params).unwrap();
        let decoded: (Vec<u32>, String) = decode_value(&merged, "args").unwrap();
        assert_eq!(decoded, (vec![1, 2, 3], "x".into()));
        let merged = merge_named(
            &encode_value(&(), "args").unwrap(),
            &kwargs(&[("xs", V::List((0..40).collect())), ("label", V::Text("y"))]),
            params,
        )
        .unwrap();
        let decoded: (Vec<u32>, String) = decode_value(&merged, "args").unwrap();
        assert_eq!(decoded.0.len(), 40);
    }

    /// Truncations and random corruptions of valid maps are errors, never panics.
    #[test]
    fn malformed_maps_are_errors() {
        let args = encode_value(&(), "args").unwrap();
        let good = kwargs(&[("name", V::Text("Bo")), ("times", V::List(vec![1; 20]))]);
        for end in 0..good.len() {
            assert!(merge_named(&args, &good[..end], PARAMS).is_err());
        }
        // A map that claims 2^32 - 1 entries in five bytes.
        assert!(merge_named(&args, &[0xdf, 0xff, 0xff, 0xff, 0xff], PARAMS).is_err());
        // An array that claims 2^32 - 1 values.
        assert!(merge_named(&[0xdd, 0xff, 0xff, 0xff, 0xff], &good, PARAMS).is_err());
        let mut state: u32 = 0x1234_5678;
        for _ in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let mut bytes = good.clone();
            let at = state as usize % bytes.len();
            bytes[at] = (state >> 8) as u8;
            let _ = merge_named(&args, &bytes, PARAMS);
        }
    }
}
