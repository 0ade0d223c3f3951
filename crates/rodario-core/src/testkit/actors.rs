//! Actors the conformance suite runs; backends' own tests and benches may use them too.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{RemoteError, RemoteErrorKind};
use crate::hooks::{CallContext, Flow, Hook};
use crate::host::ClusterHandler;

/// An actor with a counter, and methods that fail, panic, sleep and run singular.
#[derive(Debug, Default)]
pub struct Counter {
    name: String,
    count: u64,
    claims: u64,
    fresh: u64,
}

impl Counter {
    /// A counter at zero called `name`.
    pub fn named(name: &str) -> Self {
        Counter {
            name: name.to_owned(),
            ..Counter::default()
        }
    }
}

#[crate::actor(crate = crate)]
impl Counter {
    /// Adds `n` and returns the new count.
    pub async fn add(&mut self, n: u64) -> u64 {
        self.count += n;
        self.count
    }

    /// The actor's name.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Fails with `message`.
    pub async fn fail(&mut self, message: String) -> Result<u64, String> {
        Err(message)
    }

    /// Panics.
    pub async fn boom(&mut self) -> u64 {
        panic!("boom in the actor")
    }

    /// Sleeps `ms` milliseconds, then returns it.
    pub async fn sleep_ms(&mut self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// The length of `data` (a `ByteBuf`: MessagePack bin, where a `Vec<u8>` would be an
    /// array of numbers, half again as large and far slower to encode).
    pub fn size(&self, data: serde_bytes::ByteBuf) -> usize {
        data.len()
    }

    /// Singular: counts a claim and returns the actor's name.
    #[rodario(singular)]
    pub async fn claim(&mut self) -> String {
        self.claims += 1;
        self.name.clone()
    }

    /// How many singular claims this actor ran.
    pub fn claims(&self) -> u64 {
        self.claims
    }

    /// Answered by a before hook without running (counts in `fresh` if it ever runs).
    #[rodario(tag = "cached", hook = ShortCircuit)]
    pub fn cached(&mut self, key: String) -> String {
        self.fresh += 1;
        format!("fresh:{key}")
    }

    /// How many times `cached` actually ran.
    pub fn fresh(&self) -> u64 {
        self.fresh
    }

    /// Returns `text`; two after hooks append `+a` then `+b`.
    #[rodario(hook = Suffix("+a"), tag = "suffixed", hook = Suffix("+b"))]
    pub fn suffixed(&self, text: String) -> String {
        text
    }
}

/// A smaller actor: a proxy typed for [`Counter`] must refuse it.
#[derive(Debug, Default)]
pub struct Named {
    /// The name it answers with.
    pub name: String,
}

#[crate::actor(crate = crate)]
impl Named {
    /// The name.
    pub fn name(&self) -> String {
        self.name.clone()
    }
}

/// A before hook that answers `cached:{key}` without running the method.
#[derive(Debug)]
pub struct ShortCircuit;

#[async_trait]
impl Hook for ShortCircuit {
    async fn before(&self, call: &CallContext<'_>) -> Result<Flow, RemoteError> {
        let (key,): (String,) = call.args()?;
        Flow::value(&format!("cached:{key}"))
    }
}

/// An after hook that appends its text to a string result.
#[derive(Debug)]
pub struct Suffix(pub &'static str);

#[async_trait]
impl Hook for Suffix {
    async fn after(
        &self,
        _call: &CallContext<'_>,
        outcome: Result<Vec<u8>, RemoteError>,
    ) -> Result<Vec<u8>, RemoteError> {
        let text: String = crate::frame::decode_value(&outcome?, "string")
            .map_err(|e| RemoteError::new(RemoteErrorKind::Hook, e.to_string()))?;
        crate::__private::encode_return(&format!("{text}{}", self.0))
    }
}

/// A cluster handler that answers every call with a fixed string.
#[derive(Debug)]
pub struct FixedAnswer(pub &'static str);

#[async_trait]
impl ClusterHandler for FixedAnswer {
    async fn handle(&self, method: &str, _args: &[u8]) -> Result<Vec<u8>, RemoteError> {
        crate::__private::encode_return(&format!("{}:{method}", self.0))
    }
}
