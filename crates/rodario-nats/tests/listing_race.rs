//! Listing a group while its members are rewritten must still list every live member.

use std::time::Duration;

use rodario_core::backend::Group;
use rodario_core::ClusterName;
use rodario_nats::testkit::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_while_members_are_rewritten_lists_them_all() {
    let fx = NatsServer::start().await;
    let backend = fx.backend().await;
    let registry = backend.presence().clone();
    let channel = ClusterName::new("busy").unwrap();
    let ttl = Duration::from_secs(30);
    // With the bucket's max_age, `held` rewrites every entry it finds held.
    assert!(registry.refresh_every().is_some());
    for node in ["n1", "n2", "n3"] {
        registry.keep_alive(node, ttl).await.unwrap();
        assert!(registry
            .insert(Group::Members(&channel), node, node)
            .await
            .unwrap());
    }
    let renewer = {
        let registry = registry.clone();
        let channel = channel.clone();
        tokio::spawn(async move {
            loop {
                for node in ["n1", "n2", "n3"] {
                    registry.keep_alive(node, ttl).await.unwrap();
                    let held = registry
                        .held(Group::Members(&channel), &[node], node)
                        .await
                        .unwrap();
                    assert_eq!(held, [true]);
                }
            }
        })
    };
    let mut short = 0;
    for _ in 0..300 {
        let members = registry.members(Group::Members(&channel)).await.unwrap();
        if members.len() != 3 {
            short += 1;
        }
    }
    assert!(!renewer.is_finished(), "{:?}", renewer.await);
    renewer.abort();
    assert_eq!(short, 0, "{short} of 300 listings missed a member");
}
