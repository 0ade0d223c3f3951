//! [`Transport`]: `PUBLISH`, and `SUBSCRIBE`/`UNSUBSCRIBE` of the channels local
//! subscriptions share (the frames themselves are routed by [`crate::pubsub`]); on a
//! cluster, `SPUBLISH`, `SSUBSCRIBE` and `SUNSUBSCRIBE`.

use std::hash::BuildHasher;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::join_all;
use rodario_core::backend::{
    Channel, ConnectionState, Delivery, FrameSink, Group, Subscription, Transport,
};
use rodario_core::error::BackendError;
use tokio::sync::watch;

use crate::names::lease_prefix;
use crate::pubsub::{self, CloseGuard};
use crate::{Handle, Inner};

impl Inner {
    fn channel_lock(&self, name: &str) -> &tokio::sync::Mutex<()> {
        let index = self.hasher.hash_one(name) as usize % self.channel_locks.len();
        &self.channel_locks[index]
    }

    /// Subscribes `channel` again (the cluster lost it) if someone here still listens to it.
    pub(crate) async fn resubscribe(&self, channel: &str) -> Result<(), BackendError> {
        let _ordered = self.channel_lock(channel).lock().await;
        if !self.dispatch.wants(channel) {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let command = self.connection.subscribe_command();
        self.bounded(command, async { connection.subscribe(channel).await })
            .await
    }

    /// Checks that commands work again after the connection dropped. On one server, a
    /// `PING` (the connection manager resubscribes every channel before it serves a
    /// command). On a cluster, every channel is subscribed anew (a subscription lives on
    /// one node, which may be the one lost), and a registry script checks that the primary
    /// of the registry's slot takes writes again, as re-registering needs.
    pub(crate) async fn restore(&self) -> Result<(), BackendError> {
        if !self.connection.is_cluster() {
            return self.ping().await;
        }
        let channels = self.dispatch.wanted();
        join_all(channels.iter().map(|channel| self.resubscribe(channel)))
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;
        let set = self.set_name(Group::Actors);
        // No member is named "": the script only reads, but as a script it runs on the
        // slot's primary only.
        let mut script = self.scripts.contains.key(&set);
        script.key(lease_prefix(&set)).arg("");
        self.invoke::<i64>("registry check", &script).await?;
        Ok(())
    }

    /// Removes local subscription `id` (or only dropped ones) from `channel` and, when
    /// nobody here listens any more, unsubscribes at the server. With `stray`, unsubscribes
    /// even when the channel is not known here (the server delivered it anyway).
    pub(crate) async fn unsubscribe_local(&self, channel: &str, id: Option<u64>, stray: bool) {
        let _ordered = self.channel_lock(channel).lock().await;
        if !self.dispatch.remove(channel, id, stray) {
            return;
        }
        let mut connection = self.connection.clone();
        let result = self
            .bounded(self.connection.unsubscribe_command(), async {
                connection.unsubscribe(channel).await
            })
            .await;
        self.dispatch.forget(channel);
        if let Err(e) = result {
            // The connection is down; on reconnect the channel is resubscribed, its first
            // frame is seen as stray and it is unsubscribed then.
            tracing::warn!(%channel, error = %e, "could not unsubscribe from a redis channel");
        }
    }
}

/// Removes a local subscription whose `SUBSCRIBE` did not complete, unless disarmed by
/// clearing `id`. A `SUBSCRIBE` that reached the server anyway makes its frames stray ones,
/// which the reaper unsubscribes.
struct UndoAdd<'a> {
    dispatch: &'a pubsub::Dispatch,
    channel: &'a str,
    id: Option<u64>,
}

impl Drop for UndoAdd<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.dispatch.remove(self.channel, Some(id), false);
            self.dispatch.forget(self.channel);
        }
    }
}

#[async_trait]
impl Transport for Handle {
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError> {
        #[cfg(feature = "python")]
        let frame = match &self.python {
            None => frame,
            Some(wire) => match wire.outgoing(channel, frame)? {
                crate::python::Outgoing::Publish(frame) => frame,
                crate::python::Outgoing::Nothing => return Ok(Delivery::Unknown),
            },
        };
        let command = self.connection.publish_command();
        let name = self.channel_arg(channel);
        // Sized up front: a growing command buffer costs a reallocation or two per publish.
        let mut cmd = redis::Cmd::with_capacity(3, command.len() + name.len() + frame.len());
        cmd.arg(command).arg(name).arg(frame.as_ref());
        let receivers: u64 = self.query(command, &cmd).await?;
        Ok(Delivery::Exact(
            usize::try_from(receivers).unwrap_or(usize::MAX),
        ))
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        #[cfg(feature = "python")]
        let sink: Arc<dyn FrameSink> = match &self.python {
            None => sink,
            Some(wire) => Arc::new(crate::python::PythonSink {
                wire: wire.clone(),
                channel: channel.clone(),
                inner: sink,
            }),
        };
        let name = self.channel_name(channel);
        let (id, open, first) = {
            let _ordered = self.channel_lock(&name).lock().await;
            let (id, open, first) = self.dispatch.add(&name, sink);
            if first {
                // Undoes the local subscription if the SUBSCRIBE fails or this future is
                // dropped while waiting for it (a caller's deadline passed): otherwise the
                // channel would look subscribed here and the next subscriber would skip
                // the SUBSCRIBE. Dropped before `_ordered`, so under the channel's lock.
                let mut undo = UndoAdd {
                    dispatch: &self.dispatch,
                    channel: &name,
                    id: Some(id),
                };
                let mut connection = self.connection.clone();
                // Returns once the server acknowledged the SUBSCRIBE: frames published from
                // now on are delivered.
                let command = self.connection.subscribe_command();
                self.bounded(command, async { connection.subscribe(&name).await })
                    .await?;
                undo.id = None;
            }
            (id, open, first)
        };
        tracing::debug!(channel = %name, first, "subscribed");
        let inner = self.0.clone();
        let mut guard = CloseGuard {
            dispatch: self.dispatch.clone(),
            channel: name,
            open,
            closed: false,
        };
        Ok(Subscription::new(async move {
            let channel = guard.channel.clone();
            // Boxed only once it runs: a subscription keeps this future unpolled for its
            // whole life, at the size of its largest state (an idle actor's memory).
            Box::pin(inner.unsubscribe_local(&channel, Some(id), false)).await;
            guard.disarm();
        }))
    }

    fn counts_receivers(&self) -> bool {
        true
    }

    fn connection_state(&self) -> Option<watch::Receiver<ConnectionState>> {
        Some(self.dispatch.connection_state())
    }
}
