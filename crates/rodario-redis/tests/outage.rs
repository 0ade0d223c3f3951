//! A real outage: the Redis server is SIGKILLed under steady traffic and restarted 4 s
//! later (`rodario_core::testkit::outage`). The backend's own command timeout (5 s, the
//! default) is longer than the calls' deadline (2 s): the deadline must win.

use std::time::Duration;

use rodario_core::testkit::outage::kill_under_traffic;
use rodario_redis::testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_end_by_their_deadline_through_a_restart_and_everything_comes_back() {
    let mut server = RedisServer::private(&[]);
    let report = kill_under_traffic(&mut server, "outage", Duration::from_secs(4)).await;
    eprintln!("redis: {report}");
}
