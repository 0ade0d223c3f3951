//! The connection: connecting, the round-trip probe, and the [`Transport`] implementation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::{ConnectErrorKind, ConnectOptions, Event, ServerAddr, StatusCode};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rodario_core::backend::{
    Channel, ConnectionState, Delivery, FrameSink, Subscription, Transport,
};
use rodario_core::error::{BackendError, BackendErrorKind};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{redact, Auth, NatsConfig};
use crate::names;
use crate::NAME;

pub(crate) fn error(kind: BackendErrorKind, message: impl Into<String>) -> BackendError {
    BackendError::new(NAME, kind, message)
}

pub(crate) fn not_connected() -> BackendError {
    error(
        BackendErrorKind::Connection,
        "not connected to the NATS server (the client is reconnecting in the background)",
    )
}

fn dropped(what: &str) -> BackendError {
    error(
        BackendErrorKind::Connection,
        format!(
            "the connection to the NATS server dropped while {what} waited for its answer \
             (the client is reconnecting in the background)"
        ),
    )
}

fn timed_out(what: &str, after: Duration) -> BackendError {
    error(
        BackendErrorKind::Connection,
        format!("{what} got no answer from the NATS server within {after:?}"),
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation: a poisoned map is still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A round trip waiting for its marker to come back.
struct Waiter {
    /// The server answered the checked publish of this round trip with "no responders".
    no_responders: bool,
    done: Option<oneshot::Sender<bool>>,
}

/// Round trips in flight, shared with the task that reads the probe inbox.
#[derive(Default)]
struct Probes {
    waiters: Mutex<HashMap<u64, Waiter>>,
}

impl Probes {
    /// Handles a message on `{inbox}.{token}`: `r{n}` is the server's status for the checked
    /// publish `n`, `b{n}` the echo of round trip `n`'s marker. The server writes both to
    /// this connection in the order it handled the publishes, so `r{n}` is seen first.
    fn handle(&self, token: &str, status: Option<StatusCode>) {
        let Some((kind, n)) = token.split_at_checked(1) else {
            return;
        };
        let Ok(n) = n.parse::<u64>() else {
            return;
        };
        let mut waiters = lock(&self.waiters);
        match kind {
            "r" if status == Some(StatusCode::NO_RESPONDERS) => {
                if let Some(waiter) = waiters.get_mut(&n) {
                    waiter.no_responders = true;
                }
            }
            "b" => {
                if let Some(mut waiter) = waiters.remove(&n) {
                    if let Some(done) = waiter.done.take() {
                        let _ = done.send(waiter.no_responders);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Removes a round trip's waiter when the round trip ends, however it ends.
struct WaiterGuard<'a> {
    probes: &'a Probes,
    n: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(&self.probes.waiters).remove(&self.n);
    }
}

/// Everything one backend connection holds; shared by its three trait objects and by the
/// close futures of its subscriptions.
pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    check_delivery: bool,
    inbox: String,
    next_probe: AtomicU64,
    probes: Arc<Probes>,
    probe_task: JoinHandle<()>,
    pub(crate) kv: crate::kv::Kv,
    /// The client's connection events, as the state core watches.
    state: watch::Sender<ConnectionState>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The task holds the probe subscription, which keeps the connection open.
        self.probe_task.abort();
    }
}

impl Inner {
    pub(crate) fn ensure_connected(&self) -> Result<(), BackendError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(not_connected()),
        }
    }

    /// Runs `op`, one operation that waits for the server (`what` names it in errors): fails
    /// at once when the connection is down, as soon as it drops while `op` waits, and after
    /// the operation timeout. A request or marker sent before a drop is lost with the
    /// connection (the client resends subscriptions after reconnecting, not requests), so
    /// waiting on would only end at the timeout, long after the client knew.
    pub(crate) async fn while_connected<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        // Subscribed before the check, so a drop between the two is not missed; a new
        // receiver counts the current state as seen, and only a later drop ends the wait.
        let mut state = self.state.subscribe();
        self.ensure_connected()?;
        let drop = async move {
            loop {
                if state.changed().await.is_err() {
                    // The sender lives in `self`, so this does not happen while `op` runs.
                    return std::future::pending().await;
                }
                if *state.borrow_and_update() == ConnectionState::Disconnected {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            result = tokio::time::timeout(self.timeout, op) => {
                result.unwrap_or_else(|_| Err(timed_out(what, self.timeout)))
            }
            () = drop => Err(dropped(what)),
        }
    }

    /// A round trip to the server: optionally publishes `frame` on `subject` with a reply
    /// subject, then publishes a marker to this connection's probe inbox and waits for it to
    /// come back. When it does, the server has handled everything this connection sent
    /// before (subscriptions are active, unsubscriptions done), and a "no responders" status
    /// for the frame, if any, has arrived. Returns whether it did.
    async fn round_trip(&self, checked: Option<(String, Bytes)>) -> Result<bool, BackendError> {
        self.while_connected("a round trip", self.send_marker(checked))
            .await
    }

    /// The body of [`Inner::round_trip`], without its bounds.
    async fn send_marker(&self, checked: Option<(String, Bytes)>) -> Result<bool, BackendError> {
        let n = self.next_probe.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        lock(&self.probes.waiters).insert(
            n,
            Waiter {
                no_responders: false,
                done: Some(done),
            },
        );
        let _guard = WaiterGuard {
            probes: &self.probes,
            n,
        };
        if let Some((subject, frame)) = checked {
            self.client
                .publish_with_reply(subject, format!("{}.r{n}", self.inbox), frame)
                .await
                .map_err(publish_error)?;
        }
        self.client
            .publish(format!("{}.b{n}", self.inbox), Bytes::new())
            .await
            .map_err(publish_error)?;
        answer.await.map_err(|_| {
            error(
                BackendErrorKind::Connection,
                "the NATS connection was closed",
            )
        })
    }
}

fn publish_error(err: async_nats::PublishError) -> BackendError {
    use async_nats::client::PublishErrorKind;
    let kind = match err.kind() {
        PublishErrorKind::MaxPayloadExceeded => BackendErrorKind::InvalidInput,
        PublishErrorKind::InvalidSubject => BackendErrorKind::InvalidInput,
        PublishErrorKind::Send => BackendErrorKind::Connection,
    };
    let message = match err.kind() {
        PublishErrorKind::MaxPayloadExceeded => {
            "the frame is larger than the NATS server's max_payload".to_owned()
        }
        _ => format!("publishing failed: {err}"),
    };
    error(kind, message).with_source(err)
}

/// Ends a subscription's reader task (and with it the subscription) when dropped, closed or
/// not.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection to NATS; implements the three backend traits.
pub(crate) struct NatsConnection {
    pub(crate) inner: Arc<Inner>,
}

fn backoff(attempts: usize, max: Duration) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(16);
    Duration::from_millis(50u64 << exponent).min(max)
}

fn connect_error(err: async_nats::ConnectError, servers: &str) -> BackendError {
    let (kind, message) = match err.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => (
            BackendErrorKind::Auth,
            format!("the NATS server at {servers} refused the credentials ({err})"),
        ),
        ConnectErrorKind::ServerParse => (
            BackendErrorKind::InvalidInput,
            format!("invalid NATS server address {servers}: {err}"),
        ),
        ConnectErrorKind::Tls => (
            BackendErrorKind::Connection,
            format!("TLS with the NATS server at {servers} failed: {err}"),
        ),
        _ => (
            BackendErrorKind::Connection,
            format!("cannot connect to the NATS server at {servers}: {err}"),
        ),
    };
    error(kind, message).with_source(err)
}

impl NatsConnection {
    pub(crate) async fn connect(config: NatsConfig) -> Result<Self, BackendError> {
        names::check_prefix(&config.prefix)?;
        if config.servers.is_empty() {
            return Err(error(
                BackendErrorKind::InvalidInput,
                "no NATS server URL given",
            ));
        }
        let shown = config
            .servers
            .iter()
            .map(|url| redact(url))
            .collect::<Vec<_>>()
            .join(",");
        let mut addrs = Vec::with_capacity(config.servers.len());
        for url in &config.servers {
            let addr: ServerAddr = url.parse().map_err(|err| {
                error(
                    BackendErrorKind::InvalidInput,
                    format!("invalid NATS server URL {}: {err}", redact(url)),
                )
            })?;
            addrs.push(addr);
        }

        let max_delay = config.reconnect_max_delay;
        let state = watch::Sender::new(ConnectionState::Connected);
        let events = state.clone();
        let mut options = ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| backoff(attempts, max_delay))
            .subscription_capacity(config.subscription_capacity)
            .require_tls(config.require_tls)
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    match event {
                        Event::Connected => {
                            tracing::info!("NATS connection (re)established");
                            events.send_replace(ConnectionState::Connected);
                        }
                        Event::Disconnected => {
                            tracing::warn!("NATS connection lost; reconnecting in the background");
                            events.send_replace(ConnectionState::Disconnected);
                        }
                        Event::SlowConsumer(sid) => tracing::warn!(
                        sid,
                        "NATS slow consumer: a subscription's buffer was full, frames were dropped"
                    ),
                        Event::ServerError(err) => tracing::warn!(%err, "NATS server error"),
                        Event::ClientError(err) => tracing::warn!(%err, "NATS client error"),
                        other => tracing::debug!(event = %other, "NATS connection event"),
                    }
                }
            });
        if let Some(name) = &config.name {
            options = options.name(name);
        }
        match &config.auth {
            // The client does not read credentials from URLs: take the first URL's.
            Auth::None => {
                if let Some(addr) = addrs.iter().find(|addr| addr.username().is_some()) {
                    let user = addr.username().unwrap_or_default().to_owned();
                    options = match addr.password() {
                        Some(password) => options.user_and_password(user, password.to_owned()),
                        None => options.token(user),
                    };
                }
            }
            Auth::Token(token) => options = options.token(token.clone()),
            Auth::UserPassword(user, password) => {
                options = options.user_and_password(user.clone(), password.clone())
            }
            Auth::CredentialsFile(path) => {
                options = options.credentials_file(path).await.map_err(|err| {
                    error(
                        BackendErrorKind::InvalidInput,
                        format!(
                            "cannot read the NATS credentials file {}: {err}",
                            path.display()
                        ),
                    )
                    .with_source(err)
                })?;
            }
        }
        for root in &config.root_certificates {
            options = options.add_root_certificates(root.clone());
        }
        if let Some((cert, key)) = &config.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }

        let client = options
            .connect(addrs)
            .await
            .map_err(|err| connect_error(err, &shown))?;
        tracing::debug!(servers = %shown, prefix = %config.prefix, "connected to NATS");

        let inbox = client.new_inbox();
        let mut probe_sub = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|err| {
                error(
                    BackendErrorKind::Connection,
                    format!("cannot subscribe to the probe inbox: {err}"),
                )
                .with_source(err)
            })?;
        let probes = Arc::new(Probes::default());
        let task_probes = probes.clone();
        let prefix_len = inbox.len() + 1;
        let probe_task = tokio::spawn(async move {
            while let Some(message) = probe_sub.next().await {
                if let Some(token) = message.subject.get(prefix_len..) {
                    task_probes.handle(token, message.status);
                }
            }
        });

        let mut context = jetstream::new(client.clone());
        context.set_timeout(config.timeout);
        let kv = crate::kv::Kv::open(context, &config).await?;

        let inner = Arc::new(Inner {
            client,
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            check_delivery: config.check_delivery,
            inbox,
            next_probe: AtomicU64::new(0),
            probes,
            probe_task,
            kv,
            state,
        });
        // The probe subscription is active once a first round trip has come back.
        inner.round_trip(None).await?;
        Ok(NatsConnection { inner })
    }
}

