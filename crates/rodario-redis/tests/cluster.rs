//! The conformance suite on a private Redis Cluster of six servers (three primaries, three
//! replicas), started once for this binary; namespaces as prefixes unique to the test.

rodario_core::conformance_suite!(async { rodario_redis::testkit::RedisCluster::shared().await });
