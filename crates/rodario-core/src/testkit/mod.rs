//! The conformance suite every backend must pass, and helpers for backend tests.
//!
//! What every backend's tests and benches share lives here once: free ports and private
//! server processes ([`server`]), names unique to a run ([`unique`]), polling until
//! something holds ([`wait`]), and self-signed certificates for TLS tests ([`tls`]). Each
//! backend crate builds its own server fixture on these (behind its `testkit` feature).
//!
//! A backend crate implements [`TestBroker`] for its test setup and invokes
//! [`conformance_suite!`](crate::conformance_suite) once in an integration test; that
//! expands to one `#[tokio::test]` per behaviour in [`cases`], so a failure names the
//! behaviour that broke. The calling crate needs `tokio` (features `macros`,
//! `rt-multi-thread`) as a dev-dependency.
//!
//! ```ignore
//! struct MyBroker { /* a server, a unique prefix */ }
//! #[async_trait::async_trait]
//! impl rodario_core::testkit::TestBroker for MyBroker {
//!     async fn connect(&self, namespace: &str) -> rodario_core::backend::Backend { todo!() }
//! }
//! rodario_core::conformance_suite!(async { MyBroker::start().await });
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::backend::{Backend, FrameStream};

pub mod actors;
pub mod backend_cases;
pub mod cases;
pub mod fault_cases;
pub mod faults;
pub mod outage;
pub mod server;
pub mod tls;
pub mod wait;

pub use wait::{eventually, until_ok};

/// A backend under test: hands out connections to one isolated namespace per test.
#[async_trait]
pub trait TestBroker: Send + Sync + 'static {
    /// A new connection, as another process would open it, to this broker's namespace
    /// `namespace`. Connections with the same namespace see each other; different
    /// namespaces (different prefixes) must not.
    async fn connect(&self, namespace: &str) -> Backend;
}

/// A name no other test run, and no other call in this process, yields: `what`, the process
/// id, a counter and the clock's nanoseconds, joined by `x`. With `what` made of letters,
/// digits and `-`, it is a valid Redis key part, NATS subject token, KV bucket name and file
/// name alike.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{what}{}x{}x{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The next frame of `stream`; panics if none comes within 5 s or the stream ended.
pub async fn next_frame(stream: &mut FrameStream) -> Bytes {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("no frame within 5 s")
        .expect("the subscription ended")
}

/// Panics if `stream` yields a frame within 200 ms.
pub async fn no_frame(stream: &mut FrameStream) {
    if let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
        panic!("unexpected frame {frame:?}");
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each running on a broker made by
/// `$broker` (an expression yielding a future of an `impl TestBroker`, evaluated per test).
#[macro_export]
macro_rules! conformance_suite {
    ($broker:expr) => {
        $crate::conformance_suite!(@cases $broker;
            cases::registry_register_exists_unregister,
            cases::taken_uuid_is_refused,
            cases::concurrent_registration_has_one_winner,
            cases::generated_uuid_is_v4,
            cases::calls_resolve_out_of_order,
            cases::pending_ready_and_get_timeout,
            cases::proxy_from_uuid_checks_methods,
            cases::discovery_answers_while_the_actor_is_busy,
            cases::local_actors_count_method_use,
            cases::missing_actor_fails_fast,
            cases::stop_unregisters,
            cases::remote_failures_are_reported_and_survived,
            cases::slow_actor_times_out,
            cases::calls_run_in_order,
            cases::malformed_frames_are_survived,
            cases::oversize_arguments_are_refused,
            cases::cluster_gathers_every_member,
            cases::one_way_calls_run_without_replies,
            cases::members_of_a_channel_are_listed,
            cases::cluster_custom_handler,
            cases::part_and_empty_cluster,
            cases::singular_runs_once_per_call,
            cases::singular_late_member_declines,
            cases::singular_broadcast_does_not_wait_for_busy_members,
            cases::hooks_short_circuit_and_replace,
            cases::locks_are_leases,
            cases::lock_contention_has_one_holder,
            cases::prefixes_isolate,
            cases::crashed_process_actors_expire,
            cases::dead_actors_fail_waiting_calls_and_fire_monitors,
            cases::shutdown_stops_actors,
            cases::full_mailbox_sheds_calls,
            cases::live_actors_stay_registered,
            cases::cluster_membership_is_renewed,
            fault_cases::disconnect_fails_calls_in_flight,
            fault_cases::calls_fail_at_once_while_disconnected,
            fault_cases::stalled_broker_ends_calls_by_deadline,
            fault_cases::lost_frames_end_calls_by_deadline,
            fault_cases::registry_and_lease_operations_end_by_deadline,
            fault_cases::singular_never_waits_past_the_callers_deadline,
            fault_cases::registrations_are_restored_on_reconnect,
            backend_cases::registry_insert_race_has_one_winner,
            backend_cases::registry_held_and_remove_are_owner_only,
            backend_cases::registry_entries_expire_with_their_owners_lease,
            backend_cases::registry_groups_are_separate,
            backend_cases::lock_acquire_race_has_one_winner,
            backend_cases::lock_release_and_renew_are_token_checked,
            backend_cases::lock_leases_expire,
            backend_cases::zero_ttls_are_refused,
            backend_cases::publish_reports_delivery,
            backend_cases::frame_published_after_subscribe_is_delivered,
            backend_cases::closed_or_dropped_subscription_gets_no_frames
        );
    };
    (@cases $broker:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let broker = $broker.await;
                $crate::testkit::$module::$case(&broker).await;
            }
        )*
    };
}
