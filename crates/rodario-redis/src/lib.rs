//! Redis backend for rodario (under construction).
