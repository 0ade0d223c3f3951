//! Wire frames and the value codec.
//!
//! Every frame is `[version][codec][body]`: one version byte ([`FRAME_VERSION`]), one codec
//! tag ([`Codec`]), then the body. A receiver refuses a frame with another version or codec
//! with a [`FrameError`] that says so, instead of misreading it. The body is a MessagePack
//! array, externally tagged by frame kind:
//!
//! | kind | body |
//! |---|---|
//! | call | `{"Call": [id, reply_to, method, args, deadline_ms]}`, then optionally `kwargs`, `trace` and `one_way` |
//! | reply | `{"Reply": [id, from, outcome]}`, outcome `{"Ok": bin}`, `{"Err": [kind, message]}` or `"Declined"` |
//! | expect | `{"Expect": [id, count]}`: a node tells a cluster caller how many of its actors got the call |
//!
//! `args` is the MessagePack encoding of the argument tuple (an array), `Ok`'s bin the
//! MessagePack encoding of the return value; structs inside them are maps with field names,
//! so a generic client can build them from JSON-shaped data. `deadline_ms` is the caller's
//! deadline in milliseconds since the Unix epoch: receivers skip calls whose caller has
//! given up. `kwargs`, when present, is a MessagePack map of arguments by parameter name
//! that the host appends to the positional ones (callers speaking another wire, such as the
//! Python library's, name their arguments); rodario's own proxies leave it out. `trace` is
//! the caller's W3C trace context, `[traceparent, tracestate]`, written when the call's span
//! belongs to an OpenTelemetry trace (feature `opentelemetry`). `one_way` is `true` for a
//! call whose caller wants no reply ([`ActorProxy::tell`](crate::ActorProxy::tell)). All
//! three are optional trailing fields: a call carries as many as it needs (`nil` or `false`
//! for the absent ones before the last it needs), a frame of an earlier build (five fields)
//! decodes with none, and a call with none is written as earlier builds wrote it, so they
//! read it too (an earlier build answers a one-way call; its caller ignores the answer). This replaces the Python library's pickled `(call_id, proxy_id, method, args,
//! kwargs)` and `(call_id, value)` tuples: decoding is safe on any input (it never panics
//! and never runs code), and frames over the size limit are refused before decoding.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{CodecError, FrameError, RemoteError};

mod direct;

pub(crate) use direct::CallView;

use direct::{bin_size, put_bin, put_str, put_uint, str_size, uint_size, NIL, TRUE};

/// The frame layout version this build writes and reads.
pub const FRAME_VERSION: u8 = 1;

/// The default frame size limit: 1 MiB, NATS's default `max_payload`, so a frame that fits
/// one backend fits them all.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

const HEADER: usize = 2;

/// The codec of a frame's body, written as its second byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// MessagePack (tag 1): self-describing, compact, spoken by every language.
    MessagePack,
}

impl Codec {
    /// The tag byte.
    pub fn tag(self) -> u8 {
        match self {
            Codec::MessagePack => 1,
        }
    }

    fn from_tag(tag: u8) -> Result<Self, FrameError> {
        match tag {
            1 => Ok(Codec::MessagePack),
            other => Err(FrameError::UnsupportedCodec(other)),
        }
    }
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// A method call.
    Call(Call),
    /// A reply to a call.
    Reply(Reply),
    /// How many replies a node will send to a cluster call.
    Expect(Expect),
}

impl Frame {
    /// The kind's name, for diagnostics.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Call(_) => "call",
            Frame::Reply(_) => "reply",
            Frame::Expect(_) => "expect",
        }
    }
}

/// A call of `method` with encoded `args`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Call {
    /// The caller's id for this call, unique within its node.
    pub id: u64,
    /// The node whose reply channel gets the reply.
    pub reply_to: String,
    /// The method's name.
    pub method: String,
    /// The encoded argument tuple.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// The caller's deadline, in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// Arguments by parameter name: a MessagePack map from name to value, appended after
    /// `args` in the method's parameter order. `None` from rodario's own proxies.
    #[serde(default, with = "serde_bytes")]
    pub kwargs: Option<Vec<u8>>,
    /// The caller's W3C trace context, if its call span belongs to a trace (boxed: most
    /// calls carry none, and every call is moved a few times on its way).
    #[serde(default)]
    pub trace: Option<Box<TraceContext>>,
    /// The caller wants no reply: the host sends none, not even an error.
    #[serde(default)]
    pub one_way: bool,
}

