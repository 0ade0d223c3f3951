//! [`Transport`]: each channel's subscribers, replaced whole when one comes or goes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rodario_core::backend::{Channel, Delivery, FrameSink, Subscription, Transport};
use rodario_core::error::BackendError;

use crate::broker::BrokerState;
use crate::names::ChannelKey;
use crate::{locked, MemoryConnection};

/// The subscribers of one channel. Replaced whole when one comes or goes (copy on write),
/// so that a publish takes the broker's lock only to clone an `Arc`, and delivers without it.
#[derive(Clone, Default)]
pub(crate) struct Subscribers {
    pub(crate) list: Vec<Subscriber>,
    /// Distinct connections among them: what a publish reports, as Redis counts.
    connections: usize,
}

#[derive(Clone)]
pub(crate) struct Subscriber {
    connection: u64,
    id: u64,
    sink: Arc<dyn FrameSink>,
}

impl Subscribers {
    fn with(&self, subscriber: Subscriber) -> Self {
        let mut list = self.list.clone();
        list.push(subscriber);
        Self::counted(list)
    }

    fn without(&self, id: u64) -> Self {
        Self::counted(self.list.iter().filter(|s| s.id != id).cloned().collect())
    }

    fn counted(list: Vec<Subscriber>) -> Self {
        let mut connections: Vec<u64> = list.iter().map(|s| s.connection).collect();
        connections.sort_unstable();
        connections.dedup();
        Subscribers {
            connections: connections.len(),
            list,
        }
    }
}

/// Ends a subscription when dropped (closed or not).
struct SubscriptionGuard {
    state: Arc<BrokerState>,
    key: ChannelKey,
    id: u64,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let mut channels = locked(&self.state.channels);
        if let Some(subscribers) = channels.get(&self.key) {
            let remaining = subscribers.without(self.id);
            if remaining.list.is_empty() {
                channels.remove(&self.key);
            } else {
                channels.insert(self.key.clone(), Arc::new(remaining));
            }
        }
    }
}

impl MemoryConnection {
    /// Hands `frame` to every subscriber of `channel`.
    fn deliver(&self, channel: &Channel, frame: Bytes) -> Delivery {
        let subscribers = locked(&self.state.channels)
            .get(&self.channel_key(channel))
            .cloned();
        let Some(subscribers) = subscribers else {
            return Delivery::Exact(0);
        };
        // The last subscriber (the only one, for a call) takes the frame itself: a clone of
        // a frame that was never shared costs an allocation.
        if let Some((last, others)) = subscribers.list.split_last() {
            for subscriber in others {
                subscriber.sink.deliver(frame.clone());
            }
            last.sink.deliver(frame);
        }
        Delivery::Exact(subscribers.connections)
    }
}

#[async_trait]
impl Transport for MemoryConnection {
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError> {
        Ok(self.deliver(channel, frame))
    }

    /// Every publish is done at once: the subscribers' sinks take the frame here.
    fn try_publish(
        &self,
        channel: &Channel,
        frame: Bytes,
    ) -> Result<Result<Delivery, BackendError>, Bytes> {
        Ok(Ok(self.deliver(channel, frame)))
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        let key = self.channel_key(channel);
        let id = self.state.next_connection.fetch_add(1, Ordering::Relaxed);
        {
            let mut channels = locked(&self.state.channels);
            let subscribers = channels
                .get(&key)
                .map_or_else(Subscribers::default, |s| Subscribers::clone(s));
            let subscriber = Subscriber {
                connection: self.id,
                id,
                sink,
            };
            channels.insert(key.clone(), Arc::new(subscribers.with(subscriber)));
        }
        let guard = SubscriptionGuard {
            state: self.state.clone(),
            key,
            id,
        };
        Ok(Subscription::new(async move { drop(guard) }))
    }

    fn counts_receivers(&self) -> bool {
        true
    }
}
