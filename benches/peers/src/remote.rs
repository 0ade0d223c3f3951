//! Calls to an actor in another process: ractor_cluster over its own TCP connection between
//! two nodes, rodario through Redis, and a request and reply written by hand over Redis
//! pub/sub with redis-rs alone (what a broker hop costs without a framework). Each time the
//! callee lives in a child process (this same binary, started with a `*-host` argument) and
//! the caller in this one, each on a 2-worker tokio runtime.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::{join_all, LocalBoxFuture};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, RactorClusterMessage};
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::AsyncCommands;
use rodario::prelude::*;
use rodario::redis::RedisConfig;
use tokio::runtime::Runtime;

use crate::measure::{Contender, IN_FLIGHT};
use crate::{Counter, CounterProxy};

/// The cookie both ractor_cluster nodes authenticate with.
const COOKIE: &str = "rodario-peers";

/// The process group through which the host's actor becomes visible to the caller.
const GROUP: &str = "peers";

/// The UUID of rodario's actor.
const RODARIO_ACTOR: &str = "peers";

/// How long the caller waits for a host to start and be seen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A host process. It ends when its standard input closes: when dropped, or if the caller
/// dies.
struct Host(Child);

impl Host {
    /// Starts this binary with `args` and waits until it prints `ready`.
    fn start(args: &[&str]) -> Host {
        let exe = std::env::current_exe().expect("no path to this binary");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the host process did not start");
        let stdout = child.stdout.take().expect("the host's stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the host's stdout could not be read");
        assert_eq!(line.trim(), "ready", "the host process failed: {args:?}");
        Host(child)
    }
}

impl Drop for Host {
    /// Closes the host's standard input and gives it a few seconds to shut its node down
    /// (a rodario host deregisters its actor), then kills it.
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Already gone is as good as killed.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Tells the parent the host is ready, then waits until the parent closes its standard
/// input (or dies).
async fn serve_until_stdin_closes() {
    println!("ready");
    tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink())
        .await
        .expect("the host's stdin could not be read");
}

/// A free TCP port on loopback (free when this returns: the port is released for the
/// process about to bind it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free port")
        .port()
}

/// ractor_cluster's remote-capable message: serialised by the derive (`u64`s as big-endian
/// bytes) when the actor is on another node.
#[derive(RactorClusterMessage)]
pub enum RemoteAdd {
    #[rpc]
    Add(u64, RpcReplyPort<u64>),
}

struct RemoteCounter;

impl Actor for RemoteCounter {
    type Msg = RemoteAdd;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<RemoteAdd>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<RemoteAdd>,
        RemoteAdd::Add(n, reply): RemoteAdd,
        total: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *total += n;
        reply.send(*total)?;
        Ok(())
    }
}

/// A ractor_cluster node server on `port` (peers connect only to the nodes they are told
/// of: there are two).
async fn node_server(port: u16, name: &str) -> ActorRef<ractor_cluster::NodeServerMessage> {
    let server = NodeServer::new(
        port,
        COOKIE.to_owned(),
        name.to_owned(),
        "127.0.0.1".to_owned(),
        None,
        Some(NodeConnectionMode::Isolated),
    );
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .expect("the ractor_cluster node server did not start");
    server
}

/// The host process of ractor_cluster: a node server on `port` and the counter, in a
/// process group the caller's node learns of when it connects.
pub fn ractor_host(port: u16) {
    crate::runtime().block_on(async {
        let _server = node_server(port, "host").await;
        let (counter, _) = Actor::spawn(None, RemoteCounter, ())
            .await
            .expect("the ractor actor did not start");
        ractor::pg::join(GROUP.to_owned(), vec![counter.get_cell()]);
        serve_until_stdin_closes().await;
    });
}

/// The caller's side of ractor_cluster: its own node server, connected to the host's, and
/// the host's actor as the group shows it.
pub struct RactorRemote {
    _host: Host,
    server: ActorRef<ractor_cluster::NodeServerMessage>,
    counter: ActorRef<RemoteAdd>,
}

