//! The built `rodario` binary against Redis and NATS servers from the backends' fixtures,
//! with this test process as the host of the actors it sees: each command's output, and
//! each mistake's one-line message and exit code.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rodario::backend::Backend;
use rodario::{ActorHandle, Node};
use rodario_nats::testkit::NatsServer;
use rodario_redis::testkit::RedisServer;
use serde_json::Value;

struct Greeter;

#[rodario::actor]
impl Greeter {
    pub fn greeting(&self, prefix: String) -> String {
        format!("Hello! My name is {prefix} Rodario")
    }

    pub async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

struct Counter {
    total: i64,
}

#[rodario::actor]
impl Counter {
    pub fn add(&mut self, n: i64) -> i64 {
        self.total += n;
        self.total
    }

    #[rodario(tag = "admin")]
    pub fn reset(&mut self) {
        self.total = 0;
    }
}

/// The binary with a broker URL and prefix.
#[derive(Clone)]
struct Cli {
    url: String,
    prefix: String,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rodario"));
        command
            .args(args)
            .env("RODARIO_URL", &self.url)
            .env("RODARIO_PREFIX", &self.prefix)
            .env_remove("RUST_BACKTRACE");
        command
    }

    /// Runs the binary off the runtime's threads, which serve the host's actors meanwhile.
    async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
            .await
            .expect("the blocking task ends")
    }

    /// Runs a command that must succeed, and returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{args:?}: {:?}: {stderr}",
            output.status
        );
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Runs a command that must fail with `code`, and returns its one stderr line.
    async fn fails(&self, args: &[&str], code: i32) -> String {
        failure(self.run(args).await, args, code)
    }
}

/// Checks a failure: exit code `code`, and one line on stderr that is no panic.
fn failure(output: Output, args: &[&str], code: i32) -> String {
    let stderr = String::from_utf8(output.stderr).expect("UTF-8 errors");
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("rodario: "), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    stderr
}

/// The actors the tests call: `greeter`, and `counter-1` and `counter-2` on the cluster
/// channel `counters`.
async fn host(backend: Backend) -> (Node, Vec<Box<dyn std::any::Any>>) {
    let node = Node::new(backend);
    let greeter: ActorHandle<Greeter> = node
        .spawn(Greeter)
        .uuid("greeter")
        .start()
        .await
        .expect("starts");
    let mut handles: Vec<Box<dyn std::any::Any>> = vec![Box::new(greeter)];
    for uuid in ["counter-1", "counter-2"] {
        let counter = node
            .spawn(Counter { total: 0 })
            .uuid(uuid)
            .start()
            .await
            .expect("starts");
        counter.join("counters").await.expect("joins");
        handles.push(Box::new(counter));
    }
    (node, handles)
}

/// Every command, and every mistake, against a host on the broker `cli` points at.
async fn exercise(cli: &Cli, backend: &str) {
    // Discovery.
    assert_eq!(
        cli.ok(&["actors"]).await,
        "counter-1\tCounter\ncounter-2\tCounter\ngreeter\tGreeter\n"
    );
    let listed: Value = serde_json::from_str(&cli.ok(&["actors", "--json"]).await).expect("JSON");
    assert_eq!(
        listed[2],
        serde_json::json!({"uuid": "greeter", "type": "Greeter"})
    );
    assert_eq!(
        cli.ok(&["methods", "counter-1"]).await,
        "Counter\n  add(n: i64)\n  reset()\t[admin]\n"
    );

    // Calls.
    assert_eq!(
        cli.ok(&["call", "greeter", "greeting", "\"The Great\""])
            .await,
        "\"Hello! My name is The Great Rodario\"\n"
    );
    assert_eq!(cli.ok(&["call", "counter-1", "add", "-3"]).await, "-3\n");
    assert_eq!(cli.ok(&["call", "counter-1", "reset"]).await, "null\n");
    let gathered = cli.ok(&["cluster", "counters", "add", "2"]).await;
    assert_eq!(
        gathered.lines().collect::<Vec<_>>(),
        ["expected 2", "2", "2"]
    );

    // The broker.
    let ping = cli.ok(&["ping"]).await;
    assert!(ping.starts_with(&format!("{backend}: ")), "{ping}");
    assert!(ping.ends_with("(3 live actors)\n"), "{ping}");

    // Leases: one holder; only its token releases it.
    let acquired = cli.ok(&["locks", "acquire", "deploy"]).await;
    let token = acquired.trim_end().rsplit(' ').next().expect("a token");
    let held = cli.fails(&["locks", "acquire", "deploy"], 1).await;
    assert!(held.contains("held by someone else"), "{held}");
    let wrong = cli
        .fails(&["locks", "release", "deploy", "--token", "nope"], 1)
        .await;
    assert!(wrong.contains("check --token"), "{wrong}");
    assert_eq!(
        cli.ok(&["locks", "release", "deploy", "--token", token])
            .await,
        "deploy\treleased\n"
    );

    // A bench: a report of the rate and the percentiles.
    let report = cli
        .ok(&[
            "bench",
            "counter-2",
            "add",
            "1",
            "--calls",
            "50",
            "--concurrency",
            "4",
        ])
        .await;
    assert!(report.contains("50 calls in"), "{report}");
    assert!(report.contains("p99.9"), "{report}");

    // Mistakes, each named with what to fix.
    let unknown = cli.fails(&["call", "nobody", "greeting", "\"x\""], 4).await;
    assert!(unknown.contains("no such actor: nobody"), "{unknown}");
    assert!(unknown.contains("rodario actors"), "{unknown}");
    let method = cli.fails(&["call", "greeter", "grating", "\"x\""], 5).await;
    assert!(method.contains("\"grating\""), "{method}");
    assert!(method.contains("rodario methods"), "{method}");
    let typed = cli.fails(&["call", "greeter", "greeting", "5"], 5).await;
    assert!(typed.contains("bad arguments"), "{typed}");
    assert!(typed.contains("expected a string"), "{typed}");
    let invalid = cli.fails(&["call", "greeter", "greeting", "Sir"], 2).await;
    assert!(
        invalid.contains("argument 1 (\"Sir\") is not valid JSON"),
        "{invalid}"
    );
    let nobody = cli.fails(&["cluster", "nobody-here", "add", "1"], 4).await;
    assert!(nobody.contains("nobody has joined"), "{nobody}");
    let bad_channel = cli.fails(&["tail", "queue:x"], 2).await;
    assert!(bad_channel.contains("actor:UUID"), "{bad_channel}");

    // Last, as the nap keeps the greeter busy after its caller gave up.
    let late = cli
        .fails(&["call", "greeter", "nap", "3000", "--timeout", "300ms"], 6)
        .await;
    assert!(late.contains("timed out after 300ms"), "{late}");
    assert!(late.contains("--timeout"), "{late}");
}

