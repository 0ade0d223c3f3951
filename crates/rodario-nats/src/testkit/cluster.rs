//! A private cluster of three NATS servers with JetStream, for a test binary or a bench.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::Backend;
use rodario_core::testkit::outage::KillableBroker;
use rodario_core::testkit::server::{free_port, ServerProcess};
use rodario_core::testkit::{unique, TestBroker};
use tokio::time::Instant;

use super::{config_for, namespace_token, server_bin, HOW_TO_GET_ONE};
use crate::{NatsBackend, NatsConfig};

/// The servers in a cluster.
const SIZE: usize = 3;

/// How long a cluster may take to elect its JetStream meta leader.
const META_LEADER_WITHIN: Duration = Duration::from_secs(30);

/// Three private `nats-server -js` processes routed into one cluster, with a prefix unique
/// to the fixture. Its connections get all three URLs, the first server's first and tried
/// in that order, so they are connected to the first server while it runs: [`kill`] kills
/// that one. Buckets get 3 replicas.
///
/// [`NatsCluster::start`] starts a cluster of its own; [`NatsCluster::shared`] hands every
/// test of a binary that asks while one runs the same cluster (with a prefix of its own),
/// so a test binary starts it once.
///
/// [`kill`]: KillableBroker::kill
pub struct NatsCluster {
    servers: Arc<Servers>,
    prefix: String,
}

/// The cluster's servers; all three are killed, and their stores removed, on drop.
struct Servers {
    urls: Vec<String>,
    members: Mutex<Vec<ServerProcess>>,
    stores: Vec<PathBuf>,
}

impl NatsCluster {
    /// Starts a cluster of three servers on free loopback ports and returns once JetStream
    /// has a meta leader that can place a stream on all three. Panics saying how to get
    /// `nats-server` when there is none, or when the cluster does not come up.
    pub async fn start() -> Self {
        let servers = Arc::new(Servers::start().await);
        Self::on(servers)
    }

    /// The cluster that runs for other tests of this process, else a new one; it stops
    /// when the last fixture holding it is dropped.
    pub async fn shared() -> Self {
        static SHARED: tokio::sync::Mutex<Weak<Servers>> =
            tokio::sync::Mutex::const_new(Weak::new());
        let mut shared = SHARED.lock().await;
        let servers = match shared.upgrade() {
            Some(servers) => servers,
            None => {
                let servers = Arc::new(Servers::start().await);
                *shared = Arc::downgrade(&servers);
                servers
            }
        };
        Self::on(servers)
    }

    fn on(servers: Arc<Servers>) -> Self {
        NatsCluster {
            servers,
            prefix: unique("c"),
        }
    }

    /// The servers' URLs, the first server's first.
    pub fn urls(&self) -> &[String] {
        &self.servers.urls
    }

    /// The prefix unique to this fixture.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Settings for all three servers, tried in order, the fixture's prefix and 3 replicas,
    /// with [`config_for`]'s timeouts.
    pub fn config(&self) -> NatsConfig {
        self.config_with(&self.prefix)
    }

    fn config_with(&self, prefix: &str) -> NatsConfig {
        config_for(&self.urls().join(","), prefix)
            .servers_in_order(true)
            .kv_replicas(SIZE)
    }

    /// A new connection with the fixture's prefix.
    pub async fn backend(&self) -> Backend {
        connect(self.config()).await
    }

    /// Kills server `index` (0 to 2), as a crash would.
    pub fn stop(&self, index: usize) {
        self.servers.members()[index].stop();
    }

    /// Starts server `index` again on the same ports with the same store directory.
    pub fn restart(&self, index: usize) {
        self.servers.members()[index]
            .restart()
            .expect("cannot restart nats-server");
    }
}

async fn connect(config: NatsConfig) -> Backend {
    let shown = config.server_urls().join(",");
    NatsBackend::connect(config)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {shown}: {e}"))
}

