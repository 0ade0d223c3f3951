//! A node: one process's connection to a broker, hosting actors and making proxies.
//!
//! A node is two legs over one [`Backend`]: the caller's (`src/client/`: proxies,
//! pending replies, the calls in flight) and the host's (`src/host/`: actors, cluster
//! channels, liveness). This file only builds the two and wires them together.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::actor::Actor;
use crate::backend::Backend;
use crate::backend::Subscription;
use crate::client::{Client, ClusterProxy, TypedCluster};
use crate::error::Result;
use crate::handle::ActorBuilder;
use crate::host::Host;
use crate::locks::Locks;
use crate::name::NodeId;
use crate::observe::{Directory, LocalActor};
use crate::registry::ActorRegistry;
use crate::shared::{NodeConfig, Shared};
use crate::sync::locked;

pub use crate::shared::{DEFAULT_CALL_TIMEOUT, DEFAULT_LIVENESS_TTL, DEFAULT_MAILBOX, MAX_WAIT};

/// A process's connection to a broker: it hosts actors, makes proxies, and holds the
/// settings they share. Cheap to clone; clones share everything.
///
/// A node owns no global state: two nodes in one process (on different backends or
/// prefixes) are as isolated as two processes.
///
/// ```
/// # async fn demo(backend: rodario_core::backend::Backend) -> rodario_core::Result<()> {
/// use std::time::Duration;
/// use rodario_core::Node;
/// let node = Node::builder(backend).call_timeout(Duration::from_secs(2)).build();
/// println!("{} actors registered", node.registry().actors().await?.len());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    shared: Arc<Shared>,
    client: Arc<Client>,
    host: Arc<Host>,
    /// The backend's discovery serving this node, once it started.
    discovery: Mutex<Option<Subscription>>,
}

/// What a backend's discovery reads of a node: the node's id and its host's actors.
struct NodeDirectory {
    id: String,
    host: Weak<Host>,
}

impl Directory for NodeDirectory {
    fn node_id(&self) -> &str {
        &self.id
    }

    fn actors(&self) -> Vec<LocalActor> {
        self.host
            .upgrade()
            .map(|host| host.local_actors())
            .unwrap_or_default()
    }
}

/// Settings for a [`Node`]; start with [`Node::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct NodeBuilder {
    backend: Backend,
    config: NodeConfig,
}

impl NodeBuilder {
    /// The default deadline of every call made through this node's proxies (default 10 s).
    /// A proxy can override it with `with_timeout`. Registry and lease operations are
    /// bounded by it too.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// How long this node's registrations outlive it if it dies without stopping its actors
    /// (default 10 s). The node's one lease, which they all live by, is renewed every third
    /// of it.
    pub fn liveness_ttl(mut self, ttl: Duration) -> Self {
        self.config.liveness_ttl = ttl.clamp(Duration::from_millis(30), MAX_WAIT);
        self
    }

    /// The largest frame this node sends or accepts, in bytes (default 1 MiB, the smallest
    /// default limit of the supported brokers). Lowered to the broker's own limit if smaller.
    pub fn max_frame_bytes(mut self, limit: usize) -> Self {
        self.config.max_frame = limit;
        self
    }

    /// How many calls each actor may have queued before further ones are shed with
    /// [`Error::Overloaded`](crate::Error::Overloaded) (default 1024).
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.config.mailbox = capacity.max(1);
        self
    }

    /// Builds the node. Nothing is sent to the broker until an actor starts or a call is made.
    pub fn build(self) -> Node {
        let shared = Arc::new(Shared::new(self.backend, self.config));
        let locks = Locks::new(
            shared.backend.locks().clone(),
            shared.backend.name(),
            shared.config.call_timeout,
        );
        let client = Arc::new(Client::new(shared.clone()));
        let host = Arc::new(Host::new(shared.clone(), locks));
        let inner = Arc::new(NodeInner {
            shared,
            client,
            host,
            discovery: Mutex::new(None),
        });
        serve_discovery(&inner);
        #[cfg(feature = "metrics")]
        count_reconnects(&inner);
        Node { inner }
    }
}

impl Node {
    /// Starts configuring a node on `backend`.
    pub fn builder(backend: Backend) -> NodeBuilder {
        NodeBuilder {
            backend,
            config: NodeConfig::default(),
        }
    }

    /// A node on `backend` with the default settings.
    pub fn new(backend: Backend) -> Node {
        Node::builder(backend).build()
    }

    /// This node's id: the `proxyid` of its reply channel, shared by all its proxies.
    pub fn id(&self) -> &NodeId {
        &self.inner.shared.id
    }

