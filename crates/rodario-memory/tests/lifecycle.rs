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