impl Servers {
    async fn start() -> Self {
        let bin = server_bin().unwrap_or_else(|| panic!("{HOW_TO_GET_ONE}"));
        let name = unique("cluster");
        let ports = |what| {
            (0..SIZE)
                .map(|_| free_port().unwrap_or_else(|e| panic!("no free {what} port: {e}")))
                .collect::<Vec<u16>>()
        };
        let (client_ports, route_ports) = (ports("client"), ports("cluster"));
        let routes = route_ports
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(SIZE);
        let mut stores = Vec::with_capacity(SIZE);
        for (index, (client, route)) in client_ports.iter().zip(&route_ports).enumerate() {
            let store = std::env::temp_dir().join(unique("rodario-nats-cluster-"));
            std::fs::create_dir_all(&store).expect("cannot create the store directory");
            let args: Vec<String> = [
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &client.to_string(),
                "-sd",
                store.to_str().expect("temp dir is not UTF-8"),
                "--server_name",
                &format!("{name}-{index}"),
                "--cluster_name",
                &name,
                "--cluster",
                &format!("nats://127.0.0.1:{route}"),
                "--routes",
                &routes,
            ]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
            stores.push(store);
            // The ports were free a moment ago; another process taking one is a failure to
            // report, not to work around, as the routes name them all.
            let member = ServerProcess::start(&bin, &args, *client)
                .unwrap_or_else(|e| panic!("cannot start {bin} for a cluster: {e}"));
            members.push(member);
        }
        let servers = Servers {
            urls: client_ports
                .iter()
                .map(|port| format!("nats://127.0.0.1:{port}"))
                .collect(),
            members: Mutex::new(members),
            stores,
        };
        servers.await_meta_leader().await;
        servers.await_placement().await;
        servers
    }

    fn members(&self) -> MutexGuard<'_, Vec<ServerProcess>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks every server for the JetStream account info until each answers without an
    /// error: a server answers it once the cluster has elected its meta leader.
    async fn await_meta_leader(&self) {
        let began = Instant::now();
        for url in &self.urls {
            let client = async_nats::connect(url.as_str())
                .await
                .unwrap_or_else(|e| panic!("cannot connect to the cluster's {url}: {e}"));
            loop {
                // A server without a meta leader may not answer at all: ask again soon.
                let answer = tokio::time::timeout(
                    Duration::from_millis(500),
                    client.request("$JS.API.INFO", bytes::Bytes::new()),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|message| message.payload);
                if answer.is_some_and(|payload| !contains(&payload, b"\"error\"")) {
                    break;
                }
                assert!(
                    began.elapsed() < META_LEADER_WITHIN,
                    "the NATS cluster elected no JetStream meta leader within \
                     {META_LEADER_WITHIN:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Creates (and deletes) a stream of three replicas until the cluster accepts one: a
    /// meta leader just elected may not count every server as a peer yet, and refuses such
    /// a stream ("no suitable peers for placement").
    async fn await_placement(&self) {
        let began = Instant::now();
        let client = async_nats::connect(self.urls[0].as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the cluster's {}: {e}", self.urls[0]));
        let jetstream = async_nats::jetstream::new(client);
        let name = unique("placement");
        loop {
            let created = jetstream
                .create_stream(async_nats::jetstream::stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{name}.>")],
                    num_replicas: SIZE,
                    storage: async_nats::jetstream::stream::StorageType::Memory,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => {
                    let _ = jetstream.delete_stream(&name).await;
                    return;
                }
                Err(err) => assert!(
                    began.elapsed() < META_LEADER_WITHIN,
                    "the NATS cluster could not place a stream on its {SIZE} servers within \
                     {META_LEADER_WITHIN:?}: {err}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

impl Drop for Servers {
    fn drop(&mut self) {
        for member in self.members().iter_mut() {
            member.stop();
        }
        for store in &self.stores {
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

#[async_trait]
impl TestBroker for NatsCluster {
    async fn connect(&self, namespace: &str) -> Backend {
        let prefix = format!("{}.{}", self.prefix, namespace_token(namespace));
        connect(self.config_with(&prefix)).await
    }
}

impl KillableBroker for NatsCluster {
    /// Kills the first server, the one every connection of the fixture is connected to.
    fn kill(&mut self) {
        self.stop(0);
    }

    /// Starts the first server again.
    fn restart(&mut self) {
        NatsCluster::restart(self, 0);
    }
}
