//! A flood: a busy actor is sent far more than Redis lets a subscriber fall behind by
//! (`client-output-buffer-limit pubsub`, 32 MB hard by default). The node reads its
//! connection continuously, so Redis never disconnects it; what the mailbox cannot hold is
//! shed at once with `Overloaded`, every call ends by its deadline, and the actor serves on.

use std::time::Duration;

use rodario_core::testkit::actors::Counter;
use rodario_core::testkit::actors::CounterProxy;
use rodario_core::{Error, Node};
use rodario_redis::testkit::RedisServer;
use serde_bytes::ByteBuf;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);
const CALLS: usize = 1_500;
const PAYLOAD: usize = 48 * 1024;
const MAILBOX: usize = 64;
/// How long the actor is busy while the flood arrives.
const BUSY: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_not_disconnected() {
    let server = RedisServer::private(&[]);
    let host = Node::builder(server.backend("flood").await)
        .mailbox_capacity(MAILBOX)
        .call_timeout(DEADLINE)
        .build();
    let caller = Node::builder(server.backend("flood").await)
        .call_timeout(DEADLINE)
        .build();
    let _actor = host
        .spawn(Counter::named("busy"))
        .uuid("busy")
        .start()
        .await
        .unwrap();
    let proxy: CounterProxy = caller.registry().proxy("busy").unwrap();
    // Keeps the actor busy while the flood arrives.
    let busy = proxy.sleep_ms(BUSY.as_millis() as u64).await.unwrap();

    let started = Instant::now();
    let blob = ByteBuf::from(vec![7u8; PAYLOAD]);
    let mut pending = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        pending.push(proxy.size(blob.clone()).await.unwrap());
    }
    let sent = started.elapsed();
    let timed = pending.into_iter().map(|reply| async move {
        let outcome = reply.await;
        (outcome, started.elapsed())
    });
    let outcomes = futures_util::future::join_all(timed).await;
    let (mut served, mut shed, mut last_shed) = (0, 0, Duration::ZERO);
    for (outcome, at) in outcomes {
        match outcome {
            Ok(size) => {
                assert_eq!(size, PAYLOAD);
                served += 1;
            }
            Err(Error::Overloaded { .. }) => {
                shed += 1;
                last_shed = last_shed.max(at);
            }
            Err(other) => panic!("a flooded call ended with {other}"),
        }
    }
    let ended = started.elapsed();
    busy.await.unwrap();
    eprintln!(
        "{CALLS} calls of {} KiB ({} MB) published in {sent:?}: {served} served, {shed} shed \
         with Overloaded (the last of them answered {last_shed:?} after the flood began, \
         while the actor was still busy), all ended after {ended:?}",
        PAYLOAD / 1024,
        CALLS * PAYLOAD / 1_000_000
    );
    assert!(
        last_shed < BUSY,
        "shed calls were answered only after {last_shed:?}, once the actor was free"
    );
    assert!(ended < DEADLINE, "the flood's calls ended after {ended:?}");
    assert!(
        shed >= CALLS - 4 * MAILBOX,
        "only {shed} of {CALLS} calls were shed"
    );
    assert!(served >= MAILBOX / 2, "only {served} calls were served");
    // Still subscribed (Redis did not drop the connection) and serving.
    assert_eq!(
        server
            .numsub(&format!("{}actor:busy", server.prefix("flood")))
            .await,
        1
    );
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 1);
}
