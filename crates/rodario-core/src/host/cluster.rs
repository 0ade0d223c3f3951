//! Cluster channels on the host side: which local actors joined which channel, the
//! subscription each channel needs, and the fan-out of each cluster call to the members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::handler::ClusterHandler;
use super::inbox::{decode_call, Envelope, Via};
use super::liveness::Liveness;
use super::outbox::{reply_later, Outbox};
use crate::backend::{Channel, FrameSink, Subscription};
use crate::error::{RemoteError, RemoteErrorKind, Result};
use crate::frame::{Expect, Frame, Outcome};
use crate::name::{ActorId, ClusterName};
use crate::shared::Shared;
use crate::sync::locked;

/// A local actor on a cluster channel.
#[derive(Clone)]
pub(crate) struct ClusterMember {
    pub(crate) actor: ActorId,
    pub(crate) mailbox: mpsc::Sender<Envelope>,
    pub(crate) handler: Option<Arc<dyn ClusterHandler>>,
}

/// One cluster channel this node subscribed to, and its local members.
struct ClusterEntry {
    members: Arc<Mutex<Vec<ClusterMember>>>,
    subscription: Subscription,
    fan_out: JoinHandle<()>,
}

/// Cluster calls a node may have queued for fanning out before further ones are dropped.
const CLUSTER_QUEUE: usize = 4096;

/// The cluster channels a node's actors joined.
pub(crate) struct Clusters {
    shared: Arc<Shared>,
    liveness: Arc<Liveness>,
    entries: tokio::sync::Mutex<HashMap<ClusterName, ClusterEntry>>,
}

impl Clusters {
    pub(crate) fn new(shared: Arc<Shared>, liveness: Arc<Liveness>) -> Self {
        Clusters {
            shared,
            liveness,
            entries: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Adds `member` to this node's local members of `channel`, subscribing the node to the
    /// channel (and recording its membership, where the broker cannot count receivers) if
    /// it is the first.
    pub(crate) async fn join(&self, channel: &ClusterName, member: ClusterMember) -> Result<()> {
        let mut entries = self.entries.lock().await;
        if let Some(entry) = entries.get(channel) {
            let mut members = locked(&entry.members);
            members.retain(|m| m.actor != member.actor);
            members.push(member);
            return Ok(());
        }
        self.liveness.join(channel).await?;
        let (frames, queued) = mpsc::channel(CLUSTER_QUEUE);
        let sink = Arc::new(ClusterSink {
            channel: channel.clone(),
            frames,
        });
        let subscription = self
            .shared
            .backend
            .transport()
            .subscribe(&Channel::Cluster(channel.clone()), sink)
            .await?;
        let members = Arc::new(Mutex::new(vec![member]));
        let fan_out = tokio::spawn(fan_out(
            Arc::downgrade(&self.shared),
            channel.clone(),
            queued,
            members.clone(),
        ));
        entries.insert(
            channel.clone(),
            ClusterEntry {
                members,
                subscription,
                fan_out,
            },
        );
        Ok(())
    }

    /// Removes `actor` from this node's members of `channel`, unsubscribing when it was the
    /// last. Returns whether it was a member.
    pub(crate) async fn part(&self, channel: &ClusterName, actor: &ActorId) -> Result<bool> {
        let mut entries = self.entries.lock().await;
        let Some(entry) = entries.get(channel) else {
            return Ok(false);
        };
        let (was_member, now_empty) = {
            let mut members = locked(&entry.members);
            let before = members.len();
            members.retain(|m| &m.actor != actor);
            (members.len() != before, members.is_empty())
        };
        if now_empty {
            if let Some(entry) = entries.remove(channel) {
                // Closing the subscription drops the sink, which ends the fan-out task once
                // it has handled the calls already queued.
                entry.subscription.close().await;
                let _ = entry.fan_out.await;
            }
            self.liveness.part(channel).await?;
        }
        Ok(was_member)
    }

    /// Ends every channel's fan-out at once, as a crashed process would.
    #[cfg(feature = "testkit")]
    pub(crate) async fn crash(&self) {
        for (_, entry) in self.entries.lock().await.drain() {
            entry.fan_out.abort();
        }
    }
}

/// Queues a cluster channel's frames for its fan-out task (which publishes, so cannot run
/// inside a sink).
struct ClusterSink {
    channel: ClusterName,
    frames: mpsc::Sender<Bytes>,
}

impl FrameSink for ClusterSink {
    fn deliver(&self, frame: Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.frames.try_send(frame) {
            tracing::warn!(channel = %self.channel, "cluster queue full: dropped a cluster call");
        }
    }
}

/// Reads a cluster channel, tells each caller how many local members got its call, and
/// hands the call to each member's mailbox (shedding with an error when one is full).
async fn fan_out(
    shared: Weak<Shared>,
    channel: ClusterName,
    mut queued: mpsc::Receiver<Bytes>,
    members: Arc<Mutex<Vec<ClusterMember>>>,
) {
    let mut last_caller = None;
    let mut outbox = Outbox::new();
    loop {
        let bytes = tokio::select! {
            biased;
            () = outbox.progress(), if outbox.is_busy() => continue,
            next = queued.recv() => match next {
                Some(bytes) => bytes,
                None => break,
            },
        };
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let max_frame = shared.config.max_frame;
        let Some((call, reply_to)) = decode_call(max_frame, &bytes, &channel, &mut last_caller)
        else {
            continue;
        };
        if shared.caller_gave_up(call.deadline_ms) {
            tracing::debug!(
                call = call.id,
                "skipped a cluster call whose caller gave up"
            );
            continue;
        }
        let members: Vec<ClusterMember> = locked(&members).clone();
        let expect = Frame::Expect(Expect {
            id: call.id,
            count: members.len() as u32,
        });
        match shared.encode(&expect) {
            Ok(bytes) => {
                let to = Channel::Reply(reply_to.clone());
                let sender = shared.clone();
                outbox
                    .send(Box::pin(async move {
                        if let Err(e) = sender.publish(&to, bytes).await {
                            tracing::warn!(error = %e, "could not tell a cluster caller what to expect");
                        }
                    }))
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, "could not encode an expect frame"),
        }
        let call = Arc::new(call);
        for member in members {
            let envelope = Envelope {
                call: call.clone(),
                reply_to: reply_to.clone(),
                via: Via::Cluster {
                    channel: channel.clone(),
                    handler: member.handler.clone(),
                },
            };
            if let Err(refused) = member.mailbox.try_send(envelope) {
                let kind = match refused {
                    mpsc::error::TrySendError::Full(_) => RemoteErrorKind::Overloaded,
                    mpsc::error::TrySendError::Closed(_) => RemoteErrorKind::Stopped,
                };
                let error = RemoteError::new(kind, "the call was not queued");
                let reply = reply_later(
                    &shared,
                    reply_to.clone(),
                    call.id,
                    member.actor,
                    Outcome::Err(error),
                );
                outbox.send(reply).await;
            }
        }
    }
    outbox.flush().await;
}
