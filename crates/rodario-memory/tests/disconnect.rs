//! A backend that reports a dropped connection makes nodes fail the calls in flight at
//! once, instead of leaving them to their deadline.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rodario_core::backend::{
    Backend, Channel, ConnectionState, Delivery, FrameSink, Subscription, Transport,
};
use rodario_core::error::{BackendError, BackendErrorKind};
use rodario_core::testkit::actors::Counter;
use rodario_core::{Error, Node};
use rodario_memory::MemoryBroker;
use tokio::sync::watch;
use tokio::time::Instant;

/// The memory transport, with a connection state the test controls.
struct Flaky {
    inner: Arc<dyn Transport>,
    state: watch::Sender<ConnectionState>,
}

#[async_trait]
impl Transport for Flaky {
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError> {
        self.inner.publish(channel, frame).await
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        self.inner.subscribe(channel, sink).await
    }

    fn counts_receivers(&self) -> bool {
        self.inner.counts_receivers()
    }

    fn connection_state(&self) -> Option<watch::Receiver<ConnectionState>> {
        Some(self.state.subscribe())
    }
}

#[tokio::test]
async fn calls_in_flight_fail_when_the_connection_drops() {
    let broker = MemoryBroker::new();
    let host = Node::new(broker.backend());
    let plain = broker.backend();
    let (state, _) = watch::channel(ConnectionState::Connected);
    let flaky = Arc::new(Flaky {
        inner: plain.transport().clone(),
        state,
    });
    let caller = Node::builder(Backend::new(
        "flaky",
        flaky.clone(),
        plain.registry().clone(),
        plain.locks().clone(),
    ))
    .call_timeout(Duration::from_secs(30))
    .build();
    let _actor = host
        .spawn(Counter::named("c"))
        .uuid("c")
        .start()
        .await
        .unwrap();
    let proxy: rodario_core::testkit::actors::CounterProxy =
        caller.registry().get_proxy("c").await.unwrap();
    let slow = proxy.sleep_ms(1_500).await.unwrap();
    let started = Instant::now();
    flaky.state.send(ConnectionState::Disconnected).unwrap();
    match slow.await {
        Err(Error::Backend(e)) => assert_eq!(e.kind(), BackendErrorKind::Connection),
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    flaky.state.send(ConnectionState::Connected).unwrap();
    // Once reconnected, calls work again.
    let proxy = proxy.with_timeout(Duration::from_secs(10));
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 1);
}