impl RactorRemote {
    pub fn start(rt: &Runtime) -> Self {
        let port = free_port();
        let host = Host::start(&["ractor-host", &port.to_string()]);
        rt.block_on(async {
            let server = node_server(free_port(), "caller").await;
            let deadline = Instant::now() + START_TIMEOUT;
            // The host's listener binds after its node server starts: retry until it answers.
            while let Err(error) =
                ractor_cluster::client_connect(&server, ("127.0.0.1", port)).await
            {
                assert!(Instant::now() < deadline, "no ractor_cluster host: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The remote actor appears in the group once the nodes have authenticated and
            // synchronised their groups.
            let counter = loop {
                let remote = ractor::pg::get_members(&GROUP.to_owned())
                    .into_iter()
                    .find(|member| !member.get_id().is_local());
                if let Some(remote) = remote {
                    break ActorRef::<RemoteAdd>::from(remote);
                }
                assert!(
                    Instant::now() < deadline,
                    "the ractor_cluster host's actor never appeared"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            RactorRemote {
                _host: host,
                server,
                counter,
            }
        })
    }

    pub fn stop(self) {
        self.server.stop(None);
    }
}

fn redis_config(url: &str, prefix: &str) -> RedisConfig {
    RedisConfig::new(url).prefix(format!("{prefix}:"))
}

/// The host process of rodario: a node on the Redis server at `url` with the counter.
pub fn rodario_host(url: &str, prefix: &str) {
    crate::runtime().block_on(async {
        let backend = redis_config(url, prefix)
            .connect()
            .await
            .expect("the host could not connect to Redis");
        let node = Node::new(backend);
        node.spawn(Counter::default())
            .uuid(RODARIO_ACTOR)
            .start()
            .await
            .expect("the rodario actor did not start");
        serve_until_stdin_closes().await;
        node.shutdown().await;
    });
}

/// The caller's side of rodario: a node on the same Redis and a proxy to the host's actor.
pub struct RodarioRemote {
    _host: Host,
    node: Node,
    proxy: CounterProxy,
}

impl RodarioRemote {
    /// `prefix` is the keys' prefix of both nodes, new for each run: a host killed after
    /// its grace period leaves its actor registered until the lease ends.
    pub fn start(rt: &Runtime, url: &str, prefix: &str) -> Self {
        let host = Host::start(&["rodario-host", url, prefix]);
        rt.block_on(async {
            let backend = redis_config(url, prefix)
                .connect()
                .await
                .expect("the caller could not connect to Redis");
            let node = Node::new(backend);
            let proxy: CounterProxy = node
                .registry()
                .get_proxy(RODARIO_ACTOR)
                .await
                .expect("no proxy to the host's actor");
            RodarioRemote {
                _host: host,
                node,
                proxy,
            }
        })
    }

    pub fn stop(self, rt: &Runtime) {
        rt.block_on(self.node.shutdown());
    }
}

impl Contender for RactorRemote {
    fn call(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async {
            ractor::call!(self.counter, RemoteAdd::Add, 1).expect("ractor_cluster's call failed");
        })
    }
}

impl Contender for RodarioRemote {
    fn call(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async {
            self.proxy
                .add(1)
                .await
                .expect("rodario's call was not sent")
                .await
                .expect("rodario's call failed");
        })
    }
}

/// The channels of the raw Redis request/reply under `prefix`: requests, replies.
fn raw_channels(prefix: &str) -> (String, String) {
    (
        format!("{prefix}:raw:requests"),
        format!("{prefix}:raw:replies"),
    )
}

/// `[id, value]` as 16 little-endian bytes, the raw request's and reply's payload.
fn id_and_value(id: u64, value: u64) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    bytes[8..].copy_from_slice(&value.to_le_bytes());
    bytes
}

/// The two halves of a 16-byte `[id, value]` payload; `None` for any other payload.
fn split_id_and_value(payload: &[u8]) -> Option<(u64, u64)> {
    let id = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let value = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((id, value))
}

/// The messages of `channel`, on a pub/sub connection of their own.
async fn subscription(client: &redis::Client, channel: &str) -> PubSubStream {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .expect("could not connect to Redis");
    pubsub
        .subscribe(channel)
        .await
        .expect("could not subscribe");
    pubsub.into_on_message()
}

/// The host process of the raw Redis request/reply: reads `[id, n]` requests from a pub/sub
/// connection, adds `n` to its total and publishes `[id, total]` from a multiplexed
/// connection, without waiting for one reply's `PUBLISH` before reading the next request.
pub fn raw_redis_host(url: &str, prefix: &str) {
    crate::runtime().block_on(async {
        let client = redis::Client::open(url).expect("not a Redis URL");
        let (requests_channel, replies_channel) = raw_channels(prefix);
        let mut requests = subscription(&client, &requests_channel).await;
        let publisher = client
            .get_multiplexed_async_connection()
            .await
            .expect("the host could not connect to Redis");
        let echo = async {
            let mut total = 0u64;
            let mut publishing = FuturesUnordered::new();
            loop {
                tokio::select! {
                    request = requests.next() => {
                        let Some(request) = request else { break };
                        let Some((id, n)) = split_id_and_value(request.get_payload_bytes()) else {
                            continue;
                        };
                        total += n;
                        let mut publisher = publisher.clone();
                        let reply = id_and_value(id, total);
                        let channel = &replies_channel;
                        publishing.push(async move {
                            let _: u64 = publisher
                                .publish(channel, &reply[..])
                                .await
                                .expect("the host could not publish a reply");
                        });
                    }
                    Some(()) = publishing.next(), if !publishing.is_empty() => {}
                }
            }
        };
        tokio::select! {
            () = echo => {}
            () = serve_until_stdin_closes() => {}
        }
    });
}

/// The caller's side of the raw Redis request/reply, the baseline of rodario's remote call:
/// it `PUBLISH`es `[id, 1]` from a multiplexed connection and reads the replies from a
/// pub/sub connection itself (no task of its own between redis-rs's pub/sub stream and the
/// caller), matching them to its requests by id, as `benches/redis.rs`'s raw baseline does.
pub struct RawRedisRemote {
    _host: Host,
    requests_channel: String,
    publisher: MultiplexedConnection,
    /// One caller reads the replies at a time: calls are sequential or one batch.
    replies: tokio::sync::Mutex<PubSubStream>,
    next_id: AtomicU64,
}

impl RawRedisRemote {
    pub fn start(rt: &Runtime, url: &str, prefix: &str) -> Self {
        let host = Host::start(&["raw-redis-host", url, prefix]);
        rt.block_on(async {
            let client = redis::Client::open(url).expect("not a Redis URL");
            let (requests_channel, replies_channel) = raw_channels(prefix);
            let replies = subscription(&client, &replies_channel).await;
            RawRedisRemote {
                _host: host,
                requests_channel,
                publisher: client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("the caller could not connect to Redis"),
                replies: tokio::sync::Mutex::new(replies),
                next_id: AtomicU64::new(1),
            }
        })
    }

