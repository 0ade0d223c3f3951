//! rodario-core: backend traits, actor runtime, proxies, wire frames and errors.

pub mod backend;
pub mod error;
pub mod name;

pub use error::{Error, Result};
#[cfg(feature = "testkit")]
pub mod testkit;
