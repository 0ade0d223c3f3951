//! NATS backend for rodario (under construction).
