//! Identifiers of accounts, transfers, withdrawals and deposits.
//!
//! An id a client sends is 1–64 characters of `A-Z a-z 0-9 _ - . :`. Ids the ledger derives
//! itself (settlement accounts, webhook transfers) follow the same alphabet and may be longer,
//! up to [`Id::INTERNAL_CHARS_MAX`].

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A hash map keyed by ids. Ids are chosen by clients, so the hasher is keyed with a random
/// seed per process (aHash), which keeps crafted ids from colliding on purpose while hashing
/// short strings several times faster than the standard SipHash.
pub type IdMap<V> = std::collections::HashMap<Id, V, ahash::RandomState>;

/// A hash set of ids, hashed like [`IdMap`].
pub type IdSet = std::collections::HashSet<Id, ahash::RandomState>;

/// A validated identifier. Cheap to clone (shared, immutable).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(Arc<str>);

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an id must not be empty")]
    Empty,
    #[error("an id is at most {max} characters")]
    TooLong { max: usize },
    #[error("an id may contain only A-Z a-z 0-9 _ - . :")]
    BadCharacter,
}

impl Id {
    /// Longest id a client may send.
    pub const CLIENT_CHARS_MAX: usize = 64;
    /// Longest id the ledger derives itself (prefix + provider + client id).
    pub const INTERNAL_CHARS_MAX: usize = 200;

    /// Parses an id sent by a client.
    pub fn parse(text: &str) -> Result<Id, IdError> {
        Self::parse_with_max(text, Self::CLIENT_CHARS_MAX)
    }

    /// Parses an id derived by the ledger (longer limit, same alphabet).
    pub fn parse_internal(text: &str) -> Result<Id, IdError> {
        Self::parse_with_max(text, Self::INTERNAL_CHARS_MAX)
    }

    fn parse_with_max(text: &str, max: usize) -> Result<Id, IdError> {
        if text.is_empty() {
            return Err(IdError::Empty);
        }
        if text.len() > max {
            return Err(IdError::TooLong { max });
        }
        if !text.bytes().all(is_id_byte) {
            return Err(IdError::BadCharacter);
        }
        Ok(Id(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stable 64-bit hash (FNV-1a) used to place an id on a shard. It must not depend on the
    /// process (unlike `std`'s randomized hasher) so that placement is reproducible.
    pub fn stable_hash(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.0.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }
}

/// Longest provider name (`config` refuses longer) and longest currency code.
const PROVIDER_NAME_CHARS_MAX: usize = 64;
const CURRENCY_CODE_CHARS_MAX: usize = 12;
// Every id the ledger derives fits: `dep:{provider}:{deposit id}`, `wd:{provider}:{id}` and
// `settlement:{provider}:{currency}`, with a client-length id in them.
const _: () = assert!("dep:".len() + PROVIDER_NAME_CHARS_MAX + 1 + Id::CLIENT_CHARS_MAX <= Id::INTERNAL_CHARS_MAX);
const _: () =
    assert!("settlement:".len() + PROVIDER_NAME_CHARS_MAX + 1 + CURRENCY_CODE_CHARS_MAX <= Id::INTERNAL_CHARS_MAX);
const _: () = assert!(Id::CLIENT_CHARS_MAX <= Id::INTERNAL_CHARS_MAX);

fn is_id_byte(byte: u8) -> bool {
    ID_BYTES[usize::from(byte)]
}

/// Which bytes an id may contain: `A-Z a-z 0-9 _ - . :`. A table, because every id read from
/// the log at recovery is checked again.
const ID_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte: u8 = 0;
    loop {
        table[byte as usize] = byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b':');
        if byte == u8::MAX {
            break table;
        }
        byte += 1;
    }
};

impl fmt::Display for Id {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", &*self.0)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Id, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Id::parse_internal(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_whole_alphabet() {
        assert!(Id::parse("aZ09_-.:").is_ok());
        assert!(Id::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(Id::parse(""), Err(IdError::Empty));
        assert_eq!(Id::parse(&"a".repeat(65)), Err(IdError::TooLong { max: 64 }));
        assert_eq!(Id::parse("a b"), Err(IdError::BadCharacter));
        assert_eq!(Id::parse("é"), Err(IdError::BadCharacter));
        assert_eq!(Id::parse("a/b"), Err(IdError::BadCharacter));
        assert!(Id::parse_internal(&"a".repeat(65)).is_ok());
    }

    #[test]
    fn stable_hash_is_stable() {
        // FNV-1a of "a" is a published value.
        assert_eq!(Id::parse("a").unwrap().stable_hash(), 0xaf63_dc4c_8601_ec8c);
    }
}
