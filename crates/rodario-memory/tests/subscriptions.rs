//! Nodes subscribe once per channel and unsubscribe when done: what a broker would see.

use rodario_core::backend::Channel;
use rodario_core::testkit::actors::Counter;
use rodario_core::{ActorId, ClusterName, Node};
use rodario_memory::MemoryBroker;

#[tokio::test]
async fn a_node_subscribes_once_per_channel_and_cleans_up() {
    let broker = MemoryBroker::new();
    let node = Node::new(broker.backend_with_prefix("p:"));
    let cluster = Channel::Cluster(ClusterName::new("workers").unwrap());
    let own = Channel::Actor(ActorId::new("one").unwrap());

    let one = node
        .spawn(Counter::default())
        .uuid("one")
        .start()
        .await
        .unwrap();
    let two = node
        .spawn(Counter::default())
        .uuid("two")
        .start()
        .await
        .unwrap();
    assert_eq!(broker.subscriptions("p:", &own), 1);
    one.join("workers").await.unwrap();
    two.join("workers").await.unwrap();
    assert_eq!(
        broker.subscriptions("p:", &cluster),
        1,
        "one per node, not per actor"
    );
    assert_eq!(
        broker.subscriptions("", &cluster),
        0,
        "the prefix is part of the name"
    );

    one.part("workers").await.unwrap();
    assert_eq!(broker.subscriptions("p:", &cluster), 1);
    two.stop().await;
    assert_eq!(
        broker.subscriptions("p:", &cluster),
        0,
        "stop parts the last member"
    );
    one.stop().await;
    assert_eq!(broker.subscriptions("p:", &own), 0, "stop unsubscribes");
}
