//! Python rodario processes and Rust ones on one Redis (`RedisConfig::python_wire`).
//!
//! The Python library (1.0.0a7, from PyPI, with redis-py) is installed under
//! `target/tools/python-rodario` on first use; `tests/python/harness.py` applies its two
//! test-only patches (the server's port, and a reply queue registered before its call is
//! published). Every Python run is bounded: futures with a timeout, the process with an
//! alarm, and the test with a kill after [`PYTHON_LIMIT`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use redis::AsyncCommands;
use rodario_core::{ActorProxy, ClusterProxy, Node};
use rodario_redis::testkit::RedisServer;
use serde_bytes::ByteBuf;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

const PYTHON_LIMIT: Duration = Duration::from_secs(40);

/// A Rust actor for Python proxies to call.
#[derive(Default)]
struct Greeter {
    claims: u32,
}

/// What the Python side sends as `echo`'s one argument: a list of mixed values.
type Mixed = (
    i64,
    String,
    f64,
    Option<i64>,
    bool,
    ByteBuf,
    HashMap<String, Vec<i64>>,
);

#[rodario_core::actor(crate = rodario_core)]
impl Greeter {
    /// A greeting; `greeting` defaults to "Hello".
    pub fn greet(&mut self, name: String, greeting: Option<String>) -> String {
        format!("{}, {name}", greeting.as_deref().unwrap_or("Hello"))
    }

    /// The sum.
    pub fn add(&mut self, a: i64, b: i64) -> i64 {
        a + b
    }

    /// The value, back.
    pub fn echo(&mut self, value: Mixed) -> Mixed {
        value
    }

    /// Answers after `ms` milliseconds.
    pub async fn slow(&mut self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// Always fails.
    pub fn fail(&mut self) -> Result<u32, String> {
        Err("no luck".into())
    }

    /// Every member answers.
    pub fn work(&mut self, n: i64) -> (String, i64) {
        ("rust".into(), n * 2)
    }

    /// Exactly one member of a cluster answers; the others decline.
    #[rodario(singular)]
    pub fn claim(&mut self) -> u32 {
        self.claims += 1;
        self.claims
    }
}

/// The Python actor's interface, for a typed proxy (`interop.py`'s `PyEcho`): rodario
/// never runs these bodies when the actor is in Python, and this test never hosts one.
#[allow(dead_code)]
struct PyEcho;

#[allow(dead_code)]
#[rodario_core::actor(crate = rodario_core)]
impl PyEcho {
    /// The value, back.
    pub fn echo(&mut self, value: String) -> String {
        value
    }

    /// The sum.
    pub fn add(&mut self, a: i64, b: i64) -> i64 {
        a + b
    }
}

/// One private server per test binary, with no prefix: the Python library has none.
fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::private(&[]))
}

async fn node(server: &RedisServer) -> Node {
    let backend = rodario_redis::RedisConfig::new(server.url())
        .python_wire()
        .connect()
        .await
        .expect("connects");
    Node::builder(backend)
        .call_timeout(Duration::from_secs(5))
        .build()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// The Python library and redis-py, installed under `target/tools` on first use.
async fn python_packages() -> &'static Path {
    static PACKAGES: OnceCell<PathBuf> = OnceCell::const_new();
    PACKAGES
        .get_or_init(|| async {
            let dir = target_dir().join("tools/python-rodario");
            if !dir.join("rodario/__init__.py").exists() {
                // rodario 1.0.0a7 pins redis 2.10, which predates Python 3.11: its own
                // code runs on a current redis-py.
                for packages in [&["--no-deps", "--pre", "rodario==1.0.0a7"][..], &["redis>=5,<9"]] {
                    let status = Command::new("python3")
                        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                        .arg("--target")
                        .arg(&dir)
                        .args(packages)
                        .env("PIP_ROOT_USER_ACTION", "ignore")
                        .status()
                        .await
                        .expect("python3 runs (the Python interoperability tests need CPython 3 with pip)");
                    assert!(status.success(), "pip could not install {packages:?} into {}", dir.display());
                }
            }
            dir
        })
        .await
}

