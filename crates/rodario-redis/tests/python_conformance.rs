//! The conformance suite with every node on the Python wire (`RedisConfig::python_wire`):
//! rodario nodes still reach each other with deadlines, typed errors and cluster counts
//! intact while every call they publish is a pickle a Python actor could read.

use rodario_core::backend::Backend;
use rodario_core::testkit::TestBroker;
use rodario_redis::testkit::RedisServer;

struct PythonWireRedis(RedisServer);

#[async_trait::async_trait]
impl TestBroker for PythonWireRedis {
    async fn connect(&self, namespace: &str) -> Backend {
        self.0
            .config(namespace)
            .python_wire()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.0.url()))
    }
}

rodario_core::conformance_suite!(async { PythonWireRedis(RedisServer::start().await) });
