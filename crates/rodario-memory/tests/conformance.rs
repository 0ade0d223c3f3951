//! The conformance suite on the in-memory backend.

use async_trait::async_trait;
use rodario_core::backend::Backend;
use rodario_core::testkit::TestBroker;
use rodario_memory::MemoryBroker;

/// One private broker per test; namespaces are prefixes on it.
struct Memory(MemoryBroker);

#[async_trait]
impl TestBroker for Memory {
    async fn connect(&self, namespace: &str) -> Backend {
        self.0.backend_with_prefix(&format!("{namespace}:"))
    }
}

rodario_core::conformance_suite!(async { Memory(MemoryBroker::new()) });
