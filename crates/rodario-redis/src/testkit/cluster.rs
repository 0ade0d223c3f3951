//! A private Redis Cluster of six servers (three primaries, three replicas), for a test
//! binary or a bench.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::Backend;
use rodario_core::testkit::server::{free_port, on_path, ServerProcess};
use rodario_core::testkit::{unique, TestBroker};
use tokio::time::Instant;

use super::{private_process, HOW_TO_GET_ONE};
use crate::RedisConfig;

/// The servers in a cluster: three primaries, each with one replica.
const SIZE: usize = 6;

/// How long a new cluster may take to agree that it is whole.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long each server waits for a silent node before calling it failed (the cluster's
/// `cluster-node-timeout`, in ms): short, so that a replica takes over within a second or
/// two of its primary's death.
const NODE_TIMEOUT_MS: &str = "1000";

/// Six private `redis-server --cluster-enabled yes` processes on free loopback ports,
/// joined by `redis-cli --cluster create .. --cluster-replicas 1`, and the prefixes of
/// their backends. No persistence; every server is killed on drop.
///
/// [`RedisCluster::start`] starts a cluster of its own (a test that kills a server takes
/// one); [`RedisCluster::shared`] hands every test of a binary that asks while one runs
/// the same cluster (with a prefix of its own), so a test binary starts it once.
pub struct RedisCluster {
    servers: Arc<Servers>,
    run: String,
}

/// The cluster's servers (`None` once killed) and the directory of their cluster state
/// files; removed on drop.
struct Servers {
    ports: Vec<u16>,
    members: Mutex<Vec<Option<ServerProcess>>>,
    dir: PathBuf,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's client port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a primary (it may still be marked failed).
    pub primary: bool,
    /// Whether the cluster marked it failed.
    pub failed: bool,
    /// The slot ranges it serves (primaries only), inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// Whether this node serves `slot` as a primary.
    pub fn serves(&self, slot: u16) -> bool {
        self.primary
            && self
                .slots
                .iter()
                .any(|(from, to)| (*from..=*to).contains(&slot))
    }
}

impl RedisCluster {
    /// Starts a cluster of six servers on free loopback ports and returns once every node
    /// reports `cluster_state:ok` and every replica is in sync. Panics saying how to get
    /// `redis-server` and `redis-cli` when they are missing, or when the cluster does not
    /// come up.
    pub async fn start() -> Self {
        Self::on(Arc::new(Servers::start().await))
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
        RedisCluster {
            servers,
            run: format!("{}:", unique("c")),
        }
    }

    /// The cluster's URL: `redis+cluster://127.0.0.1:p1,..` with all six nodes as seeds.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports()
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The six servers' ports.
    pub fn ports(&self) -> &[u16] {
        &self.servers.ports
    }

    /// A prefix unique to this fixture and `name`.
    pub fn prefix(&self, name: &str) -> String {
        format!("{}{name}:", self.run)
    }

    /// Settings for this cluster with a prefix unique to the fixture and `name`.
    pub fn config(&self, name: &str) -> RedisConfig {
        RedisConfig::new(self.url()).prefix(self.prefix(name))
    }

    /// A new backend handle with this fixture's prefix for `name`.
    pub async fn backend(&self, name: &str) -> Backend {
        self.config(name)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url()))
    }

    /// A plain redis-rs connection (RESP2, no cluster routing) to the node on `port`.
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        node(port)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the cluster's node {port}: {e}"))
    }

    /// The cluster's nodes, as the first live node that answers describes them.
    pub async fn nodes(&self) -> Vec<ClusterNode> {
        for port in self.live_ports() {
            if let Ok(nodes) = cluster_nodes(port).await {
                return nodes;
            }
        }
        panic!("no node of the cluster answers CLUSTER NODES")
    }

    /// The slot of `key` (or of a channel of that name).
    pub async fn slot(&self, key: &str) -> u16 {
        let port = *self.live_ports().first().expect("no live node");
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut self.node(port).await)
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// The port of the live primary serving `key`'s slot.
    pub async fn primary_of(&self, key: &str) -> u16 {
        let slot = self.slot(key).await;
        self.nodes()
            .await
            .into_iter()
            .find(|node| node.serves(slot) && !node.failed)
            .unwrap_or_else(|| panic!("no live primary serves slot {slot}"))
            .port
    }

    /// Kills the server on `port` (SIGKILL, as a crash would); it stays down.
    pub fn kill(&self, port: u16) {
        let index = self.index(port);
        // Dropping a server process kills it.
        drop(self.servers.members()[index].take());
    }

    /// Waits until a live node serves as primary every slot the (killed) node on `dead`
    /// served, and every live node reports `cluster_state:ok`; returns that node's port.
    /// `slots` are the dead node's slot ranges, read before it was killed. Panics after
    /// `within`.
    pub async fn await_promotion(&self, dead: u16, slots: &[(u16, u16)], within: Duration) -> u16 {
        let began = Instant::now();
        loop {
            let promoted = self.nodes().await.into_iter().find(|node| {
                node.port != dead && !node.failed && node.primary && node.slots == slots
            });
            if let Some(promoted) = promoted {
                if self.all_ok().await {
                    return promoted.port;
                }
            }
            assert!(
                began.elapsed() < within,
                "no replica took over the slots of node {dead} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Per live node, the number of calls of each command since the node started (`INFO
    /// commandstats`, such as `spublish`), and whether the node is a primary.
    pub async fn command_counts(&self) -> Vec<(u16, bool, BTreeMap<String, u64>)> {
        let nodes = self.nodes().await;
        let mut counts = Vec::new();
        for port in self.live_ports() {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut self.node(port).await)
                .await
                .expect("INFO commandstats");
            let primary = nodes.iter().any(|node| node.port == port && node.primary);
            counts.push((port, primary, command_stats(&info)));
        }
        counts
    }

    fn index(&self, port: u16) -> usize {
        self.ports()
            .iter()
            .position(|p| *p == port)
            .unwrap_or_else(|| panic!("no node of the cluster listens on {port}"))
    }

    fn live_ports(&self) -> Vec<u16> {
        let members = self.servers.members();
        self.ports()
            .iter()
            .zip(members.iter())
            .filter(|(_, member)| member.is_some())
            .map(|(port, _)| *port)
            .collect()
    }

    async fn all_ok(&self) -> bool {
        for port in self.live_ports() {
            if !cluster_ok(port).await {
                return false;
            }
        }
        true
    }
}

/// `cmdstat_NAME:calls=N,...` lines as NAME → N.
fn command_stats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|stat| stat.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

async fn node(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn cluster_nodes(port: u16) -> redis::RedisResult<Vec<ClusterNode>> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut node(port).await?)
        .await?;
    Ok(text.lines().filter_map(parse_node).collect())
}

