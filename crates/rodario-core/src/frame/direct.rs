//! MessagePack written and read by hand for the frames every call sends: the call, an `Ok`
//! reply and a cluster call's `Expect`. The serde path (`rmp_serde`) stays the reference:
//! the writers choose the markers it chooses (tests compare the bytes), and the reader
//! takes only what it reads exactly as serde would, leaving everything else (other markers,
//! an error reply, a struct written as a map, anything malformed) to serde, which decides.
//! Both halves spare a call about half the instructions its frames cost through serde.

use bytes::{BufMut, BytesMut};

use super::{Call, Expect, Frame, Outcome, Reply, TraceContext};

/// MessagePack's `nil`, `false` and `true` markers.
pub(super) const NIL: u8 = 0xc0;
const FALSE: u8 = 0xc2;
pub(super) const TRUE: u8 = 0xc3;

/// A map of one entry: how serde tags an enum variant (`{"Call": ...}`).
const ONE_ENTRY_MAP: u8 = 0x81;

/// The bytes [`put_uint`] writes for `value`.
pub(super) fn uint_size(value: u64) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// The bytes [`put_str`] writes for `value`.
pub(super) fn str_size(value: &str) -> usize {
    let marker = match value.len() {
        0..=31 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    };
    marker + value.len()
}

/// The bytes [`put_bin`] writes for `value`.
pub(super) fn bin_size(value: &[u8]) -> usize {
    let marker = match value.len() {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    };
    marker + value.len()
}

/// An unsigned integer in the fewest bytes, as `rmp::encode::write_uint` writes it.
pub(super) fn put_uint(buf: &mut BytesMut, value: u64) {
    match value {
        0..=0x7f => buf.put_u8(value as u8),
        0x80..=0xff => {
            buf.put_u8(0xcc);
            buf.put_u8(value as u8);
        }
        0x100..=0xffff => {
            buf.put_u8(0xcd);
            buf.put_u16(value as u16);
        }
        0x1_0000..=0xffff_ffff => {
            buf.put_u8(0xce);
            buf.put_u32(value as u32);
        }
        _ => {
            buf.put_u8(0xcf);
            buf.put_u64(value);
        }
    }
}

/// A string with the shortest length marker, as `rmp::encode::write_str` writes it.
pub(super) fn put_str(buf: &mut BytesMut, value: &str) {
    let len = value.len();
    match len {
        0..=31 => buf.put_u8(0xa0 | len as u8),
        32..=0xff => {
            buf.put_u8(0xd9);
            buf.put_u8(len as u8);
        }
        0x100..=0xffff => {
            buf.put_u8(0xda);
            buf.put_u16(len as u16);
        }
        _ => {
            buf.put_u8(0xdb);
            buf.put_u32(len as u32);
        }
    }
    buf.put_slice(value.as_bytes());
}

/// Binary data with the shortest length marker, as `rmp::encode::write_bin` writes it.
pub(super) fn put_bin(buf: &mut BytesMut, value: &[u8]) {
    let len = value.len();
    match len {
        0..=0xff => {
            buf.put_u8(0xc4);
            buf.put_u8(len as u8);
        }
        0x100..=0xffff => {
            buf.put_u8(0xc5);
            buf.put_u16(len as u16);
        }
        _ => {
            buf.put_u8(0xc6);
            buf.put_u32(len as u32);
        }
    }
    buf.put_slice(value);
}

/// The bytes [`put_reply_ok`] writes.
pub(super) fn reply_ok_size(id: u64, from: &str, value: &[u8]) -> usize {
    1 + str_size("Reply")
        + 1
        + uint_size(id)
        + str_size(from)
        + 1
        + str_size("Ok")
        + bin_size(value)
}

/// The body of a reply carrying a value: `{"Reply": [id, from, {"Ok": value}]}`.
pub(super) fn put_reply_ok(buf: &mut BytesMut, id: u64, from: &str, value: &[u8]) {
    buf.put_u8(ONE_ENTRY_MAP);
    put_str(buf, "Reply");
    buf.put_u8(0x93);
    put_uint(buf, id);
    put_str(buf, from);
    buf.put_u8(ONE_ENTRY_MAP);
    put_str(buf, "Ok");
    put_bin(buf, value);
}

/// The frame in `body` (after the header), or `None` to leave it to serde: anything but a
/// call, an `Ok` reply or an `Expect` in the markers rodario writes, and anything malformed.
pub(super) fn read_frame(body: &[u8]) -> Option<Frame> {
    let mut reader = Reader(body);
    if reader.byte()? != ONE_ENTRY_MAP {
        return None;
    }
    let frame = match reader.str_bytes()? {
        b"Call" => Frame::Call(reader.call()?),
        b"Reply" => Frame::Reply(reader.reply_ok()?),
        b"Expect" => Frame::Expect(reader.expect()?),
        _ => return None,
    };
    // Bytes after the frame: serde's to judge.
    reader.0.is_empty().then_some(frame)
}

/// A call's fields as they lie in a frame's body.
pub(crate) struct CallView<'a> {
    pub(crate) id: u64,
    pub(crate) reply_to: &'a str,
    pub(crate) method: &'a str,
    pub(crate) args: &'a [u8],
    pub(crate) deadline_ms: u64,
    pub(crate) kwargs: Option<&'a [u8]>,
    /// `traceparent` and `tracestate`.
    pub(crate) trace: Option<(&'a str, &'a str)>,
    pub(crate) one_way: bool,
}

impl CallView<'_> {
    /// The trace context, owned.
    pub(crate) fn trace(&self) -> Option<Box<TraceContext>> {
        self.trace.map(|(traceparent, tracestate)| {
            Box::new(TraceContext {
                traceparent: traceparent.to_owned(),
                tracestate: tracestate.to_owned(),
            })
        })
    }
}

