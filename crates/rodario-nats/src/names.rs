//! Subjects, bucket names and KV keys: the mapping from rodario's names to NATS's.

use rodario_core::backend::{Channel, Group, LockKey};
use rodario_core::error::{quote_name, BackendError, BackendErrorKind};

use crate::NAME;

/// Why `token` cannot be one subject token, if it cannot.
fn token_problem(token: &str) -> Option<&'static str> {
    if token.is_empty() {
        return Some("it is empty (a NATS subject token cannot be empty)");
    }
    // Every publish checks its subject's name, and names are nearly always ASCII: bytes
    // up to the first non-ASCII one, characters from there.
    let ascii = token
        .bytes()
        .position(|b| !b.is_ascii())
        .unwrap_or(token.len());
    let (head, tail) = token.split_at(ascii);
    for b in head.bytes() {
        if let Some(problem) = char_problem(char::from(b)) {
            return Some(problem);
        }
    }
    tail.chars().find_map(char_problem)
}

/// What `c` would break in a NATS subject token, if anything.
fn char_problem(c: char) -> Option<&'static str> {
    match c {
        '.' => Some("it contains '.', which separates NATS subject tokens"),
        '*' | '>' => Some("it contains '*' or '>', which are NATS subject wildcards"),
        c if c.is_whitespace() || c.is_control() => {
            Some("it contains whitespace or control characters")
        }
        _ => None,
    }
}

/// `{inbox}.{tag}{n}`: a subject under a connection's inbox, built without the formatting
/// machinery (every call makes one).
pub(crate) fn inbox_subject(inbox: &str, tag: char, n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut subject = String::with_capacity(inbox.len() + 2 + digits.len() - start);
    subject.push_str(inbox);
    subject.push('.');
    subject.push(tag);
    subject.extend(digits[start..].iter().map(|&d| char::from(d)));
    subject
}

/// Checks that `name` (a `what`, for the message) is valid as one NATS subject token. The
/// message quotes the name as [`quote_name`] does, as do all refusals here.
pub(crate) fn check_token(what: &str, name: &str) -> Result<(), BackendError> {
    match token_problem(name) {
        None => Ok(()),
        Some(reason) => Err(BackendError::new(
            NAME,
            BackendErrorKind::InvalidInput,
            format!(
                "{what} {} cannot be used on NATS: {reason}",
                quote_name(name)
            ),
        )),
    }
}

/// The longest escaped prefix: stream names (`KV_{bucket}_locks`) must stay well inside
/// JetStream's limit of 255 characters.
const MAX_ESCAPED_PREFIX: usize = 200;

/// The longest KV key: keys are subjects, and a subject travels in a protocol line the
/// server limits (4 KiB by default) with the bucket, a reply subject and headers.
pub(crate) const MAX_KEY_LEN: usize = 2048;

/// Checks a prefix: one or more valid subject tokens joined by dots.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), BackendError> {
    if escape(prefix).len() > MAX_ESCAPED_PREFIX {
        return Err(BackendError::new(
            NAME,
            BackendErrorKind::InvalidInput,
            format!(
                "the NATS prefix {} is too long: escaped for a bucket name it must stay \
                 within {MAX_ESCAPED_PREFIX} characters",
                quote_name(prefix)
            ),
        ));
    }
    if prefix.is_empty() {
        return Err(BackendError::new(
            NAME,
            BackendErrorKind::InvalidInput,
            "the NATS prefix cannot be empty: it is the leading subject token(s) and names the KV bucket",
        ));
    }
    for token in prefix.split('.') {
        if let Some(reason) = token_problem(token) {
            return Err(BackendError::new(
                NAME,
                BackendErrorKind::InvalidInput,
                format!(
                    "the NATS prefix {} is not a dot-separated list of subject tokens: \
                     token {} is invalid: {reason}",
                    quote_name(prefix),
                    quote_name(token)
                ),
            ));
        }
    }
    Ok(())
}

/// The subject of `channel` under `prefix`: `{prefix}.actor.{uuid}`, `{prefix}.reply.{node}`
/// or `{prefix}.cluster.{name}`. Names that are not one valid token are refused.
pub(crate) fn subject(prefix: &str, channel: &Channel) -> Result<String, BackendError> {
    let (kind, what, name) = match channel {
        Channel::Actor(id) => ("actor", "actor UUID", id.as_str()),
        Channel::Reply(id) => ("reply", "node id", id.as_str()),
        Channel::Cluster(name) => ("cluster", "cluster channel", name.as_str()),
        other => {
            return Err(BackendError::new(
                NAME,
                BackendErrorKind::InvalidInput,
                format!("the NATS backend does not know channel {other}"),
            ))
        }
    };
    check_token(what, name)?;
    Ok([prefix, ".", kind, ".", name].concat())
}

