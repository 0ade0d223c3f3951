//! `rediss://` against a private TLS server whose certificate is signed by a test CA
//! (trusted through `SSL_CERT_FILE`). Needs the `tls` feature, and `redis-server` and
//! `openssl` on PATH.

#![cfg(feature = "tls")]

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rodario_core::backend::{Channel, Delivery, Group, TransportExt};
use rodario_core::error::BackendErrorKind;
use rodario_core::name::ActorId;
use rodario_core::testkit::tls::Certificates;
use rodario_redis::testkit::RedisServer;
use rodario_redis::RedisBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_connect_with_tls() {
    let certificates = Certificates::generate();
    // Debian's redis-server is built with TLS support.
    let server = RedisServer::private_tls(&certificates, &["--requirepass", "pw"]);
    let port = server.port();
    // The only test in this binary, so changing the environment races with nothing.
    std::env::set_var("SSL_CERT_FILE", certificates.ca());

    // Plain TCP to a TLS port is not a working connection.
    let err = RedisBackend::connect(&format!("redis://:pw@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");

    let backend = RedisBackend::connect(&server.url_with("", "pw"))
        .await
        .unwrap();
    let err = RedisBackend::connect(&server.url_with("", "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Auth, "{err}");

    let channel = Channel::Actor(ActorId::new("secure").unwrap());
    let mut sub = backend
        .transport()
        .subscribe_stream(&channel)
        .await
        .unwrap();
    assert_eq!(
        backend
            .transport()
            .publish(&channel, Bytes::from_static(b"sealed"))
            .await
            .unwrap(),
        Delivery::Exact(1)
    );
    let frame = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame, "sealed");
    backend
        .presence()
        .keep_alive("n", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(backend
        .presence()
        .insert(Group::Actors, "secure", "n")
        .await
        .unwrap());
}
