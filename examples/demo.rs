//! The story of the Python library's demo, on rodario.
//!
//! Two actors, one with a chosen UUID; a method called on a proxy from the live actor and
//! on a proxy built from the UUID; two pending replies resolved out of order; and a cluster
//! broadcast whose receiver count is printed before the replies.
//!
//! ```text
//! cargo run --example demo                                    # memory: no server needed
//! cargo run --example demo --features redis -- --backend redis  # RODARIO_REDIS_URL, else redis://127.0.0.1:6379
//! cargo run --example demo --features redis -- --backend redis-cluster  # RODARIO_REDIS_CLUSTER_URL, else redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002
//! cargo run --example demo --features nats -- --backend nats    # RODARIO_NATS_URL, else nats://127.0.0.1:4222
//! ```

use std::time::Duration;

use rodario::prelude::*;

/// An actor that introduces itself.
struct Greeter {
    name: String,
}

#[rodario::actor]
impl Greeter {
    /// A greeting with the caller's choice of title.
    pub async fn greeting(&mut self, prefix: String) -> String {
        format!("Hello! My name is {prefix} {}", self.name)
    }
}

/// The broker URL for `--backend NAME` (default `memory`), taking servers' URLs from the
/// environment as the backends do.
fn broker_url() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut backend = "memory".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--backend" => backend = args.next().ok_or("--backend needs a name")?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: demo [--backend memory|redis|redis-cluster|nats]"
                ))
            }
        }
    }
    let from_env =
        |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
    match backend.as_str() {
        "memory" => Ok("memory:".to_owned()),
        "redis" => Ok(from_env("RODARIO_REDIS_URL", "redis://127.0.0.1:6379")),
        "redis-cluster" => Ok(from_env(
            "RODARIO_REDIS_CLUSTER_URL",
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
        )),
        "nats" => Ok(from_env("RODARIO_NATS_URL", "nats://127.0.0.1:4222")),
        other => Err(format!(
            "unknown backend {other:?}; expected memory, redis, redis-cluster or nats"
        )),
    }
}

#[tokio::main]
async fn main() -> rodario::Result<()> {
    let url = broker_url().unwrap_or_else(|usage| {
        eprintln!("{usage}");
        std::process::exit(2)
    });
    let node = Node::new(rodario::connect(&url).await?);

    // Two actors: one under a UUID we choose, one under a generated UUID.
    let rodario = node
        .spawn(Greeter {
            name: "Rodario".into(),
        })
        .uuid("rodario")
        .start()
        .await?;
    let eve = node.spawn(Greeter { name: "Eve".into() }).start().await?;
    println!("actors: {:?}", node.registry().actors().await?);

    // A proxy from the live actor, and one built from the UUID alone (it asks the actor
    // for its methods first, as the original does).
    let direct = rodario.proxy();
    println!("{}", direct.greeting("The Elegant".into()).await?.await?);
    let by_uuid: GreeterProxy = node.registry().get_proxy("rodario").await?;

    // Two calls in flight; the second is read first.
    let first = by_uuid.greeting("The Great".into()).await?;
    let second = eve.proxy().greeting("The Magnificent".into()).await?;
    println!("{}", second.get(Duration::from_secs(1)).await?);
    println!("{}", first.await?);

    // A cluster broadcast: the gatherer learns how many replies to expect, then yields each.
    rodario.join("greeters").await?;
    eve.join("greeters").await?;
    let cluster: GreeterCluster = node.cluster("greeters")?;
    let mut replies = cluster.greeting("cluster member".into()).await?;
    println!("receivers: {}", replies.expected().await?);
    while let Some(reply) = replies.next().await {
        println!("{}", reply?);
    }

    node.shutdown().await;
    Ok(())
}
