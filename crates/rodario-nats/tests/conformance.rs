//! The conformance suite on NATS: one fixture (server and unique prefix) per case;
//! namespaces are prefixes under it.

mod common;

rodario_core::conformance_suite!(async { common::Fixture::new().await });
