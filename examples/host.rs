//! A process that serves a few actors until Ctrl-C, for trying the `rodario` command (or
//! your own client) in another terminal.
//!
//! It serves a `Greeter` under the UUID `greeter`, and two `Counter`s, `counter-1` and
//! `counter-2`, that joined the cluster channel `counters`.
//!
//! ```text
//! cargo run --example host --features redis -- --backend redis   # RODARIO_REDIS_URL, else redis://127.0.0.1:6379
//! cargo run --example host --features nats -- --backend nats     # RODARIO_NATS_URL, else nats://127.0.0.1:4222
//! cargo run --example host --features redis -- --url redis://127.0.0.1:6380
//! ```
//!
//! (`--backend memory` works too, but a memory broker lives in one process: only the host
//! itself sees its actors.)

use std::time::Duration;

use rodario::prelude::*;

/// An actor that introduces itself.
struct Greeter {
    name: String,
}

#[rodario::actor]
impl Greeter {
    /// A greeting with the caller's choice of title.
    pub fn greeting(&self, prefix: String) -> String {
        format!("Hello! My name is {prefix} {}", self.name)
    }

    /// Answers after `ms` milliseconds: a slow method, to see deadlines at work.
    pub async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// A running total.
struct Counter {
    total: i64,
}

#[rodario::actor]
impl Counter {
    /// Adds `n` and returns the new total.
    pub fn add(&mut self, n: i64) -> i64 {
        self.total += n;
        self.total
    }

    /// The total so far.
    pub fn total(&self) -> i64 {
        self.total
    }

    /// Sets the total back to zero.
    #[rodario(tag = "admin")]
    pub fn reset(&mut self) {
        self.total = 0;
    }
}

/// The broker URL from `--backend NAME` (default `memory`) or `--url URL`, taking servers'
/// URLs from the environment as the backends do.
fn broker_url() -> Result<String, String> {
    const USAGE: &str = "usage: host [--backend memory|redis|nats | --url URL]";
    let mut args = std::env::args().skip(1);
    let mut backend = "memory".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backend" => backend = args.next().ok_or("--backend needs a name")?,
            "--url" => return args.next().ok_or_else(|| "--url needs a URL".to_owned()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let from_env =
        |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
    match backend.as_str() {
        "memory" => Ok("memory:".to_owned()),
        "redis" => Ok(from_env("RODARIO_REDIS_URL", "redis://127.0.0.1:6379")),
        "nats" => Ok(from_env("RODARIO_NATS_URL", "nats://127.0.0.1:4222")),
        other => Err(format!("unknown backend {other:?}; {USAGE}")),
    }
}

#[tokio::main]
async fn main() -> rodario::Result<()> {
    let url = broker_url().unwrap_or_else(|usage| {
        eprintln!("{usage}");
        std::process::exit(2)
    });
    let node = Node::new(rodario::connect(&url).await?);

    let greeter = node
        .spawn(Greeter {
            name: "Rodario".into(),
        })
        .uuid("greeter")
        .start()
        .await?;
    let mut counters = Vec::new();
    for uuid in ["counter-1", "counter-2"] {
        let counter = node.spawn(Counter { total: 0 }).uuid(uuid).start().await?;
        counter.join("counters").await?;
        counters.push(counter);
    }
    println!("serving greeter, counter-1 and counter-2 (cluster channel `counters`) on {url}; Ctrl-C to stop");

    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for Ctrl-C ({e}); stopping");
    }
    // Stopped, not just dropped, so that they leave the registry at once rather than when
    // their registrations lapse.
    greeter.stop().await;
    for counter in counters {
        counter.stop().await;
    }
    node.shutdown().await;
    Ok(())
}