#[async_trait]
impl Transport for NatsConnection {
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError> {
        let subject = names::subject(&self.inner.prefix, channel)?;
        let checked = self.inner.check_delivery && !matches!(channel, Channel::Reply(_));
        if checked {
            let no_responders = self.inner.round_trip(Some((subject, frame))).await?;
            return Ok(if no_responders {
                Delivery::Exact(0)
            } else {
                Delivery::AtLeastOne
            });
        }
        // The client queues the frame for its connection task; that waits only when the
        // queue is full, which a drop must not turn into a wait for the reconnect.
        self.inner
            .while_connected("a publish", async {
                self.inner
                    .client
                    .publish(subject, frame)
                    .await
                    .map_err(publish_error)
            })
            .await?;
        Ok(Delivery::Unknown)
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        let subject = names::subject(&self.inner.prefix, channel)?;
        let subscriber = self
            .inner
            .while_connected("a subscription", async {
                self.inner
                    .client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|err| {
                        error(
                            BackendErrorKind::Connection,
                            format!("cannot subscribe to {subject}: {err}"),
                        )
                        .with_source(err)
                    })
            })
            .await?;
        // Active at the server once a round trip sent after the SUB has come back. On error
        // the subscriber is dropped here, which unsubscribes.
        self.inner.round_trip(None).await?;
        // The client hands messages over through its own queue per subscription (bounded by
        // `subscription_capacity`; it drops for a slow consumer); this task empties it into
        // the sink, which never waits.
        let mut subscriber = subscriber;
        let reader = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                sink.deliver(message.payload);
            }
        });
        let reader = AbortOnDrop(reader);
        let inner = self.inner.clone();
        Ok(Subscription::new(async move {
            // Ending the reader drops the subscriber, which queues the UNSUB; a round trip
            // after it confirms the server handled it.
            let mut reader = reader;
            reader.0.abort();
            let _ = (&mut reader.0).await;
            if let Err(err) = inner.round_trip(None).await {
                tracing::debug!(%err, %subject, "could not confirm the unsubscription");
            }
        }))
    }

    fn counts_receivers(&self) -> bool {
        false
    }

    fn max_payload(&self) -> Option<usize> {
        Some(self.inner.client.max_payload())
    }

    fn connection_state(&self) -> Option<watch::Receiver<ConnectionState>> {
        Some(self.inner.state.subscribe())
    }
}