/// The subject of calls to actor `actor` on node `node`: `{prefix}.node.{node}.{uuid}`. A
/// node subscribes to all of its actors' with one wildcard, [`node_wildcard`].
pub(crate) fn node_subject(prefix: &str, node: &str, actor: &str) -> Result<String, BackendError> {
    check_token("node id", node)?;
    check_token("actor UUID", actor)?;
    Ok([prefix, ".node.", node, ".", actor].concat())
}

/// The subject a node subscribes to for all of its actors' calls: `{prefix}.node.{node}.*`.
pub(crate) fn node_wildcard(prefix: &str, node: &str) -> Result<String, BackendError> {
    check_token("node id", node)?;
    Ok([prefix, ".node.", node, ".*"].concat())
}

/// The subject that taps the calls to actor `actor` on whichever node runs it:
/// `{prefix}.node.*.{uuid}`.
pub(crate) fn any_node_subject(prefix: &str, actor: &str) -> Result<String, BackendError> {
    check_token("actor UUID", actor)?;
    Ok([prefix, ".node.*.", actor].concat())
}

/// Appends `name` to `out` escaped into the characters `[A-Za-z0-9-]` and `_`: those
/// characters stand for themselves, except `_`, which introduces the two hex digits of one
/// UTF-8 byte (`.` is `_2E`, `_` is `_5F`). The empty name is a lone `_`. Reversible, so
/// two names never share an encoding.
pub(crate) fn escape_into(out: &mut String, name: &str) {
    if name.is_empty() {
        out.push('_');
        return;
    }
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push('_');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `name` escaped as by [`escape_into`].
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    escape_into(&mut out, name);
    out
}

