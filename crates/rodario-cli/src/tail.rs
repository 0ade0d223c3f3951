//! `rodario tail`: every frame on a channel, decoded to one JSON line.

use futures_util::StreamExt;
use rodario::backend::{Channel, TransportExt};
use rodario::frame::{decode_frame, encode_frame, Expect, Frame, Outcome};
use rodario::{ActorId, ClusterName, Node, NodeId};
use serde_json::{json, Value};

use crate::failure::Failure;
use crate::json::decode;

/// Prints the frames of `channel` until Ctrl-C.
pub async fn run(node: &Node, channel: &str) -> Result<(), Failure> {
    let channel = parse_channel(channel)?;
    let mut frames = node
        .backend()
        .transport()
        .subscribe_stream(&channel)
        .await?;
    // On stderr, so stdout holds only frames; scripts and tests wait for it before they
    // send what they want to see.
    eprintln!("tailing {channel} (Ctrl-C to stop)");
    // Redis counts every subscriber of a cluster channel as a node that will say how many
    // of its actors got a call, so a silent tail would hold each cluster call on the
    // channel until its deadline: the tail answers that it has none. (NATS counts members
    // from their registrations, where the tail is not, so an answer there would be one too
    // many.)
    let answer_expects = matches!(channel, Channel::Cluster(_)) && node.backend().name() == "redis";
    loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(bytes) => {
                    let frame = decode_frame(&bytes, node.max_frame_bytes());
                    // Answered first: printing may end the process (its reader gone), and
                    // the caller must not wait on a tail that is no more.
                    if let (true, Ok(Frame::Call(call))) = (answer_expects, &frame) {
                        expect_none(node, call.id, &call.reply_to).await;
                    }
                    out!("{}", describe(&frame));
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    frames.close().await;
    Ok(())
}

/// Tells the caller of cluster call `id` that none of its replies will come from here. A
/// failure is only reported: the call then waits until its deadline, as it would without
/// the answer.
async fn expect_none(node: &Node, id: u64, reply_to: &str) {
    let sent = async {
        let frame = encode_frame(
            &Frame::Expect(Expect { id, count: 0 }),
            node.max_frame_bytes(),
        )?;
        let channel = Channel::Reply(NodeId::new(reply_to)?);
        node.backend().transport().publish(&channel, frame).await?;
        Ok::<_, rodario::Error>(())
    };
    if let Err(e) = sent.await {
        eprintln!("rodario: could not tell the caller of call {id} that the tail serves no actor ({e}); the call waits for its deadline");
    }
}

/// `actor:UUID`, `cluster:NAME` or `reply:NODE` (also `proxy:NODE`, the Redis name).
fn parse_channel(text: &str) -> Result<Channel, Failure> {
    let channel = match text.split_once(':') {
        Some(("actor", uuid)) => Channel::Actor(ActorId::new(uuid)?),
        Some(("cluster", name)) => Channel::Cluster(ClusterName::new(name)?),
        Some(("reply" | "proxy", node)) => Channel::Reply(NodeId::new(node)?),
        _ => {
            return Err(Failure::usage(format!(
                "unknown channel {text:?}: write actor:UUID, cluster:NAME or reply:NODE"
            )))
        }
    };
    Ok(channel)
}

/// One frame as a JSON object.
fn describe(frame: &Result<Frame, rodario::error::FrameError>) -> Value {
    match frame {
        Ok(Frame::Call(call)) => json!({
            "kind": "call",
            "id": call.id,
            "reply_to": call.reply_to,
            "method": call.method,
            "args": decoded(&call.args),
            "deadline_ms": call.deadline_ms,
        }),
        Ok(Frame::Reply(reply)) => {
            let outcome = match &reply.outcome {
                Outcome::Ok(value) => json!({"ok": decoded(value)}),
                Outcome::Err(error) => {
                    json!({"err": {"kind": error.kind.to_string(), "message": error.message}})
                }
                Outcome::Declined => json!("declined"),
            };
            json!({"kind": "reply", "id": reply.id, "from": reply.from, "outcome": outcome})
        }
        Ok(Frame::Expect(expect)) => {
            json!({"kind": "expect", "id": expect.id, "count": expect.count})
        }
        Err(error) => json!({"kind": "malformed", "error": error.to_string()}),
    }
}

/// A MessagePack value as JSON, or what kept it from decoding.
fn decoded(bytes: &[u8]) -> Value {
    decode(bytes).unwrap_or_else(|e| json!({"undecodable": e}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rodario::frame::{Call, Reply};

    #[test]
    fn channels() {
        assert!(matches!(parse_channel("actor:a-1"), Ok(Channel::Actor(_))));
        assert!(matches!(
            parse_channel("cluster:workers"),
            Ok(Channel::Cluster(_))
        ));
        assert!(matches!(parse_channel("reply:n1"), Ok(Channel::Reply(_))));
        assert_eq!(
            parse_channel("queue:x").unwrap_err().code,
            crate::failure::USAGE
        );
        assert_eq!(
            parse_channel("actor:").unwrap_err().code,
            crate::failure::USAGE
        );
    }

    #[test]
    fn frames_become_json() {
        let call = Frame::Call(Call {
            id: 7,
            reply_to: "n1".into(),
            method: "greeting".into(),
            args: rmp_serde::to_vec(&("Sir",)).expect("encodes"),
            deadline_ms: 9,
            kwargs: None,
            trace: None,
            one_way: false,
        });
        assert_eq!(
            describe(&Ok(call)),
            json!({"kind": "call", "id": 7, "reply_to": "n1", "method": "greeting",
                   "args": ["Sir"], "deadline_ms": 9})
        );
        let reply = Frame::Reply(Reply {
            id: 7,
            from: "a".into(),
            outcome: Outcome::Ok(rmp_serde::to_vec(&3u8).expect("encodes")),
        });
        assert_eq!(
            describe(&Ok(reply)),
            json!({"kind": "reply", "id": 7, "from": "a", "outcome": {"ok": 3}})
        );
    }
}
