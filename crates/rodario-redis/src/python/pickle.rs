//! Pickles, read safely and written plainly.
//!
//! A pickle is a program for Python's unpickling machine, and `GLOBAL`/`REDUCE` make it call
//! any function it names (`os.system`, classically). Before `serde-pickle` sees a frame,
//! [`check`] walks its opcodes and refuses every opcode that names a global, calls, builds an
//! object or reaches outside the frame, as well as shared containers (a memo reference to a
//! list, dict, set or tuple: the cheap way to a billion-laughs bomb) and nesting deeper than
//! [`MAX_DEPTH`], so that decoding, converting and dropping the value stay bounded by the
//! frame's size. `serde-pickle` itself reads lengths without trusting them (a 100 MB
//! declared length in a small frame is an end-of-input error, not an allocation).
//!
//! Pickles written here use protocol 3 (Python 3.0 and later read it), and only plain
//! values, except the built-in exception an error reply carries.

use serde_pickle::{DeOptions, HashableValue, SerOptions, Value};

/// The deepest nesting of containers accepted.
pub(crate) const MAX_DEPTH: usize = 64;

/// Why a pickle was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PickleError {
    #[error("pickle opcode {opcode:#04x} at byte {at} is refused: {why}")]
    Refused {
        opcode: u8,
        at: usize,
        why: &'static str,
    },
    #[error("pickle is truncated or malformed at byte {at}")]
    Malformed { at: usize },
    #[error("pickle nests deeper than {MAX_DEPTH} containers")]
    TooDeep,
    #[error("pickle does not decode: {0}")]
    Decode(#[from] serde_pickle::Error),
}

/// Checks `bytes` with [`check`], then decodes it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Value, PickleError> {
    check(bytes)?;
    Ok(serde_pickle::value_from_slice(bytes, DeOptions::new())?)
}

/// Encodes a plain value (no globals).
pub(crate) fn encode(value: &Value) -> Result<Vec<u8>, serde_pickle::Error> {
    serde_pickle::value_to_vec(value, SerOptions::new())
}

/// A reply tuple `(call_id, exception)` whose exception is the built-in `class_name` (such
/// as `RuntimeError`) raised with `message`: Python unpickles an exception instance, which
/// a caller can tell from any value with `isinstance(result, Exception)`.
pub(crate) fn encode_exception_reply(
    call_id: &Value,
    class_name: &str,
    message: &str,
) -> Result<Vec<u8>, serde_pickle::Error> {
    let mut out = vec![PROTO, 3];
    out.extend_from_slice(body(&encode(call_id)?));
    out.push(GLOBAL);
    out.extend_from_slice(format!("builtins\n{class_name}\n").as_bytes());
    out.extend_from_slice(body(&encode(&Value::String(message.to_owned()))?));
    out.extend_from_slice(&[TUPLE1, REDUCE, TUPLE2, STOP]);
    Ok(out)
}

/// A pickle without its `PROTO` header and `STOP`, to splice into another.
fn body(pickle: &[u8]) -> &[u8] {
    let start = if pickle.first() == Some(&PROTO) { 2 } else { 0 };
    let end = pickle.len().saturating_sub(1).max(start);
    &pickle[start..end]
}

/// A string key of a pickled dict.
pub(crate) fn key(value: &HashableValue) -> Option<&str> {
    match value {
        HashableValue::String(s) => Some(s),
        _ => None,
    }
}

const STOP: u8 = b'.';
const GLOBAL: u8 = b'c';
const REDUCE: u8 = b'R';
const PROTO: u8 = 0x80;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;

/// One stack entry of the check: a mark, a scalar, or a container of some depth.
#[derive(Clone, Copy, PartialEq)]
enum Item {
    Mark,
    Scalar,
    Container(usize),
}

impl Item {
    fn depth(self) -> usize {
        match self {
            Item::Container(depth) => depth,
            _ => 0,
        }
    }
}

/// What an opcode's argument is.
enum Arg {
    None,
    Fixed(usize),
    /// A little-endian length of this many bytes, then that many bytes.
    Prefixed(usize),
    /// Text up to a newline.
    Line,
}