/// A W3C trace context (`traceparent` and `tracestate` headers), carried in a call frame
/// because Redis pub/sub has no headers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// `version-trace_id-parent_id-flags`, as in the `traceparent` header.
    pub traceparent: String,
    /// Vendor state, as in the `tracestate` header (often empty).
    pub tracestate: String,
}

impl Serialize for Call {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CallRef {
            id: self.id,
            reply_to: &self.reply_to,
            method: &self.method,
            args: &self.args,
            deadline_ms: self.deadline_ms,
            kwargs: self.kwargs.as_deref(),
            trace: self.trace.as_deref(),
            one_way: self.one_way,
        }
        .serialize(serializer)
    }
}

/// A reply to call `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The call's id.
    pub id: u64,
    /// The actor that answered.
    pub from: String,
    /// What it answered.
    pub outcome: Outcome,
}

/// What an actor answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The encoded return value.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An error.
    Err(RemoteError),
    /// A hook declined the call (another cluster member took a `singular` call).
    Declined,
}

/// A node's count of the local actors that got cluster call `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expect {
    /// The call's id.
    pub id: u64,
    /// How many replies this node will send.
    pub count: u32,
}

/// Encodes `frame`, refusing it if it is larger than `limit` bytes.
pub fn encode_frame(frame: &Frame, limit: usize) -> Result<Bytes, crate::Error> {
    encode_any(frame, frame_payload_len(frame), limit)
}

/// The same layout as [`Frame`], borrowing what a sender already holds, so that sending a
/// reply copies no name into a frame struct first.
#[derive(Serialize)]
enum FrameRef<'a> {
    Reply(ReplyRef<'a>),
}

struct CallRef<'a> {
    id: u64,
    reply_to: &'a str,
    method: &'a str,
    args: &'a [u8],
    deadline_ms: u64,
    kwargs: Option<&'a [u8]>,
    trace: Option<&'a TraceContext>,
    one_way: bool,
}

impl Serialize for CallRef<'_> {
    /// The five fields every build reads, then only as many optional trailing ones as the
    /// call needs: a positional layout cannot skip a field in the middle.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let trailing = match (self.kwargs, self.trace, self.one_way) {
            (_, _, true) => 3,
            (_, Some(_), false) => 2,
            (Some(_), None, false) => 1,
            (None, None, false) => 0,
        };
        let mut call = serializer.serialize_struct("Call", 5 + trailing)?;
        call.serialize_field("id", &self.id)?;
        call.serialize_field("reply_to", self.reply_to)?;
        call.serialize_field("method", self.method)?;
        call.serialize_field("args", serde_bytes::Bytes::new(self.args))?;
        call.serialize_field("deadline_ms", &self.deadline_ms)?;
        if trailing >= 1 {
            call.serialize_field("kwargs", &self.kwargs.map(serde_bytes::Bytes::new))?;
        }
        if trailing >= 2 {
            call.serialize_field("trace", &self.trace)?;
        }
        if trailing == 3 {
            call.serialize_field("one_way", &self.one_way)?;
        }
        call.end()
    }
}

#[derive(Serialize)]
struct ReplyRef<'a> {
    id: u64,
    from: &'a str,
    outcome: &'a Outcome,
}

