//! Small helpers the rest of the crate shares: poison-proof mutex guards, wall-clock
//! milliseconds, and the hasher of maps whose keys the node chose itself.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Locks `mutex`, taking its data even when a panic poisoned it: every critical section in
/// this crate is a single map or set operation, so the data is consistent either way.
pub(crate) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Milliseconds since the Unix epoch at `at` (0 before it): how frames carry deadlines.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Hashes for maps whose every key the process inserted itself (call ids from a node's
/// counter, an actor type's method names, a broker's channel names) and that are looked up
/// on every call, some by a key read off the wire: FNV-1a costs a few instructions where
/// SipHash costs about 140 per lookup, and keys a sender chooses only miss; they are never
/// inserted, so they cannot crowd a bucket. Not for maps a peer can insert into.
pub type LocalKeys = BuildHasherDefault<LocalHasher>;

/// FNV-1a (64 bits); see [`LocalKeys`].
pub struct LocalHasher(u64);

impl Default for LocalHasher {
    fn default() -> Self {
        LocalHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for LocalHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