/// `tail` prints the frames on a channel as JSON lines, while the call it sees (`call`,
/// run by the binary) goes through unhindered, and ends quietly when its reader goes.
async fn tail(cli: &Cli, channel: &str, call: &[&str], method: &str) {
    let mut child = cli
        .command(&["tail", channel])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stderr).read_line(&mut line).expect("reads");
        line
    })
    .await
    .expect("the blocking task ends");
    assert_eq!(ready, format!("tailing {channel} (Ctrl-C to stop)\n"));
    // A deadline shorter than the default, so that a tail that held the call up fails the
    // test at once.
    let mut with_timeout = call.to_vec();
    with_timeout.extend(["--timeout", "3s"]);
    cli.ok(&with_timeout).await;
    let frame = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reads");
        line
    })
    .await
    .expect("the blocking task ends");
    // Its reader is gone (as `| head -1` goes): the next frame ends it quietly.
    cli.ok(&with_timeout).await;
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Some(status) = child.try_wait().expect("polls") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().expect("kills");
        panic!("tail outlived its reader");
    })
    .await
    .expect("the blocking task ends");
    assert!(status.success(), "{status:?}");
    let frame: Value = serde_json::from_str(&frame).expect("a JSON line");
    assert_eq!(frame["kind"], "call");
    assert_eq!(frame["method"], method);
    assert_eq!(frame["args"], serde_json::json!([0]));
}

/// The tails of an actor's channel and of a cluster channel.
async fn tails(cli: &Cli) {
    let call = ["call", "counter-1", "add", "0"];
    tail(cli, "actor:counter-1", &call, "add").await;
    let broadcast = ["cluster", "counters", "add", "0"];
    tail(cli, "cluster:counters", &broadcast, "add").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_redis() {
    let server = RedisServer::start().await;
    let (_node, _actors) = host(server.backend("cli").await).await;
    let cli = Cli {
        url: server.url().to_owned(),
        prefix: server.prefix("cli"),
    };
    tails(&cli).await;
    exercise(&cli, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_nats() {
    let server = NatsServer::start().await;
    let (_node, _actors) = host(server.backend().await).await;
    let cli = Cli {
        url: server.url().to_owned(),
        prefix: server.prefix().to_owned(),
    };
    tails(&cli).await;
    exercise(&cli, "nats").await;
}

/// Mistakes made before any broker answers.
#[tokio::test]
async fn bad_urls() {
    let cli = |url: &str| Cli {
        url: url.to_owned(),
        prefix: String::new(),
    };
    let scheme = cli("foo://x").fails(&["ping"], 2).await;
    assert!(scheme.contains("unknown scheme"), "{scheme}");
    assert!(scheme.contains("check --url"), "{scheme}");
    let port = cli("redis://127.0.0.1:notaport").fails(&["ping"], 2).await;
    assert!(port.contains("invalid Redis URL"), "{port}");
    let refused = cli("redis://127.0.0.1:1").fails(&["ping"], 3).await;
    assert!(refused.contains("that the broker runs"), "{refused}");
    let none = cli("").fails(&["ping"], 2).await;
    assert!(none.contains("pass --url URL or set RODARIO_URL"), "{none}");
}