/// Walks the opcodes of `bytes` as the unpickler would, on a stack of shapes instead of
/// values: refuses what could run code or blow up, and checks that the stack is used
/// consistently and ends with exactly one value.
pub(crate) fn check(bytes: &[u8]) -> Result<(), PickleError> {
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: std::collections::HashMap<u64, Item> = std::collections::HashMap::new();
    let mut at = 0;
    while at < bytes.len() {
        let opcode = bytes[at];
        let start = at;
        at += 1;
        let refused = |why| PickleError::Refused {
            opcode,
            at: start,
            why,
        };
        let (arg, effect) = describe(opcode).ok_or(refused("not a plain-data opcode"))?;
        let arg_bytes =
            read_arg(bytes, &mut at, arg).ok_or(PickleError::Malformed { at: start })?;
        let malformed = || PickleError::Malformed { at: start };
        match effect {
            Effect::Push(item) => stack.push(item),
            Effect::Mark => stack.push(Item::Mark),
            Effect::Stop => {
                return if at == bytes.len() && stack.len() == 1 && stack[0] != Item::Mark {
                    Ok(())
                } else {
                    Err(malformed())
                };
            }
            Effect::Proto | Effect::Frame => {}
            Effect::Pop => match stack.pop() {
                Some(Item::Mark) | None => return Err(malformed()),
                Some(_) => {}
            },
            Effect::PopMark => {
                pop_to_mark(&mut stack).ok_or_else(malformed)?;
            }
            Effect::Build { from_mark, take } => {
                let depth = if from_mark {
                    pop_to_mark(&mut stack).ok_or_else(malformed)?
                } else {
                    pop_n(&mut stack, take).ok_or_else(malformed)?
                };
                stack.push(container(depth)?);
            }
            Effect::Extend { from_mark, take } => {
                let depth = if from_mark {
                    pop_to_mark(&mut stack).ok_or_else(malformed)?
                } else {
                    pop_n(&mut stack, take).ok_or_else(malformed)?
                };
                match stack.last_mut() {
                    Some(Item::Container(outer)) => {
                        *outer = (*outer).max(depth + 1);
                        if *outer > MAX_DEPTH {
                            return Err(PickleError::TooDeep);
                        }
                    }
                    _ => return Err(malformed()),
                }
            }
            Effect::Put => {
                let top = *stack
                    .last()
                    .filter(|i| **i != Item::Mark)
                    .ok_or_else(malformed)?;
                let index = match arg_bytes {
                    Some(index) => index,
                    None => memo.len() as u64,
                };
                memo.insert(index, top);
            }
            Effect::Get => {
                let index = arg_bytes.ok_or(PickleError::Malformed { at: start })?;
                match memo.get(&index) {
                    Some(Item::Scalar) => stack.push(Item::Scalar),
                    Some(_) => return Err(refused("a shared container")),
                    None => return Err(malformed()),
                }
            }
        }
    }
    Err(PickleError::Malformed { at })
}

fn container(children_depth: usize) -> Result<Item, PickleError> {
    let depth = children_depth + 1;
    if depth > MAX_DEPTH {
        return Err(PickleError::TooDeep);
    }
    Ok(Item::Container(depth))
}

/// Pops down to and including the topmost mark; the deepest popped item's depth.
fn pop_to_mark(stack: &mut Vec<Item>) -> Option<usize> {
    let mark = stack.iter().rposition(|i| *i == Item::Mark)?;
    let depth = stack[mark + 1..]
        .iter()
        .map(|i| i.depth())
        .max()
        .unwrap_or(0);
    stack.truncate(mark);
    Some(depth)
}

/// Pops `n` items (no mark among them); the deepest one's depth.
fn pop_n(stack: &mut Vec<Item>, n: usize) -> Option<usize> {
    let from = stack.len().checked_sub(n)?;
    if stack[from..].contains(&Item::Mark) {
        return None;
    }
    let depth = stack[from..].iter().map(|i| i.depth()).max().unwrap_or(0);
    stack.truncate(from);
    Some(depth)
}