    /// Publishes the request `[id, 1]`; the host's subscription must have received it.
    async fn request(&self, id: u64) {
        let receivers: u64 = self
            .publisher
            .clone()
            .publish(&self.requests_channel, &id_and_value(id, 1)[..])
            .await
            .expect("the caller could not publish");
        assert_eq!(receivers, 1, "the raw host is not subscribed");
    }

    /// Reads replies until those to ids `first..first + count` have all come.
    async fn replies(&self, first: u64, count: u64) {
        let mut replies = self.replies.lock().await;
        let mut missing = count;
        while missing > 0 {
            let reply = replies.next().await.expect("the reply subscription ended");
            let answered = split_id_and_value(reply.get_payload_bytes())
                .is_some_and(|(id, _)| (first..first + count).contains(&id));
            if answered {
                missing -= 1;
            }
        }
    }
}

impl Contender for RawRedisRemote {
    fn call(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.request(id).await;
            self.replies(id, 1).await;
        })
    }

    /// Publishes [`IN_FLIGHT`] requests at once while reading their replies.
    fn batch(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async {
            let count = IN_FLIGHT as u64;
            let first = self.next_id.fetch_add(count, Ordering::Relaxed);
            let requests = join_all((first..first + count).map(|id| self.request(id)));
            tokio::join!(requests, self.replies(first, count));
        })
    }
}
