//! Asks to an actor in the same process: kameo, ractor, rodario's memory backend, and the
//! floor under all of them (a tokio `mpsc` request carrying a `oneshot` reply, the raw
//! baseline of rodario's `benches/memory.rs`). Each keeps a running total, as rodario's
//! test counter does.

use kameo::actor::Spawn;
use kameo::message::{Context, Message};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rodario::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

use crate::measure::{figures, Figures, Settings};
use crate::Counter;

/// The tokio channels alone: an echo task answering through a `oneshot` per request.
pub fn tokio_channels(rt: &Runtime, settings: Settings) -> Figures {
    let requests = rt.block_on(async {
        let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(1024);
        tokio::spawn(async move {
            let mut total = 0;
            while let Some((n, reply)) = rx.recv().await {
                total += n;
                // The caller waits for it; a caller gone has nothing to be told.
                let _ = reply.send(total);
            }
        });
        tx
    });
    figures(rt, settings, || async {
        let (tx, rx) = oneshot::channel();
        requests.send((1, tx)).await.expect("the echo task ended");
        rx.await.expect("the echo task dropped a reply");
    })
}

/// kameo's counter, the example of its README.
#[derive(kameo::Actor)]
struct KameoCounter {
    total: u64,
}

struct Add(u64);

impl Message<Add> for KameoCounter {
    type Reply = u64;

    async fn handle(&mut self, Add(n): Add, _: &mut Context<Self, Self::Reply>) -> u64 {
        self.total += n;
        self.total
    }
}

pub fn kameo(rt: &Runtime, settings: Settings) -> Figures {
    let actor = rt.block_on(async { KameoCounter::spawn(KameoCounter { total: 0 }) });
    figures(rt, settings, || async {
        actor.ask(Add(1)).await.expect("kameo's ask failed");
    })
}

/// A message of ractor's own, local only (no `RactorClusterMessage` serialisation: with
/// ractor's `cluster` feature on, which ractor_cluster needs, a local message implements
/// `ractor::Message` with its defaults).
enum LocalAdd {
    Add(u64, RpcReplyPort<u64>),
}

impl ractor::Message for LocalAdd {}

struct RactorCounter;

impl Actor for RactorCounter {
    type Msg = LocalAdd;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<LocalAdd>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<LocalAdd>,
        LocalAdd::Add(n, reply): LocalAdd,
        total: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *total += n;
        reply.send(*total)?;
        Ok(())
    }
}

pub fn ractor(rt: &Runtime, settings: Settings) -> Figures {
    let (actor, _) = rt
        .block_on(Actor::spawn(None, RactorCounter, ()))
        .expect("the ractor actor did not start");
    let result = figures(rt, settings, || async {
        ractor::call!(actor, LocalAdd::Add, 1).expect("ractor's call failed");
    });
    actor.stop(None);
    result
}

/// A host node with the counter and a caller node on one memory broker, as rodario's
/// `call_sequential/memory` bench.
pub fn rodario_memory(rt: &Runtime, settings: Settings) -> Figures {
    let (host, caller, proxy) = rt.block_on(async {
        let broker = rodario::memory::MemoryBroker::new();
        let host = Node::new(broker.backend());
        let caller = Node::new(broker.backend());
        host.spawn(Counter::default())
            .uuid("local")
            .start()
            .await
            .expect("the rodario actor did not start");
        let proxy: crate::CounterProxy = caller
            .registry()
            .get_proxy("local")
            .await
            .expect("no proxy to the rodario actor");
        (host, caller, proxy)
    });
    let result = figures(rt, settings, || async {
        proxy
            .add(1)
            .await
            .expect("rodario's call was not sent")
            .await
            .expect("rodario's call failed");
    });
    rt.block_on(async {
        caller.shutdown().await;
        host.shutdown().await;
    });
    result
}
