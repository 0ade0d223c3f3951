//! Actor lifecycle edges that do not depend on the broker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rodario_core::{ActorHandle, Error, Node};
use rodario_memory::MemoryBroker;

/// An actor that can stop itself from one of its methods.
struct Quitter {
    me: Arc<Mutex<Option<ActorHandle<Quitter>>>>,
}

#[rodario_core::actor(crate = rodario_core)]
impl Quitter {
    /// Stops this actor, then answers.
    pub async fn quit(&mut self) -> String {
        let handle = self.me.lock().unwrap().take();
        if let Some(handle) = handle {
            handle.stop().await;
        }
        "bye".to_owned()
    }
}

#[tokio::test]
async fn an_actor_can_stop_itself() {
    let node = Node::new(MemoryBroker::new().backend());
    let me = Arc::new(Mutex::new(None));
    let handle = node
        .spawn(Quitter { me: me.clone() })
        .uuid("quitter")
        .start()
        .await
        .unwrap();
    *me.lock().unwrap() = Some(handle.clone());
    let proxy = handle.proxy().with_timeout(Duration::from_secs(2));
    assert_eq!(proxy.quit().await.unwrap().await.unwrap(), "bye");
    assert!(!node.registry().exists("quitter").await.unwrap());
    tokio::time::timeout(Duration::from_secs(1), async {
        while handle.is_alive() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the actor ends after the method that stopped it");
    let after = proxy.quit().await;
    assert!(
        matches!(after, Err(Error::InvalidActor { .. })),
        "{after:?}"
    );
}

/// "No deadline" spelt `Duration::MAX` works for calls, clusters, leases and liveness,
/// instead of overflowing the clock.
#[tokio::test]
async fn durations_too_long_for_the_clock_are_capped() {
    use rodario_core::testkit::actors::{Counter, CounterCluster};
    use rodario_core::ClusterProxy;

    let node = Node::builder(MemoryBroker::new().backend())
        .call_timeout(Duration::MAX)
        .liveness_ttl(Duration::MAX)
        .build();
    let actor = node.spawn(Counter::default()).start().await.unwrap();
    assert_eq!(actor.proxy().add(2).await.unwrap().await.unwrap(), 2);
    let proxy = actor.proxy().with_timeout(Duration::MAX);
    assert_eq!(
        proxy
            .add(1)
            .await
            .unwrap()
            .get(Duration::MAX)
            .await
            .unwrap(),
        3
    );
    actor.join("forever").await.unwrap();
    let cluster: CounterCluster = node.cluster("forever").unwrap();
    assert_eq!(cluster.add(1).await.unwrap().all().await.unwrap(), vec![4]);
    let untyped = node
        .cluster::<ClusterProxy>("forever")
        .unwrap()
        .with_timeout(Duration::MAX);
    let values: Vec<u64> = untyped
        .call("add", (1,))
        .await
        .unwrap()
        .all()
        .await
        .unwrap();
    assert_eq!(values, vec![5]);
    let lease = node
        .locks()
        .acquire("forever")
        .expiry(Duration::MAX)
        .await
        .unwrap()
        .expect("a free lock");
    assert!(lease.renew(Duration::MAX).await.unwrap());
    assert!(lease.release().await.unwrap());
}

/// The memory broker keeps time on tokio's clock, so a test can pause it and jump ahead:
/// a crashed process's registration lapses after its TTL without the test waiting for it.
#[tokio::test(start_paused = true)]
async fn liveness_follows_paused_time() {
    use rodario_core::testkit::actors::Counter;

    let broker = MemoryBroker::new();
    let observer = Node::new(broker.backend());
    let doomed = Node::builder(broker.backend())
        .liveness_ttl(Duration::from_secs(60))
        .build();
    let actor = doomed
        .spawn(Counter::default())
        .uuid("mortal")
        .start()
        .await
        .unwrap();
    doomed.simulate_crash().await;
    drop(actor);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(observer.registry().exists("mortal").await.unwrap());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(!observer.registry().exists("mortal").await.unwrap());
}