/// Reads an opcode's argument; for memo opcodes, the index it names.
fn read_arg(bytes: &[u8], at: &mut usize, arg: Arg) -> Option<Option<u64>> {
    let rest = bytes.get(*at..)?;
    let (used, number) = match arg {
        Arg::None => (0, None),
        Arg::Fixed(n) => {
            let raw = rest.get(..n)?;
            let number = raw
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            (n, Some(number))
        }
        Arg::Prefixed(width) => {
            let raw = rest.get(..width)?;
            let len = raw
                .iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            let len = usize::try_from(len).ok()?;
            let total = width.checked_add(len)?;
            if total > rest.len() {
                return None;
            }
            (total, None)
        }
        Arg::Line => {
            let end = rest.iter().position(|&b| b == b'\n')?;
            let number = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|s| s.trim().parse().ok());
            (end + 1, number)
        }
    };
    *at += used;
    Some(number)
}

/// What an opcode does to the stack.
enum Effect {
    Push(Item),
    Mark,
    Stop,
    Proto,
    Frame,
    Pop,
    PopMark,
    /// Makes a container of the items above the mark, or of the top `take` items.
    Build {
        from_mark: bool,
        take: usize,
    },
    /// Adds the items above the mark (or the top `take`) to the container below them.
    Extend {
        from_mark: bool,
        take: usize,
    },
    Put,
    Get,
}