/// Encodes a call frame (as [`Frame::Call`] would be), refusing it over `limit` bytes.
///
/// Every call is encoded here, so it writes the MessagePack itself, with the markers the
/// serde path ([`encode_frame`]) chooses: the same bytes in about half the instructions.
pub(crate) fn encode_call(
    id: u64,
    reply_to: &str,
    method: &str,
    args: &[u8],
    deadline_ms: u64,
    (trace, one_way): (Option<&TraceContext>, bool),
    limit: usize,
) -> Result<Bytes, crate::Error> {
    // `{"Call": [id, reply_to, method, args, deadline_ms, kwargs?, trace?, one_way?]}`, the
    // trailing fields up to the last one the call needs, as `CallRef`'s `Serialize` writes
    // them (`kwargs`, which calls sent from here never have, as nil).
    let trailing = match (trace, one_way) {
        (_, true) => 3,
        (Some(_), false) => 2,
        (None, false) => 0,
    };
    let mut size = HEADER
        + 1
        + str_size("Call")
        + 1
        + uint_size(id)
        + str_size(reply_to)
        + str_size(method)
        + bin_size(args)
        + uint_size(deadline_ms);
    if trailing >= 2 {
        size += 1 + trace.map_or(1, |t| {
            1 + str_size(&t.traceparent) + str_size(&t.tracestate)
        });
    }
    if trailing == 3 {
        size += 1;
    }
    let mut buf = exact_buffer(size, limit)?;
    buf.put_u8(0x81);
    put_str(&mut buf, "Call");
    buf.put_u8(0x90 | (5 + trailing));
    put_uint(&mut buf, id);
    put_str(&mut buf, reply_to);
    put_str(&mut buf, method);
    put_bin(&mut buf, args);
    put_uint(&mut buf, deadline_ms);
    if trailing >= 2 {
        buf.put_u8(NIL);
        match trace {
            Some(trace) => {
                buf.put_u8(0x92);
                put_str(&mut buf, &trace.traceparent);
                put_str(&mut buf, &trace.tracestate);
            }
            None => buf.put_u8(NIL),
        }
    }
    if trailing == 3 {
        buf.put_u8(TRUE);
    }
    debug_assert_eq!(buf.len(), size, "a call frame's size was misjudged");
    Ok(buf.freeze())
}

/// A buffer of exactly `size` bytes with the frame header written, or
/// [`FrameError::TooLarge`] if `size` is over `limit`. Exactly: a buffer filled to its
/// capacity becomes `Bytes` without another allocation.
fn exact_buffer(size: usize, limit: usize) -> Result<BytesMut, crate::Error> {
    if size > limit {
        return Err(FrameError::TooLarge { size, limit }.into());
    }
    let mut buf = BytesMut::with_capacity(size);
    buf.put_u8(FRAME_VERSION);
    buf.put_u8(Codec::MessagePack.tag());
    Ok(buf)
}

/// Encodes a reply frame (as [`Frame::Reply`] would be), refusing it over `limit` bytes.
/// A value (every successful call's reply) is written directly, other outcomes by serde.
pub(crate) fn encode_reply(
    id: u64,
    from: &str,
    outcome: &Outcome,
    limit: usize,
) -> Result<Bytes, crate::Error> {
    match outcome {
        Outcome::Ok(value) => {
            let size = HEADER + direct::reply_ok_size(id, from, value);
            let mut buf = exact_buffer(size, limit)?;
            direct::put_reply_ok(&mut buf, id, from, value);
            debug_assert_eq!(buf.len(), size, "a reply frame's size was misjudged");
            Ok(buf.freeze())
        }
        _ => encode_any(&FrameRef::Reply(ReplyRef { id, from, outcome }), 0, limit),
    }
}

fn encode_any<F: Serialize>(
    frame: &F,
    payload_len: usize,
    limit: usize,
) -> Result<Bytes, crate::Error> {
    let mut buf = BytesMut::with_capacity(64 + payload_len).writer();
    buf.get_mut().put_u8(FRAME_VERSION);
    buf.get_mut().put_u8(Codec::MessagePack.tag());
    rmp_serde::encode::write(&mut buf, frame).map_err(|e| CodecError::Encode {
        what: "frame",
        message: e.to_string(),
    })?;
    let bytes = buf.into_inner().freeze();
    if bytes.len() > limit {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            limit,
        }
        .into());
    }
    Ok(bytes)
}