/// The call in `body`, borrowed; `None` for anything else, which [`read_frame`] and serde
/// judge.
pub(super) fn read_call(body: &[u8]) -> Option<CallView<'_>> {
    read_kind(body, b"Call", Reader::call_view)
}

/// The frame of kind `kind` in `body`, as `read` reads the kind's fields; `None` for any
/// other kind, and for bytes after the frame (serde's to judge).
fn read_kind<'a, T>(
    body: &'a [u8],
    kind: &[u8],
    read: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Option<T> {
    let mut reader = Reader(body);
    if reader.byte()? != ONE_ENTRY_MAP || reader.str_bytes()? != kind {
        return None;
    }
    let frame = read(&mut reader)?;
    reader.0.is_empty().then_some(frame)
}

/// A reply carrying a value, as it lies in a frame's body.
pub(super) struct ReplyOkRef<'a> {
    pub(super) id: u64,
    pub(super) from: &'a str,
    pub(super) value: &'a [u8],
}

/// The reply in `body` if it is one carrying a value, borrowed; `None` for anything else,
/// which [`read_frame`] and serde judge.
pub(super) fn read_reply_ok(body: &[u8]) -> Option<ReplyOkRef<'_>> {
    read_kind(body, b"Reply", Reader::reply_ok_ref)
}

/// What is left of a body to read. Every read checks the length first: a short body ends
/// the reading with `None`, never a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&byte, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(byte)
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken)
    }

    /// A big-endian unsigned integer of `len` bytes (at most 8).
    fn big_endian(&mut self, len: usize) -> Option<u64> {
        let bytes = self.take(len)?;
        Some(bytes.iter().fold(0, |n, &b| (n << 8) | u64::from(b)))
    }

    /// A length of `len` bytes, as a `usize`.
    fn length(&mut self, len: usize) -> Option<usize> {
        usize::try_from(self.big_endian(len)?).ok()
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            fixint @ 0x00..=0x7f => Some(u64::from(fixint)),
            0xcc => self.big_endian(1),
            0xcd => self.big_endian(2),
            0xce => self.big_endian(4),
            0xcf => self.big_endian(8),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.str_bytes()?).ok()
    }

    /// A string's bytes, unchecked: for comparing with a known tag.
    fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            fixstr @ 0xa0..=0xbf => usize::from(fixstr & 0x1f),
            0xd9 => self.length(1)?,
            0xda => self.length(2)?,
            0xdb => self.length(4)?,
            _ => return None,
        };
        self.take(len)
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            0xc4 => self.length(1)?,
            0xc5 => self.length(2)?,
            0xc6 => self.length(4)?,
            _ => return None,
        };
        self.take(len)
    }

    /// The length of an array of at most 15 elements (every frame's are).
    fn array(&mut self) -> Option<usize> {
        match self.byte()? {
            fixarray @ 0x90..=0x9f => Some(usize::from(fixarray & 0x0f)),
            _ => None,
        }
    }

    /// Whether a `nil` comes next (taking it if so).
    fn nil(&mut self) -> bool {
        match self.0.split_first() {
            Some((&NIL, rest)) => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    /// `[id, reply_to, method, args, deadline_ms, kwargs?, trace?, one_way?]`.
    fn call(&mut self) -> Option<Call> {
        let view = self.call_view()?;
        Some(Call {
            id: view.id,
            reply_to: view.reply_to.to_owned(),
            method: view.method.to_owned(),
            args: view.args.to_vec(),
            deadline_ms: view.deadline_ms,
            kwargs: view.kwargs.map(<[u8]>::to_vec),
            trace: view.trace(),
            one_way: view.one_way,
        })
    }

    /// [`Reader::call`], borrowed from the body.
    fn call_view(&mut self) -> Option<CallView<'a>> {
        let fields = self.array()?;
        if !(5..=8).contains(&fields) {
            return None;
        }
        let id = self.uint()?;
        let reply_to = self.str()?;
        let method = self.str()?;
        let args = self.bin()?;
        let deadline_ms = self.uint()?;
        let kwargs = if fields < 6 || self.nil() {
            None
        } else {
            Some(self.bin()?)
        };
        let trace = if fields < 7 || self.nil() {
            None
        } else {
            if self.array()? != 2 {
                return None;
            }
            Some((self.str()?, self.str()?))
        };
        let one_way = fields == 8
            && match self.byte()? {
                TRUE => true,
                FALSE => false,
                _ => return None,
            };
        Some(CallView {
            id,
            reply_to,
            method,
            args,
            deadline_ms,
            kwargs,
            trace,
            one_way,
        })
    }

    /// `[id, from, {"Ok": value}]`; other outcomes are serde's.
    fn reply_ok(&mut self) -> Option<Reply> {
        let ReplyOkRef { id, from, value } = self.reply_ok_ref()?;
        Some(Reply {
            id,
            from: from.to_owned(),
            outcome: Outcome::Ok(value.to_vec()),
        })
    }

    /// [`Reader::reply_ok`], borrowed from the body.
    fn reply_ok_ref(&mut self) -> Option<ReplyOkRef<'a>> {
        if self.array()? != 3 {
            return None;
        }
        let id = self.uint()?;
        let from = self.str()?;
        if self.byte()? != ONE_ENTRY_MAP || self.str_bytes()? != b"Ok" {
            return None;
        }
        let value = self.bin()?;
        Some(ReplyOkRef { id, from, value })
    }

    /// `[id, count]`.
    fn expect(&mut self) -> Option<Expect> {
        if self.array()? != 2 {
            return None;
        }
        let id = self.uint()?;
        let count = u32::try_from(self.uint()?).ok()?;
        Some(Expect { id, count })
    }
}
