//! rodario
pub use rodario_core::*;
