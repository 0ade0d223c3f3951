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
/// on every call, some by a key read off the wire: a multiply per eight bytes costs a few
/// instructions where SipHash costs about 140 per lookup (and FNV-1a, a multiply per byte,
/// about 150 for a 40-byte channel name), and keys a sender chooses only miss; they are
/// never inserted, so they cannot crowd a bucket. Not for maps a peer can insert into.
pub type LocalKeys = BuildHasherDefault<LocalHasher>;

/// A multiplicative hash taking eight bytes a step; see [`LocalKeys`].
pub struct LocalHasher(u64);

impl Default for LocalHasher {
    /// A state that is not zero: zero bytes would leave a zero state as it is.
    fn default() -> Self {
        LocalHasher(SPREAD)
    }
}

/// An odd 64-bit constant with its bits spread evenly: each step's multiply carries every
/// input bit into the high half of the state.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

impl LocalHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(SPREAD).rotate_left(23);
    }
}

impl Hasher for LocalHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            // The tail's length too, in its top byte: "a" and "a\0" differ.
            let word = tail
                .iter()
                .fold(0, |word, &byte| (word << 8) | u64::from(byte));
            self.add(word ^ ((tail.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        // Hash tables take a bucket from the low bits: fold the well-mixed high half in.
        self.0 ^ (self.0 >> 29)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    fn hash(value: impl std::hash::Hash) -> u64 {
        LocalKeys::default().hash_one(value)
    }

    /// Keys a node makes (call ids in a row, channel names that differ in one character
    /// anywhere, names that differ only in length) spread over a table's buckets.
    #[test]
    fn local_keys_spread_over_buckets() {
        let buckets = |hashes: &[u64]| {
            hashes
                .iter()
                .map(|hash| hash & 1023)
                .collect::<HashSet<_>>()
                .len()
        };
        let ids: Vec<u64> = (1..=1024u64).map(hash).collect();
        assert!(buckets(&ids) > 600, "call ids: {} buckets", buckets(&ids));
        let base = "proxy:6f0c7e1a-3b7d-4c2a-9d0e-5a1b2c3d4e5f";
        let names: Vec<u64> = (0..base.len())
            .flat_map(|at| {
                (0..24u8).map(move |shift| {
                    let mut name = base.as_bytes().to_vec();
                    name[at] = b'a' + shift;
                    hash(String::from_utf8(name).unwrap())
                })
            })
            .collect();
        let distinct: HashSet<u64> = names.iter().copied().collect();
        assert!(
            distinct.len() > names.len() * 9 / 10,
            "{} of {}",
            distinct.len(),
            names.len()
        );
        assert!(buckets(&names) > 600, "names: {} buckets", buckets(&names));
        let lengths: HashSet<u64> = (0..64)
            .map(|len| {
                let mut hasher = LocalHasher::default();
                hasher.write(&vec![0; len]);
                hasher.finish()
            })
            .collect();
        assert_eq!(lengths.len(), 64, "zero runs of every length hash apart");
    }
}
