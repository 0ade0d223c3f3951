//! The conformance suite on Redis: one server per test (`RODARIO_REDIS_URL`, or a private
//! `redis-server`), namespaces as prefixes unique to the test.

rodario_core::conformance_suite!(async { rodario_redis::testkit::RedisServer::start().await });