fn frame_payload_len(frame: &Frame) -> usize {
    match frame {
        Frame::Call(call) => call.args.len() + call.method.len(),
        Frame::Reply(Reply {
            outcome: Outcome::Ok(value),
            ..
        }) => value.len(),
        _ => 0,
    }
}

/// Decodes a frame, refusing it if it is larger than `limit` bytes. Never panics.
///
/// The frames of every call (a call, an `Ok` reply, an `Expect`) are read directly; the
/// rest, and anything the direct reader does not take, by serde.
pub fn decode_frame(bytes: &[u8], limit: usize) -> Result<Frame, FrameError> {
    let (Codec::MessagePack, body) = frame_body(bytes, limit)?;
    decode_body(body)
}

/// A MessagePack body read directly where the direct reader takes it, else by serde.
fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
    match direct::read_frame(body) {
        Some(frame) => Ok(frame),
        None => rmp_serde::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string())),
    }
}

/// A frame's codec and body, once its size and header are checked.
fn frame_body(bytes: &[u8], limit: usize) -> Result<(Codec, &[u8]), FrameError> {
    if bytes.len() > limit {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    if bytes.len() < HEADER {
        return Err(FrameError::Truncated { size: bytes.len() });
    }
    if bytes[0] != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion {
            found: bytes[0],
            supported: FRAME_VERSION,
        });
    }
    Ok((Codec::from_tag(bytes[1])?, &bytes[HEADER..]))
}

/// A frame that should be a call, as a host reads it: borrowed where the direct reader
/// takes it, else decoded (and then perhaps not a call).
pub(crate) enum CallFrame<'a> {
    View(CallView<'a>),
    Decoded(Frame),
}

/// Reads `bytes` as [`decode_frame`] does, a call borrowed from them.
pub(crate) fn read_call(bytes: &[u8], limit: usize) -> Result<CallFrame<'_>, FrameError> {
    let (Codec::MessagePack, body) = frame_body(bytes, limit)?;
    if let Some(view) = direct::read_call(body) {
        return Ok(CallFrame::View(view));
    }
    decode_body(body).map(CallFrame::Decoded)
}

/// A part of a frame (a call's arguments, a reply's value), kept in the frame it came in
/// unless something else shares the frame's memory: a frame cut from a connection's read
/// buffer (NATS) would hold the whole buffer while a call waits in a mailbox or a reply
/// waits to be awaited, so the part is copied out of such a frame instead.
pub(crate) struct FramePart {
    frame: Bytes,
    part: Range<usize>,
}

impl FramePart {
    /// `part` of `frame` (a range [`span`] found).
    pub(crate) fn new(frame: Bytes, part: Range<usize>) -> Self {
        if frame.is_unique() {
            FramePart { frame, part }
        } else {
            Self::from(frame[part].to_vec())
        }
    }

    /// The part's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.frame[self.part.clone()]
    }
}

impl From<Vec<u8>> for FramePart {
    /// Bytes of their own (decoded by serde, or copied out of a shared frame).
    fn from(bytes: Vec<u8>) -> Self {
        let part = 0..bytes.len();
        FramePart {
            frame: Bytes::from(bytes),
            part,
        }
    }
}

/// A reply carrying a value, kept as the frame it came in (a [`FramePart`]): a call's reply
/// reaches its caller without the value (or the replier's name, which a value's reader has
/// no use for) copied out of the frame.
pub(crate) struct ValueReply {
    id: u64,
    value: FramePart,
}

impl ValueReply {
    /// Reads `frame` if it is a reply carrying a value within `limit` bytes, as
    /// [`decode_frame`] would read it; gives the frame back otherwise.
    pub(crate) fn read(frame: Bytes, limit: usize) -> Result<Self, Bytes> {
        let read = match frame_body(&frame, limit) {
            Ok((Codec::MessagePack, body)) => {
                direct::read_reply_ok(body).map(|reply| (reply.id, span(&frame, reply.value)))
            }
            Err(_) => None,
        };
        match read {
            Some((id, value)) => Ok(ValueReply {
                id,
                value: FramePart::new(frame, value),
            }),
            None => Err(frame),
        }
    }

