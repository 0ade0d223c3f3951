//! The Python library's wire (feature `python`): pickled frames, translated at this
//! backend's edge so that core only ever sees rodario frames.
//!
//! The Python library publishes a call as the pickle `(call_id, proxy_id, method, args,
//! kwargs)` on `actor:{uuid}` or `cluster:{channel}` and answers `(call_id, value)` on
//! `proxy:{proxy_id}`. With [`RedisConfig::python_wire`](crate::RedisConfig::python_wire):
//!
//! - **Calls from Python** become rodario calls with the Python proxy as their reply
//!   channel, `kwargs` as named arguments and a deadline of
//!   [`RedisConfig::python_call_deadline`](crate::RedisConfig::python_call_deadline) (Python
//!   sends none). `_get_methods` is answered with the set of method names, each followed by
//!   `:tag` per decoration tag. A reply to Python is the pickle `(call_id, value)`; an error
//!   is `(call_id, exception)` with a built-in exception instance (`AttributeError` for an
//!   unknown method, `TypeError` for arguments that do not fit, `RuntimeError` otherwise),
//!   which the Python future returns rather than raises.
//! - **Cluster calls from Python**: Redis counts one receiver per connection, and this node
//!   subscribes on one connection, so however many of its actors joined the channel it sends the
//!   Python proxy exactly one reply (the Python proxy's reader thread dies on a reply beyond
//!   its count): the first member's value, or `False` when every member declined.
//! - **Calls to Python**: a call this node publishes on an actor or cluster channel is the
//!   pickle `(call_id, proxy_id, method, args, {}, frame)`, whose sixth field carries the
//!   rodario frame. The Python library reads the first five and ignores the sixth; rodario
//!   nodes read the sixth, so calls between rodario nodes keep their deadline and typed
//!   errors. A Python reply becomes a rodario reply (`False` to a cluster call is a decline,
//!   as the Python library counts it); discovery (`__methods__`) is sent to Python as
//!   `_get_methods`. Calls of rodario's other built-in methods (`__members__`) go to Python
//!   actors with an empty method name, which the Python library ignores.
//!
//! A pickle is checked before it is decoded ([`pickle::check`]): one that names a global,
//! calls anything, shares a container or nests too deeply is dropped with a warning, so
//! decoding never runs code, never panics and costs no more than the frame's size.

mod pickle;
mod plain;
mod registry;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rodario_core::actor::{ActorInfo, METHODS_METHOD};
use rodario_core::backend::{Channel, FrameSink};
use rodario_core::error::{BackendError, BackendErrorKind, RemoteError, RemoteErrorKind};
use rodario_core::frame::{
    decode_frame, decode_value, encode_frame, encode_value, Call, Expect, Frame, Outcome, Reply,
    DEFAULT_MAX_FRAME,
};
use rodario_core::name::NodeId;
use serde::Serialize;
use serde_pickle::{HashableValue, Value};

use plain::Plain;
pub(crate) use registry::RegistryScripts;

/// The Python library's name for discovery.
const PYTHON_METHODS: &str = "_get_methods";

/// The entries kept for calls in flight are swept of expired ones once this many were
/// added since the last sweep.
const SWEEP_EVERY: u64 = 256;

/// Pickled-frame translation state of one backend handle.
pub(crate) struct PythonWire {
    /// The registry's scripts when Python actors share it.
    pub(crate) registry: RegistryScripts,
    call_deadline: Duration,
    next_id: AtomicU64,
    /// Calls from Python proxies that local actors serve, by (proxy, the id given to them
    /// here).
    served: Mutex<HashMap<(String, u64), Served>>,
    /// Calls this handle's nodes sent as pickles, by (reply node, call id).
    sent: Mutex<HashMap<(String, u64), Sent>>,
}

struct Served {
    call_id: Value,
    discovery: bool,
    /// For a cluster call: how this node's members answered so far.
    tally: Option<Tally>,
    expires_ms: u64,
}

#[derive(Default)]
struct Tally {
    expected: Option<u32>,
    received: u32,
    answered: bool,
}

struct Sent {
    /// The actor (or cluster channel) called, for replies' `from`.
    target: String,
    cluster: bool,
    discovery: bool,
    expires_ms: u64,
}

