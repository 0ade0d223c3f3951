//! The conformance suite on NATS: one fixture (server and unique prefix) per case;
//! namespaces are prefixes under it.

rodario_core::conformance_suite!(async { rodario_nats::testkit::NatsServer::start().await });