    /// The backend this node runs on.
    pub fn backend(&self) -> &Backend {
        &self.inner.shared.backend
    }

    /// The registry: which actors exist, and proxies to them.
    pub fn registry(&self) -> ActorRegistry {
        ActorRegistry::new(self.inner.client.clone(), self.inner.host.liveness.clone())
    }

    /// The broker's leases.
    pub fn locks(&self) -> &Locks {
        self.inner.host.locks()
    }

    /// Prepares `actor` to run on this node; set its UUID and start it.
    pub fn spawn<A: Actor>(&self, actor: A) -> ActorBuilder<A> {
        ActorBuilder::new(self.inner.host.clone(), self.inner.client.clone(), actor)
    }

    /// A cluster proxy (typed, as generated by `#[actor]`, or [`ClusterProxy`]) that
    /// broadcasts calls to the actors that joined `channel`.
    pub fn cluster<C: TypedCluster>(&self, channel: &str) -> Result<C> {
        let cluster = ClusterProxy::new(self.inner.client.clone(), channel)?;
        Ok(C::from_cluster(cluster))
    }

    /// The default call deadline of this node's proxies.
    pub fn call_timeout(&self) -> Duration {
        self.inner.shared.config.call_timeout
    }

    /// The largest frame this node sends or accepts, in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.inner.shared.config.max_frame
    }

    /// The actors running on this node, with how their methods were used since they started
    /// (calls, errors, time spent): what the backend's discovery, if any, serves.
    pub fn local_actors(&self) -> Vec<LocalActor> {
        self.inner.host.local_actors()
    }

    /// Stops every actor started on this node, removes every registration it holds, and
    /// ends its background tasks. Calls still waiting for replies fail with
    /// [`Error::Closed`](crate::Error::Closed).
    pub async fn shutdown(&self) {
        self.inner.host.shutdown().await;
        self.inner.shared.shut_down();
        self.end_discovery().await;
        self.inner.client.close().await;
    }

    /// Stops answering the broker's discovery requests (after the shutdown flag is set, so a
    /// discovery still starting closes itself).
    async fn end_discovery(&self) {
        let discovery = locked(&self.inner.discovery).take();
        if let Some(discovery) = discovery {
            discovery.close().await;
        }
    }

    /// Ends this node's tasks without unregistering anything, as if its process crashed: its
    /// registrations stay until their liveness TTL runs out. For tests of liveness.
    #[cfg(feature = "testkit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
    pub async fn simulate_crash(&self) {
        self.inner.host.crash().await;
        self.inner.client.crash();
        self.inner.shared.shut_down();
        self.end_discovery().await;
    }
}

/// Starts the backend's discovery for the node, if the backend has one: in a task, since
/// building a node sends nothing and waits for nothing.
fn serve_discovery(inner: &Arc<NodeInner>) {
    let Some(discovery) = inner.shared.backend.discovery().cloned() else {
        return;
    };
    let directory = Arc::new(NodeDirectory {
        id: inner.shared.id.to_string(),
        host: Arc::downgrade(&inner.host),
    });
    let node = Arc::downgrade(inner);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no tokio runtime: the backend's discovery does not serve this node");
        return;
    };
    runtime.spawn(async move {
        match discovery.serve(directory).await {
            Ok(subscription) => match node.upgrade() {
                // A node shut down while discovery was starting must not keep answering.
                Some(node) if !node.shared.is_shut_down() => {
                    *locked(&node.discovery) = Some(subscription);
                }
                _ => subscription.close().await,
            },
            Err(e) => tracing::warn!(error = %e, "the backend's discovery cannot serve this node"),
        }
    });
}

/// Counts the connection's restorations in `rodario_reconnects_total`, until shutdown.
#[cfg(feature = "metrics")]
fn count_reconnects(inner: &Arc<NodeInner>) {
    use crate::backend::ConnectionState;
    let Some(connection) = inner.shared.connection_state() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut shutdown = inner.shared.shutdown_signal();
    let backend = inner.shared.backend.name();
    runtime.spawn(async move {
        let mut connection = Some(connection);
        let stopped = shutdown.wait_for(|down| *down);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                Some(state) = crate::shared::connection_change(&mut connection) => {
                    if state == ConnectionState::Connected {
                        crate::telemetry::reconnected(backend);
                    }
                }
            }
        }
    });
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.shared.id)
            .field("backend", &self.inner.shared.backend.name())
            .finish_non_exhaustive()
    }
}