/// Reverses [`escape`]; `None` for text that no name encodes to.
pub(crate) fn unescape(encoded: &str) -> Option<String> {
    if encoded == "_" {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut input = encoded.bytes();
    while let Some(byte) = input.next() {
        if byte == b'_' {
            let hi = hex_value(input.next()?)?;
            let lo = hex_value(input.next()?)?;
            bytes.push(hi << 4 | lo);
        } else if byte.is_ascii_alphanumeric() || byte == b'-' {
            bytes.push(byte);
        } else {
            return None;
        }
    }
    if bytes.is_empty() {
        return None;
    }
    String::from_utf8(bytes).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The suffix of the leases bucket's name.
pub(crate) const LOCKS_SUFFIX: &str = "_locks";

/// The key replicated buckets write their fences to (see `kv.rs`): no escaped name is `_`
/// followed by a lower-case letter, and every key rodario writes otherwise has a `.`.
pub(crate) const FENCE_KEY: &str = "_fence";

/// The KV buckets of a prefix, (registry, leases): the prefix escaped as by [`escape`]
/// (bucket names allow only `[A-Za-z0-9_-]`), and that with `_locks` appended, so
/// `rodario` has `rodario` and `rodario_locks`, and `tenant.a` has `tenant_2Ea` and
/// `tenant_2Ea_locks`. An escaped name has `_` only before two upper-case hex digits, so
/// `_locks` cannot end another prefix's registry bucket.
pub(crate) fn buckets(prefix: &str) -> (String, String) {
    let registry = escape(prefix);
    let locks = format!("{registry}{LOCKS_SUFFIX}");
    (registry, locks)
}

/// The key root of a registry group, ending in `.`: `a.` for the actors, `m.{channel}.` for
/// a cluster channel's members. Owners' leases are under a root of their own, `o.` (see
/// [`owner_key`]), so that listing a group never reads them.
pub(crate) fn group_root(group: Group<'_>) -> Result<String, BackendError> {
    match group {
        Group::Actors => Ok("a.".to_owned()),
        Group::Members(channel) => {
            let mut root = String::from("m.");
            escape_into(&mut root, channel.as_str());
            root.push('.');
            Ok(root)
        }
        other => Err(BackendError::new(
            NAME,
            BackendErrorKind::InvalidInput,
            format!("the NATS backend does not know registry group {other:?}"),
        )),
    }
}

fn checked_key(key: String, what: &str) -> Result<String, BackendError> {
    if key.len() > MAX_KEY_LEN {
        return Err(BackendError::new(
            NAME,
            BackendErrorKind::InvalidInput,
            format!(
                "{what} is too long for a NATS KV key: escaped it takes {} characters, over \
                 the limit of {MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    Ok(key)
}

/// The KV key of a member of a group.
pub(crate) fn member_key(root: &str, member: &str) -> Result<String, BackendError> {
    let mut key = String::with_capacity(root.len() + member.len());
    key.push_str(root);
    escape_into(&mut key, member);
    checked_key(key, "the registry member name")
}

/// The registry key of an owner's lease: `o.{owner}`, escaped.
pub(crate) fn owner_key(owner: &str) -> Result<String, BackendError> {
    let mut key = String::with_capacity(2 + owner.len());
    key.push_str("o.");
    escape_into(&mut key, owner);
    checked_key(key, "the owner's name")
}

/// The KV key of a lease: `{context}.{name}`, both escaped.
pub(crate) fn lock_key(key: &LockKey) -> Result<String, BackendError> {
    let mut out = String::new();
    escape_into(&mut out, &key.context);
    out.push('.');
    escape_into(&mut out, &key.name);
    checked_key(out, "the lock's context and name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_subjects_read_as_formatted() {
        for n in [0, 7, 10, 99, 100, 12_345, u64::MAX] {
            assert_eq!(
                inbox_subject("_INBOX.abc", 'c', n),
                format!("_INBOX.abc.c{n}")
            );
        }
    }

    #[test]
    fn tokens_are_checked_past_the_ascii_part() {
        assert_eq!(token_problem("actor-1"), None);
        assert_eq!(token_problem("ünïcode"), None);
        assert!(token_problem("a.b").is_some());
        assert!(token_problem("é>").is_some());
        assert!(
            token_problem("é\u{2003}").is_some(),
            "an em space is whitespace"
        );
        assert!(token_problem("tab\there").is_some());
    }

    #[test]
    fn escape_round_trips_and_is_key_safe() {
        for name in [
            "",
            "_",
            "a",
            "a.b",
            "a_2Eb",
            "global.lock",
            "émoji 🦀",
            "*>",
            "x/y=z",
            "-_-",
        ] {
            let encoded = escape(name);
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{encoded}"
            );
            assert_eq!(unescape(&encoded).as_deref(), Some(name), "{encoded}");
        }
        assert_ne!(escape("a.b"), escape("a_2Eb"));
        assert_eq!(unescape("_2"), None);
        assert_eq!(unescape("_zz"), None);
        assert_eq!(unescape("a.b"), None);
    }

    #[test]
    fn tokens_and_prefixes() {
        assert!(check_token("x", "ok-name_1").is_ok());
        for bad in ["", "a.b", "a*", ">", "a b"] {
            let err = check_token("actor UUID", bad).unwrap_err();
            assert_eq!(err.kind(), BackendErrorKind::InvalidInput);
        }
        assert!(check_prefix("rodario").is_ok());
        assert!(check_prefix("tenant.a").is_ok());
        for bad in ["", ".", "a..b", "a.", "a.*", "a b"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            buckets("rodario"),
            ("rodario".to_owned(), "rodario_locks".to_owned())
        );
        assert_eq!(buckets("tenant.a").0, "tenant_2Ea");
        assert!(check_prefix(&"p".repeat(200)).is_ok());
        let long = format!("{}z", "ab.".repeat(60));
        assert!(check_prefix(&long)
            .unwrap_err()
            .message()
            .contains("too long"));
        let huge = "p".repeat(10 * 1024);
        let message = check_prefix(&huge).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("10240 bytes"), "{message}");
        let message = check_prefix(&format!("{huge}.a b"))
            .unwrap_err()
            .to_string();
        assert!(message.len() < 400, "{message}");
        let message = check_token("actor UUID", &format!("{huge}."))
            .unwrap_err()
            .to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("10241 bytes"), "{message}");
        let long = LockKey {
            context: "c".into(),
            name: ".".repeat(1000),
        };
        assert_eq!(
            lock_key(&long).unwrap_err().kind(),
            BackendErrorKind::InvalidInput
        );
    }
}