/// One line of `CLUSTER NODES`: `id ip:port@bus flags primary ping pong epoch link slots..`.
fn parse_node(line: &str) -> Option<ClusterNode> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let port = fields
        .get(1)?
        .split('@')
        .next()?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()?;
    let flags: Vec<&str> = fields.get(2)?.split(',').collect();
    let slots = fields
        .iter()
        .skip(8)
        .filter(|range| !range.starts_with('['))
        .filter_map(|range| match range.split_once('-') {
            Some((from, to)) => Some((from.parse().ok()?, to.parse().ok()?)),
            None => range.parse().ok().map(|slot| (slot, slot)),
        })
        .collect();
    Some(ClusterNode {
        port,
        primary: flags.contains(&"master"),
        failed: flags.contains(&"fail") || flags.contains(&"fail?"),
        slots,
    })
}

async fn cluster_ok(port: u16) -> bool {
    let Ok(mut connection) = node(port).await else {
        return false;
    };
    let info: redis::RedisResult<String> = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut connection)
        .await;
    info.is_ok_and(|info| info.contains("cluster_state:ok"))
}

/// Whether the replica on `port` is in sync with its primary.
async fn replica_synced(port: u16) -> bool {
    let Ok(mut connection) = node(port).await else {
        return false;
    };
    let info: redis::RedisResult<String> = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut connection)
        .await;
    info.is_ok_and(|info| info.contains("master_link_status:up"))
}

impl Servers {
    async fn start() -> Self {
        assert!(
            on_path("redis-cli"),
            "no `redis-cli` on PATH (it creates the cluster): {HOW_TO_GET_ONE}"
        );
        let dir = std::env::temp_dir().join(unique("rodario-redis-cluster-"));
        std::fs::create_dir_all(&dir).expect("cannot create the cluster's directory");
        let members: Vec<ServerProcess> = (0..SIZE)
            .map(|_| {
                let dir = dir.clone();
                private_process(
                    move |port| {
                        // The cluster bus needs a port of its own (by default port + 10000,
                        // which may be taken or out of range).
                        let bus = free_port().expect("no free port for the cluster bus");
                        vec![
                            "--port".into(),
                            port.to_string(),
                            "--cluster-port".into(),
                            bus.to_string(),
                            "--cluster-config-file".into(),
                            dir.join(format!("nodes-{port}.conf"))
                                .to_string_lossy()
                                .into_owned(),
                            // A replica stores the snapshot its primary sends: in the
                            // cluster's directory, not the working directory.
                            "--dir".into(),
                            dir.to_string_lossy().into_owned(),
                            "--dbfilename".into(),
                            format!("dump-{port}.rdb"),
                        ]
                    },
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        NODE_TIMEOUT_MS,
                        // A replica takes over however long its link was down.
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            })
            .collect();
        let ports: Vec<u16> = members.iter().map(ServerProcess::port).collect();
        let servers = Servers {
            ports,
            members: Mutex::new(members.into_iter().map(Some).collect()),
            dir,
        };
        servers.create();
        servers.await_ready().await;
        servers
    }

    fn members(&self) -> MutexGuard<'_, Vec<Option<ServerProcess>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `redis-cli --cluster create`: slots spread over the first three, a replica each.
    fn create(&self) {
        let mut command = Command::new("redis-cli");
        command.arg("--cluster").arg("create");
        for port in &self.ports {
            command.arg(format!("127.0.0.1:{port}"));
        }
        let output = command
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("cannot run redis-cli");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Waits until every node reports `cluster_state:ok` and knows all six, and every
    /// replica is in sync with its primary (a replica out of sync could not take over).
    async fn await_ready(&self) {
        let began = Instant::now();
        for port in &self.ports {
            loop {
                let nodes = cluster_nodes(*port).await.unwrap_or_default();
                let ready = nodes.len() == SIZE
                    && cluster_ok(*port).await
                    && match nodes.iter().find(|node| node.port == *port) {
                        Some(me) if !me.primary => replica_synced(*port).await,
                        Some(_) => true,
                        None => false,
                    };
                if ready {
                    break;
                }
                assert!(
                    began.elapsed() < READY_WITHIN,
                    "the Redis Cluster was not ready within {READY_WITHIN:?} (node {port})"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.members().clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[async_trait]
impl TestBroker for RedisCluster {
    async fn connect(&self, namespace: &str) -> Backend {
        self.backend(namespace).await
    }
}