/// The plain-data opcodes of protocols 0 to 5 (Python's `pickletools` names); `None` for the
/// refused ones (globals, calls, object building, persistent ids, extension registry,
/// out-of-band buffers, `DUP`).
fn describe(opcode: u8) -> Option<(Arg, Effect)> {
    use Effect::*;
    let scalar = Push(Item::Scalar);
    let empty = Push(Item::Container(1));
    Some(match opcode {
        b'(' => (Arg::None, Mark),
        b'.' => (Arg::None, Stop),
        b'0' => (Arg::None, Pop),
        b'1' => (Arg::None, PopMark),
        b'F' | b'I' | b'L' | b'S' | b'V' => (Arg::Line, scalar),
        b'J' => (Arg::Fixed(4), scalar),
        b'K' => (Arg::Fixed(1), scalar),
        b'M' => (Arg::Fixed(2), scalar),
        b'G' => (Arg::Fixed(8), scalar),
        b'N' | 0x88 | 0x89 => (Arg::None, scalar),
        b'T' | b'X' | b'B' | 0x8b => (Arg::Prefixed(4), scalar),
        b'U' | b'C' | 0x8a | 0x8c => (Arg::Prefixed(1), scalar),
        0x8d | 0x8e | 0x96 => (Arg::Prefixed(8), scalar),
        b'}' | b']' | b')' | 0x8f => (Arg::None, empty),
        b'a' => (
            Arg::None,
            Extend {
                from_mark: false,
                take: 1,
            },
        ),
        b's' => (
            Arg::None,
            Extend {
                from_mark: false,
                take: 2,
            },
        ),
        b'e' | b'u' | 0x90 => (
            Arg::None,
            Extend {
                from_mark: true,
                take: 0,
            },
        ),
        b'd' | b'l' | b't' | 0x91 => (
            Arg::None,
            Build {
                from_mark: true,
                take: 0,
            },
        ),
        0x85 => (
            Arg::None,
            Build {
                from_mark: false,
                take: 1,
            },
        ),
        0x86 => (
            Arg::None,
            Build {
                from_mark: false,
                take: 2,
            },
        ),
        0x87 => (
            Arg::None,
            Build {
                from_mark: false,
                take: 3,
            },
        ),
        b'p' => (Arg::Line, Put),
        b'q' => (Arg::Fixed(1), Put),
        b'r' => (Arg::Fixed(4), Put),
        0x94 => (Arg::None, Put),
        b'g' => (Arg::Line, Get),
        b'h' => (Arg::Fixed(1), Get),
        b'j' => (Arg::Fixed(4), Get),
        0x80 => (Arg::Fixed(1), Proto),
        0x95 => (Arg::Fixed(8), Frame),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `pickle.dumps(('c1', 'p1', 'greet', ('Ann',), {'times': 2}))` writes on
    /// Python 3.11 (protocol 4).
    const PYTHON_CALL: &[u8] = b"\x80\x04\x95+\x00\x00\x00\x00\x00\x00\x00(\x8c\x02c1\x94\x8c\x02p1\x94\x8c\x05greet\x94\x8c\x03Ann\x94\x85\x94}\x94\x8c\x05times\x94K\x02st\x94.";

    #[test]
    fn reads_what_python_writes() {
        let value = decode(PYTHON_CALL).unwrap();
        let Value::Tuple(fields) = value else {
            panic!("not a tuple: {value:?}")
        };
        assert_eq!(fields[2], Value::String("greet".into()));
        assert_eq!(fields[3], Value::Tuple(vec![Value::String("Ann".into())]));
    }

    #[test]
    fn refuses_globals_and_calls() {
        // pickle.dumps of an object whose __reduce__ returns (os.system, ('echo pwned',)),
        // protocol 0 and protocol 4.
        let classic = b"cposix\nsystem\np0\n(Vecho pwned\np1\ntp2\nRp3\n.";
        let modern = b"\x80\x04\x95%\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\necho pwned\x94\x85\x94R\x94.";
        for hostile in [&classic[..], &modern[..]] {
            let err = decode(hostile).unwrap_err();
            assert!(matches!(err, PickleError::Refused { .. }), "{err}");
        }
    }

    #[test]
    fn refuses_truncations_without_panicking() {
        for end in 0..PYTHON_CALL.len() {
            assert!(decode(&PYTHON_CALL[..end]).is_err(), "accepted {end} bytes");
        }
    }

    #[test]
    fn a_huge_declared_length_is_malformed_not_allocated() {
        // BINBYTES8 declaring 100 MB, followed by 3 bytes.
        let mut bytes = vec![0x80, 4, 0x8e];
        bytes.extend_from_slice(&100_000_000u64.to_le_bytes());
        bytes.extend_from_slice(b"abc.");
        assert!(matches!(
            decode(&bytes),
            Err(PickleError::Malformed { at: 2 })
        ));
    }

    #[test]
    fn refuses_shared_containers_and_deep_nesting() {
        // l = []; (l, l): the second is a memo reference to the first.
        let shared = b"\x80\x04\x95\x07\x00\x00\x00\x00\x00\x00\x00]\x94h\x00\x86\x94.";
        assert!(matches!(decode(shared), Err(PickleError::Refused { .. })));
        let mut deep = vec![0x80, 4];
        deep.extend(std::iter::repeat_n(b']', MAX_DEPTH + 1));
        deep.extend(std::iter::repeat_n(b'a', MAX_DEPTH));
        deep.push(b'.');
        assert!(matches!(decode(&deep), Err(PickleError::TooDeep)));
        let mut fine = vec![0x80, 4];
        fine.extend(std::iter::repeat_n(b']', MAX_DEPTH));
        fine.extend(std::iter::repeat_n(b'a', MAX_DEPTH - 1));
        fine.push(b'.');
        decode(&fine).unwrap();
    }

    #[test]
    fn random_corruptions_never_panic() {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = PYTHON_CALL.to_vec();
            for shift in [0, 16, 32] {
                let at = (state >> shift) as usize % bytes.len();
                bytes[at] = (state >> (shift + 8)) as u8;
            }
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn exception_replies_splice_plain_pickles() {
        let bytes =
            encode_exception_reply(&Value::String("c1".into()), "RuntimeError", "boom").unwrap();
        // The check refuses the GLOBAL it contains: only Python reads these.
        assert!(check(&bytes).is_err());
        assert!(bytes.starts_with(&[PROTO, 3]));
        assert!(bytes.ends_with(&[TUPLE1, REDUCE, TUPLE2, STOP]));
        assert!(bytes.windows(22).any(|w| w == b"builtins\nRuntimeError\n"));
    }
}