/// What to publish in place of a rodario frame.
pub(crate) enum Outgoing {
    Publish(Bytes),
    /// Nothing: the frame was folded into another (a cluster tally's).
    Nothing,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl PythonWire {
    pub(crate) fn new(call_deadline: Duration) -> Self {
        PythonWire {
            registry: RegistryScripts::new(),
            call_deadline,
            next_id: AtomicU64::new(1),
            served: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// The rodario id of a Python call: the same on every node that gets it (the FNV-1a
    /// hash of its id string), so that the nodes of a cluster agree on the call's
    /// `singular` lease, which is named after the caller and the call id.
    fn rodario_id(&self, call_id: &Value) -> u64 {
        match call_id {
            Value::String(text) => text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            }),
            _ => self.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn sweep_due(&self, id: u64) -> bool {
        id.is_multiple_of(SWEEP_EVERY)
    }

    /// Translates a frame read on `channel` into the rodario frames to deliver.
    pub(crate) fn incoming(&self, channel: &Channel, bytes: Bytes) -> Vec<Bytes> {
        if bytes.first() != Some(&0x80) {
            return vec![bytes];
        }
        if bytes.len() > DEFAULT_MAX_FRAME {
            tracing::warn!(%channel, size = bytes.len(), "dropped a pickle over the frame size limit");
            return Vec::new();
        }
        let value = match pickle::decode(&bytes) {
            Ok(value) => value,
            Err(e) => {
                tracing::warn!(%channel, error = %e, "dropped a pickled frame");
                return Vec::new();
            }
        };
        let fields = match value {
            Value::Tuple(fields) | Value::List(fields) => fields,
            _ => {
                tracing::warn!(%channel, "dropped a pickle that is not a tuple");
                return Vec::new();
            }
        };
        let translated = match channel {
            Channel::Reply(node) => self.python_reply(node.as_str(), fields),
            _ => self.python_call(matches!(channel, Channel::Cluster(_)), fields),
        };
        match translated {
            Ok(frames) => frames,
            Err(why) => {
                tracing::warn!(%channel, %why, "dropped a pickled frame");
                Vec::new()
            }
        }
    }

    fn python_call(&self, cluster: bool, mut fields: Vec<Value>) -> Result<Vec<Bytes>, String> {
        if fields.len() == 6 {
            if let Some(Value::Bytes(frame)) = fields.pop() {
                // A rodario node's call: its own frame rides along.
                return Ok(vec![Bytes::from(frame)]);
            }
            return Err("the sixth field of a call is not a rodario frame".into());
        }
        let [call_id, proxy, method, args, kwargs]: [Value; 5] = fields
            .try_into()
            .map_err(|f: Vec<Value>| format!("a call has 5 fields, this has {}", f.len()))?;
        let method = match method {
            Value::String(method) if !method.is_empty() => method,
            // The Python library skips an empty method too.
            Value::None | Value::String(_) => return Ok(Vec::new()),
            _ => return Err("the method is not a string".into()),
        };
        let Value::String(proxy) = proxy else {
            return Err("the proxy id is not a string".into());
        };
        NodeId::new(&proxy).map_err(|e| format!("the proxy id is refused: {e}"))?;
        let args = match args {
            Value::Tuple(items) | Value::List(items) => items,
            _ => return Err("the arguments are not a tuple".into()),
        };
        let args = Plain::from_pickle(Value::List(args)).map_err(|e| e.to_string())?;
        let args = encode_value(&args, "arguments").map_err(|e| e.to_string())?;
        // Always a map, even an empty one: the host then fills the `Option` parameters a
        // Python caller left out, as Python fills defaults.
        let kwargs = match kwargs {
            Value::Dict(map) => {
                if map.keys().any(|k| pickle::key(k).is_none()) {
                    return Err("a keyword argument's name is not a string".into());
                }
                let kwargs = Plain::from_pickle(Value::Dict(map)).map_err(|e| e.to_string())?;
                Some(encode_value(&kwargs, "keyword arguments").map_err(|e| e.to_string())?)
            }
            Value::None => Some(
                encode_value(&Plain::Map(Vec::new()), "keyword arguments")
                    .map_err(|e| e.to_string())?,
            ),
            _ => return Err("the keyword arguments are not a dict".into()),
        };
        let discovery = method == PYTHON_METHODS;
        let id = self.rodario_id(&call_id);
        let deadline_ms = now_ms() + self.call_deadline.as_millis() as u64;
        let frame = Frame::Call(Call {
            id,
            reply_to: proxy.clone(),
            method: if discovery {
                METHODS_METHOD.to_owned()
            } else {
                method
            },
            args,
            deadline_ms,
            kwargs,
            trace: None,
            one_way: false,
        });
        let frame = encode_frame(&frame, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
        let mut served = locked(&self.served);
        if self.sweep_due(id) {
            let now = now_ms();
            served.retain(|_, s| s.expires_ms > now);
        }
        served.insert(
            (proxy, id),
            Served {
                call_id,
                discovery,
                tally: cluster.then(Tally::default),
                expires_ms: deadline_ms,
            },
        );
        Ok(vec![frame])
    }

    fn python_reply(&self, node: &str, fields: Vec<Value>) -> Result<Vec<Bytes>, String> {
        let [call_id, value]: [Value; 2] = fields
            .try_into()
            .map_err(|f: Vec<Value>| format!("a reply has 2 fields, this has {}", f.len()))?;
        let id = match &call_id {
            Value::String(id) => id.parse::<u64>().ok(),
            _ => None,
        }
        .ok_or("the reply's call id is not one of ours")?;
        let key = (node.to_owned(), id);
        let mut table = locked(&self.sent);
        let Some(sent) = table.get(&key) else {
            tracing::debug!(
                call = id,
                "dropped a Python reply to a call no longer waited on"
            );
            return Ok(Vec::new());
        };
        let (from, cluster, discovery) = (sent.target.clone(), sent.cluster, sent.discovery);
        if !cluster {
            table.remove(&key);
        }
        drop(table);
        let outcome = if cluster && value == Value::Bool(false) {
            Outcome::Declined
        } else if discovery {
            Outcome::Ok(describe_python_actor(&value)?)
        } else {
            let value = Plain::from_pickle(value).map_err(|e| e.to_string())?;
            Outcome::Ok(encode_value(&value, "reply").map_err(|e| e.to_string())?)
        };
        let mut frames = Vec::with_capacity(2);
        if cluster {
            // A Python member is its own connection: one reply, announced as such.
            let expect = Frame::Expect(Expect { id, count: 1 });
            frames.push(encode_frame(&expect, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?);
        }
        let reply = Frame::Reply(Reply { id, from, outcome });
        frames.push(encode_frame(&reply, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?);
        Ok(frames)
    }

    /// Translates a frame this handle publishes on `channel`.
    pub(crate) fn outgoing(
        &self,
        channel: &Channel,
        frame: Bytes,
    ) -> Result<Outgoing, BackendError> {
        match channel {
            Channel::Reply(node) => {
                if locked(&self.served).is_empty() {
                    return Ok(Outgoing::Publish(frame));
                }
                self.reply_to_python(node.as_str(), frame)
            }
            _ => self.call_to_python(channel, frame),
        }
    }

    fn call_to_python(&self, channel: &Channel, frame: Bytes) -> Result<Outgoing, BackendError> {
        let Ok(Frame::Call(call)) = decode_frame(&frame, usize::MAX) else {
            return Ok(Outgoing::Publish(frame));
        };
        let cluster = matches!(channel, Channel::Cluster(_));
        let discovery = call.method == METHODS_METHOD;
        let method = if discovery {
            PYTHON_METHODS.to_owned()
        } else if call.method.starts_with("__") {
            String::new()
        } else {
            call.method.clone()
        };
        let args = match decode_value::<Plain>(&call.args, "arguments") {
            Ok(Plain::Nil) => Ok(Value::List(Vec::new())),
            Ok(plain) => plain.into_pickle(),
            Err(e) => return Err(invalid(format!("arguments for Python: {e}"))),
        };
        let args = match args {
            Ok(Value::List(items)) => Value::Tuple(items),
            Ok(_) => return Err(invalid("arguments for Python are not a sequence".into())),
            Err(e) => return Err(invalid(format!("arguments for Python: {e}"))),
        };
        let tuple = Value::Tuple(vec![
            Value::String(call.id.to_string()),
            Value::String(call.reply_to.clone()),
            Value::String(method),
            args,
            Value::Dict(Default::default()),
            Value::Bytes(frame.to_vec()),
        ]);
        let pickled =
            pickle::encode(&tuple).map_err(|e| invalid(format!("a call to pickle: {e}")))?;
        let target = match channel {
            Channel::Actor(id) => id.to_string(),
            other => other.to_string(),
        };
        let mut sent = locked(&self.sent);
        if self.sweep_due(call.id) {
            let now = now_ms();
            sent.retain(|_, s| s.expires_ms > now);
        }
        sent.insert(
            (call.reply_to, call.id),
            Sent {
                target,
                cluster,
                discovery,
                expires_ms: call.deadline_ms,
            },
        );
        Ok(Outgoing::Publish(Bytes::from(pickled)))
    }

    fn reply_to_python(&self, node: &str, frame: Bytes) -> Result<Outgoing, BackendError> {
        let (id, kind) = match decode_frame(&frame, usize::MAX) {
            Ok(Frame::Reply(reply)) => (reply.id, Answer::Reply(reply.outcome)),
            Ok(Frame::Expect(expect)) => (expect.id, Answer::Expect(expect.count)),
            _ => return Ok(Outgoing::Publish(frame)),
        };
        let key = (node.to_owned(), id);
        let mut served = locked(&self.served);
        let Some(entry) = served.get_mut(&key) else {
            return Ok(Outgoing::Publish(frame));
        };
        let send = match (&mut entry.tally, kind) {
            (None, Answer::Reply(outcome)) => Some(outcome),
            (None, Answer::Expect(_)) => None,
            (Some(tally), answer) => {
                let mut send = None;
                match answer {
                    Answer::Expect(count) => tally.expected = Some(count),
                    Answer::Reply(outcome) => {
                        tally.received += 1;
                        if !tally.answered && !matches!(outcome, Outcome::Declined) {
                            tally.answered = true;
                            send = Some(outcome);
                        }
                    }
                }
                if tally.finished() && !tally.answered {
                    // Every member here declined: the Python library's decline.
                    tally.answered = true;
                    send = Some(Outcome::Declined);
                }
                send
            }
        };
        let done = entry.tally.as_ref().is_none_or(Tally::finished);
        let call_id = entry.call_id.clone();
        let discovery = entry.discovery;
        if done {
            served.remove(&key);
        }
        drop(served);
        let Some(outcome) = send else {
            return Ok(Outgoing::Nothing);
        };
        let pickled = match outcome {
            Outcome::Declined => pickle::encode(&Value::Tuple(vec![call_id, Value::Bool(false)])),
            Outcome::Ok(value) => {
                let value = if discovery {
                    python_method_names(&value)
                } else {
                    decode_value::<Plain>(&value, "reply")
                        .map_err(|e| e.to_string())
                        .and_then(|plain| plain.into_pickle().map_err(|e| e.to_string()))
                };
                match value {
                    Ok(value) => pickle::encode(&Value::Tuple(vec![call_id, value])),
                    Err(e) => {
                        let message = format!("the reply does not cross to Python: {e}");
                        exception_reply(
                            &call_id,
                            &RemoteError::new(RemoteErrorKind::Handler, message),
                        )
                    }
                }
            }
            Outcome::Err(error) => exception_reply(&call_id, &error),
        }
        .map_err(|e| invalid(format!("a reply to pickle: {e}")))?;
        Ok(Outgoing::Publish(Bytes::from(pickled)))
    }
}

/// A frame a local actor sends towards a Python proxy.
enum Answer {
    Reply(Outcome),
    Expect(u32),
}

impl Tally {
    fn finished(&self) -> bool {
        self.expected
            .is_some_and(|expected| self.received >= expected)
    }
}

fn invalid(message: String) -> BackendError {
    BackendError::new(crate::NAME, BackendErrorKind::InvalidInput, message)
}

/// `(call_id, exception)` for `error`, the exception a built-in one a Python caller knows.
fn exception_reply(call_id: &Value, error: &RemoteError) -> Result<Vec<u8>, serde_pickle::Error> {
    let class = match error.kind {
        RemoteErrorKind::UnknownMethod => "AttributeError",
        RemoteErrorKind::BadArguments => "TypeError",
        _ => "RuntimeError",
    };
    let message = format!("rodario {}: {}", error.kind, error.message);
    pickle::encode_exception_reply(call_id, class, &message)
}

/// A rodario actor's description as the Python library's `_get_methods` answers: the set
/// of `name` or `name:tag:tag`.
fn python_method_names(encoded: &[u8]) -> Result<Value, String> {
    let info: ActorInfo = decode_value(encoded, "description").map_err(|e| e.to_string())?;
    let names: BTreeSet<HashableValue> = info
        .methods
        .iter()
        .map(|m| {
            let mut name = m.name.clone();
            for tag in &m.tags {
                name.push(':');
                name.push_str(tag);
            }
            HashableValue::String(name)
        })
        .collect();
    Ok(Value::Set(names))
}

/// A Python actor's `_get_methods` answer as a rodario description (type `python`, no
/// parameter information).
fn describe_python_actor(names: &Value) -> Result<Vec<u8>, String> {
    #[derive(Serialize)]
    struct Description {
        type_name: &'static str,
        methods: Vec<Method>,
    }
    #[derive(Serialize)]
    struct Method {
        name: String,
        tags: Vec<String>,
    }
    let listed: Vec<&str> = match names {
        Value::Set(set) | Value::FrozenSet(set) => set.iter().filter_map(pickle::key).collect(),
        Value::List(items) | Value::Tuple(items) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            })
            .collect(),
        _ => return Err("a Python actor's method list is not a set of names".into()),
    };
    let methods = listed
        .into_iter()
        .map(|entry| {
            let mut parts = entry.split(':');
            let name = parts.next().unwrap_or_default().to_owned();
            Method {
                name,
                tags: parts.map(str::to_owned).collect(),
            }
        })
        .collect();
    let description = Description {
        type_name: "python",
        methods,
    };
    encode_value(&description, "description").map_err(|e| e.to_string())
}

/// Delivers pickled frames translated, and rodario frames as they are.
pub(crate) struct PythonSink {
    pub(crate) wire: Arc<PythonWire>,
    pub(crate) channel: Channel,
    pub(crate) inner: Arc<dyn FrameSink>,
}

impl FrameSink for PythonSink {
    fn deliver(&self, frame: Bytes) {
        for frame in self.wire.incoming(&self.channel, frame) {
            self.inner.deliver(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rodario_core::name::ActorId;

    fn actor_channel() -> Channel {
        Channel::Actor(ActorId::new("a1").unwrap())
    }

    fn python_call(method: &str, args: Vec<Value>, kwargs: Vec<(&str, Value)>) -> Bytes {
        let kwargs = kwargs
            .into_iter()
            .map(|(k, v)| (HashableValue::String(k.into()), v))
            .collect();
        let tuple = Value::Tuple(vec![
            Value::String("py-call-1".into()),
            Value::String("pyproxy".into()),
            Value::String(method.into()),
            Value::Tuple(args),
            Value::Dict(kwargs),
        ]);
        Bytes::from(pickle::encode(&tuple).unwrap())
    }

    fn only_call(frames: Vec<Bytes>) -> Call {
        assert_eq!(frames.len(), 1);
        match decode_frame(&frames[0], DEFAULT_MAX_FRAME).unwrap() {
            Frame::Call(call) => call,
            other => panic!("not a call: {other:?}"),
        }
    }

    #[test]
    fn a_python_call_becomes_a_rodario_call_and_its_reply_a_pickle() {
        let wire = PythonWire::new(Duration::from_secs(30));
        let frames = wire.incoming(
            &actor_channel(),
            python_call(
                "greet",
                vec![Value::String("Ann".into())],
                vec![("times", Value::I64(2))],
            ),
        );
        let call = only_call(frames);
        assert_eq!(call.method, "greet");
        assert_eq!(call.reply_to, "pyproxy");
        let args: (String,) = decode_value(&call.args, "args").unwrap();
        assert_eq!(args.0, "Ann");
        assert!(call.kwargs.is_some());
        assert!(call.deadline_ms > now_ms() + 29_000);

        let reply = Frame::Reply(Reply {
            id: call.id,
            from: "a1".into(),
            outcome: Outcome::Ok(encode_value("Hello, Ann", "v").unwrap()),
        });
        let reply = encode_frame(&reply, DEFAULT_MAX_FRAME).unwrap();
        let node = NodeId::new("pyproxy").unwrap();
        let Outgoing::Publish(pickled) = wire.outgoing(&Channel::Reply(node), reply).unwrap()
        else {
            panic!("nothing published");
        };
        let value = pickle::decode(&pickled).unwrap();
        assert_eq!(
            value,
            Value::Tuple(vec![
                Value::String("py-call-1".into()),
                Value::String("Hello, Ann".into())
            ])
        );
        assert!(locked(&wire.served).is_empty());
    }

    #[test]
    fn a_node_answers_a_python_cluster_call_once() {
        let wire = PythonWire::new(Duration::from_secs(30));
        let cluster = Channel::Cluster("workers".parse().unwrap());
        let call = only_call(wire.incoming(&cluster, python_call("work", vec![], vec![])));
        let node = Channel::Reply(NodeId::new("pyproxy").unwrap());
        let frame = |f: Frame| encode_frame(&f, DEFAULT_MAX_FRAME).unwrap();
        let expect = frame(Frame::Expect(Expect {
            id: call.id,
            count: 3,
        }));
        assert!(matches!(
            wire.outgoing(&node, expect).unwrap(),
            Outgoing::Nothing
        ));
        let declined = frame(Frame::Reply(Reply {
            id: call.id,
            from: "m1".into(),
            outcome: Outcome::Declined,
        }));
        assert!(matches!(
            wire.outgoing(&node, declined).unwrap(),
            Outgoing::Nothing
        ));
        let ok = frame(Frame::Reply(Reply {
            id: call.id,
            from: "m2".into(),
            outcome: Outcome::Ok(encode_value(&7, "v").unwrap()),
        }));
        let Outgoing::Publish(pickled) = wire.outgoing(&node, ok.clone()).unwrap() else {
            panic!("the first value is sent");
        };
        assert_eq!(
            pickle::decode(&pickled).unwrap(),
            Value::Tuple(vec![Value::String("py-call-1".into()), Value::I64(7)])
        );
        assert!(matches!(
            wire.outgoing(&node, ok).unwrap(),
            Outgoing::Nothing
        ));
        assert!(locked(&wire.served).is_empty());
    }

    #[test]
    fn errors_reach_python_as_exceptions() {
        let wire = PythonWire::new(Duration::from_secs(30));
        let call = only_call(wire.incoming(&actor_channel(), python_call("nope", vec![], vec![])));
        let error = RemoteError::new(RemoteErrorKind::UnknownMethod, "no method named \"nope\"");
        let reply = encode_frame(
            &Frame::Reply(Reply {
                id: call.id,
                from: "a1".into(),
                outcome: Outcome::Err(error),
            }),
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        let node = Channel::Reply(NodeId::new("pyproxy").unwrap());
        let Outgoing::Publish(pickled) = wire.outgoing(&node, reply).unwrap() else {
            panic!("nothing published");
        };
        assert!(pickled
            .windows(24)
            .any(|w| w == b"builtins\nAttributeError\n"));
    }

    #[test]
    fn calls_to_python_carry_the_rodario_frame_and_replies_come_back() {
        let wire = PythonWire::new(Duration::from_secs(30));
        let call = Call {
            id: 41,
            reply_to: "rustnode".into(),
            method: "add".into(),
            args: encode_value(&(2, 3), "args").unwrap(),
            deadline_ms: now_ms() + 5_000,
            kwargs: None,
            trace: None,
            one_way: false,
        };
        let frame = encode_frame(&Frame::Call(call.clone()), DEFAULT_MAX_FRAME).unwrap();
        let Outgoing::Publish(pickled) = wire.outgoing(&actor_channel(), frame.clone()).unwrap()
        else {
            panic!("nothing published");
        };
        // A rodario node reads the frame inside.
        assert_eq!(
            wire.incoming(&actor_channel(), pickled.clone()),
            vec![frame]
        );
        let Value::Tuple(fields) = pickle::decode(&pickled).unwrap() else {
            panic!("not a tuple")
        };
        assert_eq!(fields[3], Value::Tuple(vec![Value::I64(2), Value::I64(3)]));

        let python_reply = pickle::encode(&Value::Tuple(vec![
            Value::String("41".into()),
            Value::I64(5),
        ]))
        .unwrap();
        let node = Channel::Reply(NodeId::new("rustnode").unwrap());
        let frames = wire.incoming(&node, Bytes::from(python_reply));
        let Frame::Reply(reply) = decode_frame(&frames[0], DEFAULT_MAX_FRAME).unwrap() else {
            panic!("not a reply")
        };
        assert_eq!((reply.id, reply.from.as_str()), (41, "a1"));
        assert_eq!(reply.outcome, Outcome::Ok(encode_value(&5, "v").unwrap()));
    }

    #[test]
    fn python_method_lists_become_descriptions() {
        let names = Value::Set(
            ["add", "work:singular"]
                .into_iter()
                .map(|n| HashableValue::String(n.into()))
                .collect(),
        );
        let info: ActorInfo = decode_value(&describe_python_actor(&names).unwrap(), "d").unwrap();
        assert_eq!(info.type_name, "python");
        assert_eq!(info.methods[1].name, "work");
        assert_eq!(info.methods[1].tags, vec!["singular".to_owned()]);
    }
}
