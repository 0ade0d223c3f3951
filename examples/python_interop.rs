//! Rust and Python rodario processes on one Redis, calling each other (feature `python`).
//!
//! This process hosts a `Greeter` as `rust-greeter` and, once a Python actor `py-echo`
//! registers, calls it with a typed proxy. The Python side is the README's script ("Python
//! processes"); the Python library always connects to Redis on localhost:6379.
//!
//! ```text
//! cargo run --example python_interop --features python              # serves until Ctrl-C
//! cargo run --example python_interop --features python -- --for 30  # serves 30 seconds
//! ```
//!
//! `RODARIO_REDIS_URL` picks another server (Python processes must use the same one).

use std::time::{Duration, Instant};

use rodario::prelude::*;
use rodario::redis::RedisConfig;

/// Greets whoever calls, from Rust or from Python.
struct Greeter;

#[rodario::actor]
impl Greeter {
    /// `greeting` may be left out (a Python caller may name it: `greet(name="Bo",
    /// greeting="Howdy")`).
    pub fn greet(&self, name: String, greeting: Option<String>) -> String {
        format!(
            "{}, {name} (from Rust)",
            greeting.as_deref().unwrap_or("Hello")
        )
    }
}

/// The Python actor's methods, for a typed proxy: its bodies run only if Rust hosts one
/// (this example never does).
#[allow(dead_code)]
struct PyEcho;

#[allow(dead_code)]
#[rodario::actor]
impl PyEcho {
    /// The value, back.
    pub fn echo(&self, value: String) -> String {
        value
    }

    /// The sum.
    pub fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

#[tokio::main]
async fn main() -> rodario::Result<()> {
    let serve_for = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => None,
        [flag, seconds] if flag == "--for" => seconds.parse().ok().map(Duration::from_secs),
        _ => None,
    };
    let backend = RedisConfig::from_env().python_wire().connect().await?;
    let node = Node::builder(backend)
        .call_timeout(Duration::from_secs(5))
        .build();
    let _greeter = node.spawn(Greeter).uuid("rust-greeter").start().await?;
    println!("serving rust-greeter; Python can call it now");

    let started = Instant::now();
    let mut called_python = false;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {}
        }
        if serve_for.is_some_and(|limit| started.elapsed() >= limit) {
            break;
        }
        if called_python || !node.registry().exists("py-echo").await? {
            continue;
        }
        let echo: PyEchoProxy = node.registry().get_proxy("py-echo").await?;
        println!(
            "py-echo says {:?}",
            echo.echo("hi from Rust".into()).await?.await?
        );
        println!("py-echo adds 2 + 40 = {}", echo.add(2, 40).await?.await?);
        called_python = true;
    }
    node.shutdown().await;
    Ok(())
}