async fn python_command(server: &RedisServer, args: &[&str]) -> Command {
    let packages = python_packages().await;
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let mut command = Command::new("python3");
    command
        .arg(scripts.join("interop.py"))
        .args(args)
        .env(
            "PYTHONPATH",
            format!("{}:{}", packages.display(), scripts.display()),
        )
        .env("RODARIO_PY_REDIS_PORT", server.port().to_string())
        .kill_on_drop(true);
    command
}

/// Runs `interop.py` with `args` to its end and returns what it printed, as JSON.
async fn python(server: &RedisServer, args: &[&str]) -> serde_json::Value {
    let mut command = python_command(server, args).await;
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("python3 starts");
    let output = tokio::time::timeout(PYTHON_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("interop.py {args:?} ran past {PYTHON_LIMIT:?}"))
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "interop.py {args:?} failed: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// A Python actor `uuid` serving (and joined to `channel`) until the child is dropped.
async fn python_actor(server: &RedisServer, uuid: &str, channel: &str) -> Child {
    let mut command = python_command(server, &["serve", uuid, channel]).await;
    command.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command.spawn().expect("python3 starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = tokio::time::timeout(PYTHON_LIMIT, lines.next_line()).await;
    assert!(
        matches!(&ready, Ok(Ok(Some(line))) if line == "ready"),
        "the Python actor did not start: {ready:?}"
    );
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_proxy_calls_a_rust_actor() {
    let server = server();
    let host = node(server).await;
    let _greeter = host
        .spawn(Greeter::default())
        .uuid("rust-greeter")
        .start()
        .await
        .unwrap();
    let seen = python(server, &["call", "rust-greeter"]).await;
    let methods: Vec<&str> = seen["methods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    for method in ["add", "claim", "echo", "fail", "greet", "slow", "work"] {
        assert!(
            methods.contains(&method),
            "{method} missing from {methods:?}"
        );
    }
    assert_eq!(seen["positional"], "Hello, Ann");
    assert_eq!(seen["keyword"], "Howdy, Bo");
    assert_eq!(seen["mixed"], 42);
    assert_eq!(
        seen["values"],
        serde_json::json!([1, "two", 3.5, null, true, {"bytes": [0, 255]}, {"k": [1]}])
    );
    assert_eq!(seen["ready_at_once"], false);
    assert_eq!(seen["slow"], 400);
    assert_eq!(seen["ready_later"], true);
    assert_eq!(seen["unknown"]["exception"], "AttributeError");
    assert!(seen["unknown"]["message"]
        .as_str()
        .unwrap()
        .contains("\"nope\""));
    assert_eq!(seen["bad_arguments"]["exception"], "TypeError", "{seen}");
    assert_eq!(seen["failing"]["exception"], "RuntimeError");
    assert!(seen["failing"]["message"]
        .as_str()
        .unwrap()
        .contains("no luck"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_cluster_proxy_gathers_from_rust_members_and_a_python_member() {
    let server = server();
    let (first, second) = (node(server).await, node(server).await);
    let mut members = Vec::new();
    // Two members on one node: Redis counts that node once, and it answers once.
    for (node, uuid) in [
        (&first, "gather-a"),
        (&first, "gather-b"),
        (&second, "gather-c"),
    ] {
        let actor = node
            .spawn(Greeter::default())
            .uuid(uuid)
            .start()
            .await
            .unwrap();
        actor.join("py-gather").await.unwrap();
        members.push(actor);
    }
    let python_member = python_actor(server, "gather-py", "py-gather").await;
    let seen = python(server, &["cluster", "py-gather", "work", "5"]).await;
    assert_eq!(seen["count"], 3, "{seen}");
    assert_eq!(
        seen["values"],
        serde_json::json!([["python", 10], ["rust", 10], ["rust", 10]])
    );

    // A singular method runs on one Rust member; the other node declines with False,
    // which the Python proxy counts and does not yield.
    drop(python_member);
    let seen = python(server, &["cluster", "py-gather", "claim"]).await;
    assert!(seen["count"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["values"], serde_json::json!([1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_proxies_and_clusters_call_python_actors() {
    let server = server();
    let caller = node(server).await;
    let _python = python_actor(server, "py-echo", "py-mixed").await;

    let registry = caller.registry();
    assert!(registry.exists("py-echo").await.unwrap());
    assert!(registry.actors().await.unwrap().contains("py-echo"));
    let typed: PyEchoProxy = registry.get_proxy("py-echo").await.unwrap();
    assert_eq!(typed.echo("hi".into()).await.unwrap().await.unwrap(), "hi");
    assert_eq!(typed.add(2, 3).await.unwrap().await.unwrap(), 5);
    let untyped: ActorProxy = registry.get_proxy("py-echo").await.unwrap();
    let sum: i64 = untyped.call("add", (40, 2)).await.unwrap().await.unwrap();
    assert_eq!(sum, 42);

    // A cluster call reaches the Python member and a Rust member alike.
    let rust_member = caller.spawn(Greeter::default()).start().await.unwrap();
    rust_member.join("py-mixed").await.unwrap();
    let cluster: ClusterProxy = caller.cluster("py-mixed").unwrap();
    let mut replies: Vec<(String, i64)> = cluster
        .call("work", (5,))
        .await
        .unwrap()
        .all()
        .await
        .unwrap();
    replies.sort();
    assert_eq!(replies, vec![("python".into(), 10), ("rust".into(), 10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_registry_lists_rust_actors() {
    let server = server();
    let host = node(server).await;
    let _actor = host
        .spawn(Greeter::default())
        .uuid("listed-in-python")
        .start()
        .await
        .unwrap();
    let actors = python(server, &["actors"]).await;
    assert!(
        actors
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "listed-in-python"),
        "{actors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pickles_are_dropped_and_the_actor_keeps_serving() {
    let server = server();
    let host = node(server).await;
    let _actor = host
        .spawn(Greeter::default())
        .uuid("hostile-target")
        .start()
        .await
        .unwrap();
    let marker = std::env::temp_dir().join(format!("rodario-pwned-{}", std::process::id()));
    let command = format!("touch {}", marker.display());
    // pickle.dumps of an object whose __reduce__ is (os.system, (command,)), protocol 4.
    let mut payload = vec![0x80, 4, 0x8c, 5];
    payload.extend_from_slice(b"posix");
    payload.extend_from_slice(&[0x94, 0x8c, 6]);
    payload.extend_from_slice(b"system");
    payload.extend_from_slice(&[0x94, 0x93, 0x94, 0x8c, command.len() as u8]);
    payload.extend_from_slice(command.as_bytes());
    payload.extend_from_slice(&[0x94, 0x85, 0x94, b'R', 0x94, b'.']);
    let truncated = payload[..payload.len() / 2].to_vec();
    // BINBYTES8 declaring 100 MB in a frame of a few bytes.
    let mut huge = vec![0x80, 4, 0x8e];
    huge.extend_from_slice(&100_000_000u64.to_le_bytes());
    huge.extend_from_slice(b"abc.");

    let mut plain = server.plain().await;
    for hostile in [payload, truncated, huge] {
        let receivers: i64 = plain
            .publish("actor:hostile-target", hostile)
            .await
            .unwrap();
        assert_eq!(receivers, 1);
    }
    let proxy: GreeterProxy = host.registry().get_proxy("hostile-target").await.unwrap();
    assert_eq!(proxy.add(1, 2).await.unwrap().await.unwrap(), 3);
    let seen = python(server, &["call", "hostile-target"]).await;
    assert_eq!(seen["positional"], "Hello, Ann");
    assert!(!marker.exists(), "the os.system payload ran");
}

/// What a Python user of the unpatched library sees calling a rodario actor: the library
/// registers a call's reply queue only after publishing the call, a fast actor's reply gets
/// there first, the proxy's reader thread dies, and the call and every later one on that
/// proxy are never answered. (The README's "Python processes" quotes this.) A race: a run of
/// 200 calls loses one about half the time on a 2-core machine, so this makes up to
/// `ROUNDS` runs of 400 and asks that one of them lose a reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unpatched_python_library_loses_replies_from_a_fast_actor() {
    const ROUNDS: usize = 4;
    let server = server();
    let host = node(server).await;
    let _greeter = host
        .spawn(Greeter::default())
        .uuid("fast-greeter")
        .start()
        .await
        .unwrap();
    let mut runs = Vec::new();
    for _ in 0..ROUNDS {
        let seen = python(server, &["unpatched", "fast-greeter", "400"]).await;
        if seen["answered"].as_u64().unwrap() < 400 {
            return;
        }
        runs.push(seen);
    }
    panic!("every call of {ROUNDS} runs was answered: {runs:?}");
}
