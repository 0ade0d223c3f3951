//! The conformance suite on Redis: one server per test (`RODARIO_REDIS_URL`, or a private
//! `redis-server`), namespaces as prefixes unique to the test.

mod common;

rodario_core::conformance_suite!(async { common::RedisServer::start().await });
