//! `rediss://` against a private TLS server whose certificate is signed by a test CA
//! (trusted through `SSL_CERT_FILE`). Needs the `tls` feature and `openssl` on PATH.

#![cfg(feature = "tls")]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rodario_core::backend::{Channel, Delivery, Group, TransportExt};
use rodario_core::error::BackendErrorKind;
use rodario_core::name::ActorId;
use rodario_core::testkit::server::{free_port, on_path, ServerProcess};
use rodario_redis::RedisBackend;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_connect_with_tls() {
    assert!(
        on_path("redis-server") && on_path("openssl"),
        "this test needs `redis-server` (apt-get install redis-server) and `openssl` on PATH"
    );
    let dir = std::env::temp_dir().join(format!("rodario-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=rodario test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.cnf",
        ],
    );
    let port = free_port().unwrap();
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let args: Vec<String> = vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--tls-cert-file".into(),
        file("server.crt"),
        "--tls-key-file".into(),
        file("server.key"),
        "--tls-ca-cert-file".into(),
        file("ca.crt"),
        "--tls-auth-clients".into(),
        "no".into(),
        "--requirepass".into(),
        "pw".into(),
    ];
    let _server = ServerProcess::start("redis-server", &args, port)
        .expect("redis-server with TLS (Debian's is built with TLS support)");
    // The only test in this binary, so changing the environment races with nothing.
    std::env::set_var("SSL_CERT_FILE", file("ca.crt"));

    // Plain TCP to a TLS port is not a working connection.
    let err = RedisBackend::connect(&format!("redis://:pw@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");

    let backend = RedisBackend::connect(&format!("rediss://:pw@localhost:{port}"))
        .await
        .unwrap();
    let err = RedisBackend::connect(&format!("rediss://:nope@localhost:{port}"))
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
    assert!(backend
        .presence()
        .insert(Group::Actors, "secure", "n", Duration::from_secs(5))
        .await
        .unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
