//! Leases in the broker: one holder at a time, released only by the holder, taken over
//! once expired (the Python library's `acquire_lock`, with tokens).
//!
//! ```text
//! cargo run --example locks
//! ```

use std::time::Duration;

use rodario::memory::MemoryBroker;
use rodario::Node;

#[tokio::main]
async fn main() -> rodario::Result<()> {
    let broker = MemoryBroker::new();
    let (a, b) = (Node::new(broker.backend()), Node::new(broker.backend()));

    let lease = a
        .locks()
        .acquire("migrate")
        .context("deploy")
        .expiry(Duration::from_millis(300))
        .await?
        .expect("nobody holds it yet");
    println!("a holds {:?}", lease.key());
    let refused = b.locks().acquire("migrate").context("deploy").await?;
    println!(
        "b while a holds it: {}",
        if refused.is_some() {
            "got it"
        } else {
            "refused"
        }
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let taken = b
        .locks()
        .acquire("migrate")
        .context("deploy")
        .await?
        .expect("an expired lease can be taken");
    println!("b after a's lease expired: got it");
    println!("a releasing its expired lease: {}", lease.release().await?);
    println!("b releasing its own: {}", taken.release().await?);
    Ok(())
}
