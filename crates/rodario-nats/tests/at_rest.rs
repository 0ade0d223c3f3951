//! A node at rest costs the server a constant number of operations per renewal period,
//! whatever the number of its actors: it renews its one lease, not an entry per actor.

use std::time::Duration;

use rodario_core::node::Node;
use rodario_core::testkit::actors::Counter;
use rodario_core::testkit::server::free_port;
use rodario_nats::testkit::{messages_in, NatsServer};
use rodario_nats::NatsBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_node_makes_constant_kv_operations() {
    let monitor_port = free_port().unwrap();
    let fx = NatsServer::private(&["-m", &monitor_port.to_string()]);
    let ttl = Duration::from_millis(1500);
    let period = ttl / 3;
    for actors in [1, 1000] {
        let node = Node::builder(NatsBackend::connect(fx.config()).await.unwrap())
            .liveness_ttl(ttl)
            .build();
        let mut handles = Vec::new();
        for i in 0..actors {
            handles.push(
                node.spawn(Counter::named(&format!("c{i}")))
                    .start()
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(period * 2).await;
        let before = messages_in(monitor_port).await;
        tokio::time::sleep(period * 10).await;
        let during = messages_in(monitor_port).await - before;
        // Two a period (the lease's read and revision-checked write), and a renewal on
        // either edge of the window; an entry renewed per actor would be thousands.
        assert!(
            during <= 2 * 10 + 4,
            "{actors} actors: {during} messages in 10 renewal periods"
        );
        node.shutdown().await;
    }
}
