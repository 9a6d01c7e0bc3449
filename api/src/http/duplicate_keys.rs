//! Duplicate keys in JSON objects: a request body with the same key twice in one object is
//! refused (400 `invalid_request` naming the key), never read as "last one wins".
//!
//! This module owns [`find_duplicate_key`], a pass over the raw bytes that builds nothing: it
//! walks every object and array with serde's visitors, remembers the keys of each object, and
//! names the first key seen twice by its path (`amount`, `transfers[3].amount`, `metadata.k`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The path of the first key written twice in one object of `bytes`, if any. Bytes that are
/// not JSON give `None`: the parser that reads them afterwards reports that.
pub fn find_duplicate_key(bytes: &[u8]) -> Option<String> {
    let found = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let _ = Node { path: String::new(), found: &found }.deserialize(&mut deserializer);
    found.into_inner()
}

/// One JSON value at `path`; a duplicate found anywhere below it is written to `found`.
struct Node<'a> {
    path: String,
    found: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let mut index = 0_usize;
        while items.next_element_seed(Node { path: format!("{}[{index}]", self.path), found: self.found })?.is_some() {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if !seen.insert(key) {
                *self.found.borrow_mut() = Some(path);
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Node { path, found: self.found })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_named_by_their_path() {
        assert_eq!(find_duplicate_key(br#"{"amount": "1", "amount": "99"}"#).as_deref(), Some("amount"));
        assert_eq!(
            find_duplicate_key(br#"{"transfers": [{"id": "a"}, {"id": "b", "id": "c"}]}"#).as_deref(),
            Some("transfers[1].id")
        );
        assert_eq!(find_duplicate_key(br#"{"metadata": {"k": "1", "k": "2"}}"#).as_deref(), Some("metadata.k"));
        assert_eq!(find_duplicate_key(br#"{"a": {"k": 1}, "b": {"k": 1}}"#), None);
        assert_eq!(find_duplicate_key(br#"{"a": "\u0061", "\u0061": 2}"#).as_deref(), Some("a"));
        assert_eq!(find_duplicate_key(b"not json"), None);
    }
}
