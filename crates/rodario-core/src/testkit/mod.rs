//! The conformance suite every backend must pass, and helpers for backend tests.
//!
//! A backend crate implements [`TestBroker`] for its test setup and calls
//! [`conformance_suite!`](crate::conformance_suite) once; that expands to one
//! `#[tokio::test]` per behaviour, so a failure names the behaviour that broke.

use async_trait::async_trait;

use crate::backend::Backend;

pub mod server;

/// A backend under test: hands out connections to one isolated namespace per test.
#[async_trait]
pub trait TestBroker: Send + Sync + 'static {
    /// A new connection, as another process would open it, to this broker's namespace
    /// `namespace`. Connections with the same namespace see each other; different
    /// namespaces (different prefixes) must not.
    async fn connect(&self, namespace: &str) -> Backend;
}
