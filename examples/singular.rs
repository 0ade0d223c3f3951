//! A cluster of workers where a `singular` job runs on exactly one member per broadcast,
//! with a before hook that answers from a cache and an after hook that tags results.
//!
//! ```text
//! cargo run --example singular
//! ```

use std::time::Duration;

use rodario::memory::MemoryBroker;
use rodario::prelude::*;
use rodario::{CallContext, Flow, Hook, RemoteError};

/// Answers `status("ping")` itself, without waking the worker.
struct Pong;

#[rodario::async_trait]
impl Hook for Pong {
    async fn before(&self, call: &CallContext<'_>) -> std::result::Result<Flow, RemoteError> {
        let (question,): (String,) = call.args()?;
        if question == "ping" {
            return Flow::value("pong (from the hook)");
        }
        Ok(Flow::Continue)
    }
}

struct Worker {
    name: String,
    jobs_run: u32,
}

#[rodario::actor]
impl Worker {
    /// Runs on exactly one member per cluster call (context "jobs", lease at least 5 s).
    #[rodario(singular(expiry_ms = 5000, context = "jobs"))]
    pub async fn nightly_report(&mut self) -> String {
        self.jobs_run += 1;
        format!("{} wrote the report", self.name)
    }

    /// Every member answers.
    #[rodario(tag = "cheap", hook = Pong)]
    pub fn status(&self, question: String) -> String {
        format!(
            "{} is fine ({question}); {} jobs run",
            self.name, self.jobs_run
        )
    }
}

#[tokio::main]
async fn main() -> rodario::Result<()> {
    // Three "processes" on one broker: two hosting workers, one calling.
    let broker = MemoryBroker::new();
    let hosts = [Node::new(broker.backend()), Node::new(broker.backend())];
    let caller = Node::builder(broker.backend())
        .call_timeout(Duration::from_secs(2))
        .build();
    for (i, name) in ["ada", "bob", "cy", "dee"].into_iter().enumerate() {
        let worker = hosts[i % 2]
            .spawn(Worker {
                name: name.into(),
                jobs_run: 0,
            })
            .start()
            .await?;
        worker.join("workers").await?;
    }

    let cluster: WorkerCluster = caller.cluster("workers")?;
    for round in 1..=3 {
        let mut replies = cluster.nightly_report().await?;
        let expected = replies.expected().await?;
        let winners: Vec<String> = (&mut replies).map(|r| r.unwrap()).collect().await;
        println!(
            "round {round}: {expected} members answered, {} declined: {winners:?}",
            replies.declined()
        );
    }
    for answer in cluster.status("ping".into()).await?.all().await? {
        println!("{answer}");
    }
    for answer in cluster.status("how are you".into()).await?.all().await? {
        println!("{answer}");
    }
    for host in &hosts {
        host.shutdown().await;
    }
    Ok(())
}