    /// The call's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The encoded return value.
    pub(crate) fn value(&self) -> &[u8] {
        self.value.bytes()
    }
}

/// Where `part`, a slice of `whole`, lies in it.
pub(crate) fn span(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// Encodes a value (an argument tuple or a return value) with MessagePack, structs as maps.
pub fn encode_value<T: Serialize + ?Sized>(
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode {
        what,
        message: e.to_string(),
    })
}

/// Decodes a value encoded by [`encode_value`] (or by any MessagePack writer).
pub fn decode_value<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode {
        what,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RemoteErrorKind;

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::Call(Call {
                id: 7,
                reply_to: "node".into(),
                method: "greeting".into(),
                args: encode_value(&("The Great",), "args").unwrap(),
                deadline_ms: 1_700_000_000_000,
                kwargs: None,
                trace: None,
                one_way: false,
            }),
            Frame::Reply(Reply {
                id: 7,
                from: "rodario".into(),
                outcome: Outcome::Ok(encode_value("Hello", "value").unwrap()),
            }),
            Frame::Reply(Reply {
                id: 8,
                from: "rodario".into(),
                outcome: Outcome::Err(RemoteError::new(RemoteErrorKind::Handler, "boom")),
            }),
            Frame::Reply(Reply {
                id: 9,
                from: "rodario".into(),
                outcome: Outcome::Declined,
            }),
            Frame::Expect(Expect { id: 9, count: 3 }),
        ]
    }

    #[test]
    fn frames_round_trip() {
        for frame in sample_frames() {
            let bytes = encode_frame(&frame, DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(bytes[0], FRAME_VERSION);
            assert_eq!(bytes[1], Codec::MessagePack.tag());
            assert_eq!(decode_frame(&bytes, DEFAULT_MAX_FRAME).unwrap(), frame);
        }
    }

    /// `call` through the direct writer every call goes through.
    fn encode_call_of(call: &Call, limit: usize) -> Result<Bytes, crate::Error> {
        encode_call(
            call.id,
            &call.reply_to,
            &call.method,
            &call.args,
            call.deadline_ms,
            (call.trace.as_deref(), call.one_way),
            limit,
        )
    }

    #[test]
    fn borrowed_frames_encode_as_owned_ones() {
        for frame in sample_frames() {
            let borrowed = match &frame {
                Frame::Call(call) => encode_call_of(call, DEFAULT_MAX_FRAME),
                Frame::Reply(reply) => {
                    encode_reply(reply.id, &reply.from, &reply.outcome, DEFAULT_MAX_FRAME)
                }
                Frame::Expect(_) => continue,
            };
            assert_eq!(
                borrowed.unwrap(),
                encode_frame(&frame, DEFAULT_MAX_FRAME).unwrap()
            );
        }
    }

    /// Integers at every MessagePack integer marker's bounds.
    const MARKER_INTS: [u64; 10] = [
        0,
        0x7f,
        0x80,
        0xff,
        0x100,
        0xffff,
        0x1_0000,
        0xffff_ffff,
        1 << 32,
        u64::MAX,
    ];

    /// Lengths at every string and binary length marker's bounds.
    const MARKER_LENS: [usize; 7] = [0, 31, 32, 0xff, 0x100, 0xffff, 0x1_0000];

    /// Calls whose integers and lengths cross every marker, with and without the trailing
    /// fields rodario writes.
    fn marker_size_calls() -> Vec<Call> {
        let (ints, lens) = (MARKER_INTS, MARKER_LENS);
        let trace = TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: "v".repeat(40),
        };
        let mut calls = Vec::new();
        for (i, &n) in ints.iter().enumerate() {
            let len = lens[i % lens.len()];
            calls.push(Call {
                id: n,
                reply_to: "r".repeat(len),
                method: "m".repeat(lens[(i + 3) % lens.len()]),
                args: vec![7; lens[(i + 5) % lens.len()]],
                deadline_ms: ints[ints.len() - 1 - i],
                kwargs: None,
                trace: (i % 3 == 1).then(|| Box::new(trace.clone())),
                one_way: i % 2 == 1,
            });
        }
        calls
    }

    /// `Ok` replies whose integers and lengths cross every marker.
    fn marker_size_replies() -> Vec<Reply> {
        let (ints, lens) = (MARKER_INTS, MARKER_LENS);
        ints.iter()
            .enumerate()
            .map(|(i, &n)| Reply {
                id: n,
                from: "f".repeat(lens[i % lens.len()]),
                outcome: Outcome::Ok(vec![3; lens[(i + 4) % lens.len()]]),
            })
            .collect()
    }

    /// `encode_call` writes MessagePack itself: the same bytes as the serde path for every
    /// length and integer marker, with and without the trailing fields it writes.
    #[test]
    fn calls_encode_as_serde_encodes_them_at_every_marker_size() {
        for call in marker_size_calls() {
            let direct = encode_call_of(&call, usize::MAX).unwrap();
            let frame = Frame::Call(call);
            assert_eq!(direct, encode_frame(&frame, usize::MAX).unwrap());
            assert_eq!(decode_frame(&direct, usize::MAX).unwrap(), frame);
        }
    }

    /// `encode_reply` writes a value's reply itself: the same bytes as the serde path.
    #[test]
    fn replies_encode_as_serde_encodes_them_at_every_marker_size() {
        for reply in marker_size_replies() {
            let direct = encode_reply(reply.id, &reply.from, &reply.outcome, usize::MAX).unwrap();
            let frame = Frame::Reply(reply);
            assert_eq!(direct, encode_frame(&frame, usize::MAX).unwrap());
            assert_eq!(decode_frame(&direct, usize::MAX).unwrap(), frame);
        }
    }

    /// The direct reader takes every call, `Ok` reply and `Expect` rodario writes, and
    /// whatever it takes, valid or damaged, serde reads the same; what it leaves (error
    /// replies, damaged frames) is serde's.
    #[test]
    fn the_direct_reader_reads_what_serde_reads() {
        let mut frames: Vec<Frame> = marker_size_calls().into_iter().map(Frame::Call).collect();
        frames.extend(marker_size_replies().into_iter().map(Frame::Reply));
        frames.extend(sample_frames());
        frames.push(Frame::Call(Call {
            kwargs: Some(encode_value(&[("name", "Ann")], "kwargs").unwrap()),
            ..marker_size_calls().remove(1)
        }));
        frames.push(Frame::Expect(Expect {
            id: u64::MAX,
            count: u32::MAX,
        }));
        let mut bodies = Vec::new();
        for frame in &frames {
            let bytes = encode_frame(frame, usize::MAX).unwrap();
            let body = bytes[HEADER..].to_vec();
            let direct = direct::read_frame(&body);
            match frame {
                Frame::Reply(Reply {
                    outcome: Outcome::Err(_) | Outcome::Declined,
                    ..
                }) => assert_eq!(direct, None, "left to serde: {frame:?}"),
                _ => assert_eq!(direct.as_ref(), Some(frame)),
            }
            bodies.push(body);
        }
        let mut taken = 0;
        for body in damaged_copies(&bodies, 0x2545_F491_4F6C_DD1D) {
            if let Some(direct) = direct::read_frame(&body) {
                taken += 1;
                let serde: Result<Frame, _> = rmp_serde::from_slice(&body);
                assert_eq!(serde.ok(), Some(direct), "body {body:02x?}");
            }
        }
        // Damage inside a name or a value leaves a frame the direct reader still takes.
        assert!(taken > 100, "the direct reader took {taken} damaged frames");
    }

    /// A reply's id and value, if it carries one.
    fn id_and_value(frame: &Frame) -> Option<(u64, &[u8])> {
        match frame {
            Frame::Reply(Reply {
                id,
                outcome: Outcome::Ok(value),
                ..
            }) => Some((*id, value)),
            _ => None,
        }
    }

    /// A reply carrying a value is kept in its frame only when `decode_frame` reads the same
    /// reply from it, damaged frames included; every such reply rodario writes is kept.
    #[test]
    fn value_replies_read_as_decode_frame_reads_them() {
        let mut frames: Vec<Frame> = marker_size_replies()
            .into_iter()
            .map(Frame::Reply)
            .collect();
        frames.extend(sample_frames());
        let encoded: Vec<Bytes> = frames
            .iter()
            .map(|frame| encode_frame(frame, usize::MAX).unwrap())
            .collect();
        for (frame, bytes) in frames.iter().zip(&encoded) {
            match ValueReply::read(bytes.clone(), usize::MAX) {
                Ok(value) => assert_eq!(Some((value.id(), value.value())), id_and_value(frame)),
                Err(back) => {
                    assert_eq!(&back, bytes);
                    assert!(
                        !matches!(
                            frame,
                            Frame::Reply(Reply {
                                outcome: Outcome::Ok(_),
                                ..
                            })
                        ),
                        "a value reply left to decode_frame: {frame:?}"
                    );
                }
            }
        }
        assert!(ValueReply::read(encoded[0].clone(), encoded[0].len() - 1).is_err());
        let samples: Vec<Vec<u8>> = encoded.iter().map(|bytes| bytes.to_vec()).collect();
        let mut taken = 0;
        for bytes in damaged_copies(&samples, 0x5851_F42D_4C95_7F2D) {
            let bytes = Bytes::from(bytes);
            if let Ok(value) = ValueReply::read(bytes.clone(), DEFAULT_MAX_FRAME) {
                taken += 1;
                let decoded = decode_frame(&bytes, DEFAULT_MAX_FRAME).ok();
                let expected = decoded.as_ref().and_then(id_and_value);
                assert_eq!(Some((value.id(), value.value())), expected, "{bytes:02x?}");
            }
        }
        assert!(taken > 100, "kept {taken} damaged replies");
        let frame = Bytes::from(encoded[0].to_vec());
        let value = ValueReply::read(frame.clone(), usize::MAX).ok().unwrap();
        assert_eq!(Some((value.id(), value.value())), id_and_value(&frames[0]));
        assert!(frame.is_unique(), "a value reply holds a frame it shares");
    }

    /// A call with named arguments round-trips; the same call without them encodes as
    /// earlier builds wrote it (five fields), so both kinds of peer read it.
    #[test]
    fn named_arguments_are_an_optional_trailing_field() {
        let mut call = Call {
            id: 3,
            reply_to: "node".into(),
            method: "greet".into(),
            args: encode_value(&(), "args").unwrap(),
            deadline_ms: 5,
            kwargs: Some(encode_value(&[("name", "Ann")], "kwargs").unwrap()),
            trace: None,
            one_way: false,
        };
        let bytes = encode_frame(&Frame::Call(call.clone()), DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(
            decode_frame(&bytes, DEFAULT_MAX_FRAME).unwrap(),
            Frame::Call(call.clone())
        );
        call.kwargs = None;
        let bytes = encode_frame(&Frame::Call(call.clone()), DEFAULT_MAX_FRAME).unwrap();
        #[derive(Deserialize)]
        enum EarlierFrame {
            Call((u64, String, String, serde_bytes::ByteBuf, u64)),
        }
        let EarlierFrame::Call(fields) = rmp_serde::from_slice(&bytes[HEADER..]).unwrap();
        assert_eq!(fields.4, 5);
        assert_eq!(
            decode_frame(&bytes, DEFAULT_MAX_FRAME).unwrap(),
            Frame::Call(call.clone())
        );

        // A trace without named arguments: `kwargs` is written as nil to keep its place.
        call.trace = Some(Box::new(TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: String::new(),
        }));
        let bytes = encode_frame(&Frame::Call(call.clone()), DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(
            decode_frame(&bytes, DEFAULT_MAX_FRAME).unwrap(),
            Frame::Call(call.clone())
        );

        // One way, with nothing else: the fields before it are written empty.
        call.trace = None;
        call.one_way = true;
        let bytes = encode_frame(&Frame::Call(call.clone()), DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(
            decode_frame(&bytes, DEFAULT_MAX_FRAME).unwrap(),
            Frame::Call(call)
        );
    }

    #[test]
    fn refuses_oversize_frames_naming_the_limit() {
        let frame = Frame::Call(Call {
            id: 1,
            reply_to: "n".into(),
            method: "m".into(),
            args: vec![0; 2000],
            deadline_ms: 0,
            kwargs: None,
            trace: None,
            one_way: false,
        });
        let err = encode_frame(&frame, 1000).unwrap_err();
        assert!(err.to_string().contains("limit of 1000 bytes"), "{err}");
        let bytes = encode_frame(&frame, DEFAULT_MAX_FRAME).unwrap();
        assert!(matches!(
            decode_frame(&bytes, 1000),
            Err(FrameError::TooLarge { limit: 1000, .. })
        ));
    }

    #[test]
    fn refuses_wrong_version_codec_and_truncation() {
        let good = encode_frame(&sample_frames()[0], DEFAULT_MAX_FRAME).unwrap();
        let mut wrong_version = good.to_vec();
        wrong_version[0] = 9;
        assert!(matches!(
            decode_frame(&wrong_version, DEFAULT_MAX_FRAME),
            Err(FrameError::UnsupportedVersion { found: 9, .. })
        ));
        let mut wrong_codec = good.to_vec();
        wrong_codec[1] = 200;
        assert_eq!(
            decode_frame(&wrong_codec, DEFAULT_MAX_FRAME),
            Err(FrameError::UnsupportedCodec(200))
        );
        assert_eq!(
            decode_frame(&good[..1], DEFAULT_MAX_FRAME),
            Err(FrameError::Truncated { size: 1 })
        );
        assert!(matches!(
            decode_frame(&good[..good.len() - 3], DEFAULT_MAX_FRAME),
            Err(FrameError::Malformed(_))
        ));
    }

    /// A xorshift generator: the same "random" damage on every run.
    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// Damages `bytes` `times` times: a byte changed, the rest cut off, or a byte inserted.
    fn damage(bytes: &mut Vec<u8>, times: u64, next: &mut impl FnMut() -> u64) {
        for _ in 0..times {
            if bytes.is_empty() {
                break;
            }
            let at = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => bytes[at] = next() as u8,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, next() as u8),
            }
        }
    }

    /// Random bytes, and valid frames with random bytes flipped, truncated or extended,
    /// decode to errors or frames: never a panic, never a hang.
    /// 20,000 copies of `samples` (cut to 4 KiB), each damaged in one to three places.
    fn damaged_copies(samples: &[Vec<u8>], seed: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
        let mut next = xorshift(seed);
        (0..20_000).map(move |_| {
            let mut copy = samples[(next() as usize) % samples.len()].clone();
            copy.truncate(copy.len().min(4096));
            let damages = 1 + next() % 3;
            damage(&mut copy, damages, &mut next);
            copy
        })
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let valid: Vec<Vec<u8>> = sample_frames()
            .iter()
            .map(|f| encode_frame(f, DEFAULT_MAX_FRAME).unwrap().to_vec())
            .collect();
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                let len = (next() % 64) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if b.len() >= 2 {
                    b[0] = FRAME_VERSION;
                    b[1] = 1;
                }
                b
            } else {
                valid[(next() as usize) % valid.len()].clone()
            };
            let damages = next() % 4;
            damage(&mut bytes, damages, &mut next);
            let _ = decode_frame(&bytes, DEFAULT_MAX_FRAME);
        }
    }

    #[test]
    fn values_decode_from_json_shaped_messagepack() {
        #[derive(Deserialize, PartialEq, Debug)]
        struct Point {
            x: i32,
            y: i32,
        }
        // A generic client encodes {"x": 1, "y": 2} as a MessagePack map.
        let map = encode_value(
            &std::collections::BTreeMap::from([("x", 1), ("y", 2)]),
            "value",
        )
        .unwrap();
        let point: Point = decode_value(&map, "value").unwrap();
        assert_eq!(point, Point { x: 1, y: 2 });
    }
}
