//! The fast path of the transfer routes' JSON: typed reading of well-formed transfer requests
//! and batches, and direct writing of transfer objects and batch results.
//!
//! The strict reader of [`crate::http::json`] parses a body into a `serde_json::Value` and
//! walks it, so that every error names its field and carries the contract's code; under load
//! that tree (a map and a string per field, per item) and the serializer's intermediate
//! [`TransferBody`] strings were a visible share of a batch's cost. This module reads the same
//! bodies straight into borrowed strings and writes the answers straight into one buffer.
//!
//! The rule that keeps behaviour identical: the fast reader only ever answers "here is exactly
//! the request the strict reader would have produced" or "not sure" (`None`), never an error.
//! Any body it does not fully accept (an unknown, missing, duplicated or mistyped field, an
//! array where an object belongs, an invalid id or amount, a value over a limit, too many
//! items) goes through the strict reader, which produces the error, or the same result. The
//! writers produce byte for byte what `serde_json` prints for [`TransferBody`] and
//! [`BatchResponse`](crate::http::transfers::BatchResponse); tests compare both.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use actors::BatchItemResult;
use engine::amount::parse_amount;
use engine::{Transfer, TransferRequest};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::http::RequestLimits;
use crate::http::json::{
    check_integer, check_metadata_count, check_metadata_key, check_metadata_value, check_text, parse_id,
    write_timestamp_ms,
};
use crate::http::transfers::{TIMEOUT_SECONDS_MAX, check_timeout_applies, rejection_body};

/// A string borrowed from the body when it has no escapes, owned otherwise.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// One transfer request as written, fields not yet checked.
#[derive(Default)]
struct RawTransfer<'de> {
    id: Option<Text<'de>>,
    debit_account: Option<Text<'de>>,
    credit_account: Option<Text<'de>>,
    amount: Option<Text<'de>>,
    pending: Option<bool>,
    timeout_seconds: Option<u64>,
    description: Option<Text<'de>>,
    metadata: Option<UniqueMetadata>,
}

/// Metadata as written; a key written twice is not accepted here (the strict reader names it).
struct UniqueMetadata(BTreeMap<String, String>);

impl<'de> de::Deserialize<'de> for UniqueMetadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetadataVisitor;
        impl<'de> Visitor<'de> for MetadataVisitor {
            type Value = UniqueMetadata;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMetadata, A::Error> {
                let mut metadata = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    if metadata.insert(key, value).is_some() {
                        return Err(de::Error::custom("duplicate metadata key"));
                    }
                }
                Ok(UniqueMetadata(metadata))
            }
        }
        deserializer.deserialize_map(MetadataVisitor)
    }
}

/// Fails on the second occurrence of a field.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> de::Deserialize<'de> for RawTransfer<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawTransferVisitor;
        impl<'de> Visitor<'de> for RawTransferVisitor {
            type Value = RawTransfer<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a transfer object")
            }
            // Only `visit_map`: an array is not an object here, whatever serde allows.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTransfer<'de>, A::Error> {
                let mut raw = RawTransfer::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match key.as_ref() {
                        "id" => once(&mut raw.id, map.next_value()?, "id")?,
                        "debit_account" => once(&mut raw.debit_account, map.next_value()?, "debit_account")?,
                        "credit_account" => once(&mut raw.credit_account, map.next_value()?, "credit_account")?,
                        "amount" => once(&mut raw.amount, map.next_value()?, "amount")?,
                        "pending" => once(&mut raw.pending, map.next_value()?, "pending")?,
                        "timeout_seconds" => once(&mut raw.timeout_seconds, map.next_value()?, "timeout_seconds")?,
                        "description" => once(&mut raw.description, map.next_value()?, "description")?,
                        "metadata" => once(&mut raw.metadata, map.next_value()?, "metadata")?,
                        _ => return Err(de::Error::custom("unknown field")),
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(RawTransferVisitor)
    }
}

/// A batch body as written.
struct RawBatch<'de> {
    transfers: Vec<RawTransfer<'de>>,
    atomic: Option<bool>,
}

impl<'de> de::Deserialize<'de> for RawBatch<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawBatchVisitor;
        impl<'de> Visitor<'de> for RawBatchVisitor {
            type Value = RawBatch<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a batch object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBatch<'de>, A::Error> {
                let mut transfers = None;
                let mut atomic = None;
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match key.as_ref() {
                        "transfers" => once(&mut transfers, map.next_value::<Items<'de>>()?.0, "transfers")?,
                        "atomic" => once(&mut atomic, map.next_value()?, "atomic")?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            return Err(de::Error::custom("unknown field"));
                        }
                    }
                }
                let transfers = transfers.ok_or_else(|| de::Error::missing_field("transfers"))?;
                Ok(RawBatch { transfers, atomic })
            }
        }
        deserializer.deserialize_map(RawBatchVisitor)
    }
}

/// The `transfers` array.
struct Items<'de>(Vec<RawTransfer<'de>>);

impl<'de> de::Deserialize<'de> for Items<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemsVisitor;
        impl<'de> Visitor<'de> for ItemsVisitor {
            type Value = Items<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an array of transfers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Items(items))
            }
        }
        deserializer.deserialize_seq(ItemsVisitor)
    }
}

/// The request, when every field passes the strict reader's rules (the same functions:
/// `json::parse_id`, `parse_amount`, `json::check_*`, `transfers::check_timeout_applies`);
/// `None` otherwise. The field names of the errors are never built here.
fn checked(limits: &RequestLimits, raw: RawTransfer<'_>) -> Option<TransferRequest> {
    let unnamed = String::new;
    let id = parse_id(&raw.id?.0, "").ok()?;
    let debit_account = parse_id(&raw.debit_account?.0, "").ok()?;
    let credit_account = parse_id(&raw.credit_account?.0, "").ok()?;
    let amount = parse_amount(&raw.amount?.0, limits.amount_max).ok()?;
    let pending = raw.pending.unwrap_or(false);
    let timeout_seconds = match raw.timeout_seconds {
        Some(value) => check_integer("timeout_seconds", value, TIMEOUT_SECONDS_MAX, unnamed).ok()?,
        None => 0,
    };
    check_timeout_applies(pending, timeout_seconds, unnamed).ok()?;
    let text = &limits.text;
    let description = match raw.description {
        Some(Text(description)) => {
            check_text("description", &description, text.description_chars_max, unnamed).ok()?;
            description.into_owned()
        }
        None => String::new(),
    };
    let metadata = raw.metadata.map(|metadata| metadata.0).unwrap_or_default();
    check_metadata_count("metadata", metadata.len(), text, unnamed).ok()?;
    for (name, value) in &metadata {
        check_metadata_key("metadata", name, text, unnamed).ok()?;
        check_metadata_value("metadata", value, text, unnamed).ok()?;
    }
    Some(TransferRequest { id, debit_account, credit_account, amount, pending, timeout_seconds, description, metadata })
}

/// `POST /v1/transfers` body → the request, when the body is well-formed and valid.
pub fn read_transfer(limits: &RequestLimits, body: &[u8]) -> Option<TransferRequest> {
    let raw: RawTransfer<'_> = serde_json::from_slice(body).ok()?;
    checked(limits, raw)
}

/// `POST /v1/transfers/batch` body → the requests and `atomic`, when the body is well-formed,
/// every item valid, and the batch within `batch_max`.
pub fn read_batch(limits: &RequestLimits, body: &[u8]) -> Option<(Vec<TransferRequest>, bool)> {
    let raw: RawBatch<'_> = serde_json::from_slice(body).ok()?;
    if raw.transfers.len() > limits.batch_max {
        return None;
    }
    let requests = raw.transfers.into_iter().map(|item| checked(limits, item)).collect::<Option<Vec<_>>>()?;
    Some((requests, raw.atomic.unwrap_or(false)))
}

/// Writes `text` as a JSON string, escaped exactly as `serde_json` does.
fn write_string(out: &mut Vec<u8>, text: &str) {
    let plain = text.bytes().all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("writing a string into a Vec cannot fail");
    }
}

/// Writes `amount` with exactly `scale` fractional digits as a JSON string (what
/// `Currency::format` gives).
fn write_amount(out: &mut Vec<u8>, amount: engine::Amount, scale: u32) {
    out.push(b'"');
    out.extend_from_slice(engine::amount::format_minor_units(amount.minor_units(), scale).as_bytes());
    out.push(b'"');
}

/// Appends the transfer object, byte for byte what `serde_json` prints for
/// [`TransferBody::new(transfer)`](crate::http::transfers::TransferBody::new).
pub fn write_transfer(out: &mut Vec<u8>, transfer: &Transfer) {
    let scale = transfer.currency.scale;
    out.extend_from_slice(b"{\"id\":");
    write_string(out, transfer.id.as_str());
    out.extend_from_slice(b",\"debit_account\":");
    write_string(out, transfer.debit_account.as_str());
    out.extend_from_slice(b",\"credit_account\":");
    write_string(out, transfer.credit_account.as_str());
    out.extend_from_slice(b",\"amount\":");
    write_amount(out, transfer.amount, scale);
    out.extend_from_slice(b",\"currency\":");
    write_string(out, &transfer.currency.code);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(transfer.status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"posted_amount\":");
    write_amount(out, transfer.posted_amount, scale);
    out.extend_from_slice(b",\"description\":");
    write_string(out, &transfer.description);
    out.extend_from_slice(b",\"metadata\":{");
    for (index, (key, value)) in transfer.metadata.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_string(out, value);
    }
    out.extend_from_slice(b"},\"created_at\":\"");
    write_timestamp_ms(out, transfer.created_at_ms);
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(transfer.seq).as_bytes());
    out.push(b'}');
}

/// The transfer object alone.
pub fn transfer_bytes(transfer: &Transfer) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    write_transfer(&mut out, transfer);
    out
}

/// The batch answer, byte for byte what `serde_json` prints for the
/// [`BatchResponse`](crate::http::transfers::BatchResponse) of `outcomes`.
pub fn batch_bytes(outcomes: &[BatchItemResult]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + outcomes.len() * 330);
    out.extend_from_slice(b"{\"results\":[");
    for (index, outcome) in outcomes.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        match outcome {
            BatchItemResult::Created(transfer) => {
                out.extend_from_slice(b"{\"status\":\"created\",\"transfer\":");
                write_transfer(&mut out, transfer);
                out.push(b'}');
            }
            BatchItemResult::Exists(transfer) => {
                out.extend_from_slice(b"{\"status\":\"exists\",\"transfer\":");
                write_transfer(&mut out, transfer);
                out.push(b'}');
            }
            BatchItemResult::Rejected(rejection) => {
                out.extend_from_slice(b"{\"status\":\"rejected\",\"error\":");
                serde_json::to_writer(&mut out, &rejection_body(*rejection)).expect("writing into a Vec cannot fail");
                out.push(b'}');
            }
        }
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use engine::{Currency, Id, Rejection, TransferStatus};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use serde_json::{Value, json};

    use super::*;
    use crate::http::json::TextLimits;
    use crate::http::transfers::{BatchItemBody, BatchResponse, TransferBody, parse_transfer_request};

    fn limits() -> RequestLimits {
        RequestLimits {
            amount_max: 1_000_000_000_000_000,
            batch_max: 8,
            history_limit_max: 1000,
            text: TextLimits {
                metadata_entries_max: 3,
                metadata_key_chars_max: 5,
                metadata_value_chars_max: 6,
                description_chars_max: 10,
            },
        }
    }

    /// What the strict reader makes of a single-transfer body.
    fn strict(body: &[u8]) -> Option<TransferRequest> {
        let value: Value = serde_json::from_slice(body).ok()?;
        parse_transfer_request(&limits(), &value, "").ok()
    }

    /// The fast reader never accepts what the strict one refuses, and agrees on what both
    /// accept.
    #[track_caller]
    fn agrees(body: &str) -> bool {
        let fast = read_transfer(&limits(), body.as_bytes());
        if let Some(fast) = &fast {
            assert_eq!(Some(fast), strict(body.as_bytes()).as_ref(), "{body}");
        }
        fast.is_some()
    }

    #[test]
    fn well_formed_requests_take_the_fast_path_and_match() {
        for body in [
            r#"{"id":"t-1","debit_account":"a","credit_account":"b","amount":"10.00"}"#,
            r#"{"amount":"007","credit_account":"b","debit_account":"a","id":"t:2"}"#,
            r#"{"id":"t\u002d3","debit_account":"a","credit_account":"b","amount":"1","pending":true,"timeout_seconds":30}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"1","pending":false,"timeout_seconds":0,
                "description":"caf\u00e9 \"x\"","metadata":{"k":"v","é":"ü"}}"#,
        ] {
            assert!(agrees(body), "{body}");
        }
    }

    #[test]
    fn anything_doubtful_goes_to_the_strict_reader() {
        for body in [
            r#"["t-1","a","b","10.00"]"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":10}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","other":1}"#,
            r#"{"id":"t","id":"u","debit_account":"a","credit_account":"b","amount":"10"}"#,
            r#"{"debit_account":"a","credit_account":"b","amount":"10"}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","pending":null}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","timeout_seconds":5}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","pending":true,"timeout_seconds":1.0}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","pending":true,"timeout_seconds":-1}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","pending":true,"timeout_seconds":315360001}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","description":"01234567890"}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","metadata":{"k":1}}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","metadata":{"longkey":"v"}}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","metadata":{"a":"","b":"","c":"","d":""}}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","metadata":null}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10","metadata":{"k":"v","k":"w"}}"#,
            r#"{"id":"a b","debit_account":"a","credit_account":"b","amount":"10"}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"-1"}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"1e3"}"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10"} x"#,
            r#"null"#,
            r#"{"id":"t","debit_account":"a","credit_account":"b","amount":"10""#,
        ] {
            assert!(!agrees(body), "took the fast path: {body}");
        }
    }

    #[test]
    fn random_bodies_never_disagree() {
        let mut random = SmallRng::seed_from_u64(17);
        let values = [
            "\"t\"",
            "\"a\"",
            "\"b\"",
            "\"1.5\"",
            "\"0\"",
            "1",
            "true",
            "false",
            "null",
            "{}",
            "[]",
            "\"a b\"",
            "30",
            "{\"k\":\"v\"}",
            "\"long description\"",
            "0",
        ];
        let keys = [
            "id",
            "debit_account",
            "credit_account",
            "amount",
            "pending",
            "timeout_seconds",
            "description",
            "metadata",
            "x",
        ];
        let mut accepted = 0;
        for _ in 0..20_000 {
            let fields = random.random_range(0..7);
            let mut body = String::from("{");
            // Mostly complete bodies, with random extras and random values.
            let base = [("id", "\"t\""), ("debit_account", "\"a\""), ("credit_account", "\"b\""), ("amount", "\"2\"")];
            for (index, (key, value)) in base.iter().enumerate() {
                if random.random_range(0..10) > 0 {
                    let value = if random.random_range(0..6) == 0 {
                        values[random.random_range(0..values.len())]
                    } else {
                        value
                    };
                    body.push_str(&format!("{}\"{key}\":{value}", if index > 0 && body.len() > 1 { "," } else { "" }));
                }
            }
            for _ in 0..fields {
                let key = keys[random.random_range(0..keys.len())];
                let value = values[random.random_range(0..values.len())];
                body.push_str(&format!("{}\"{key}\":{value}", if body.len() > 1 { "," } else { "" }));
            }
            body.push('}');
            if agrees(&body) {
                accepted += 1;
            }
        }
        assert!(accepted > 1000, "the fast path should take many of these: {accepted}");
    }

    #[test]
    fn batches_take_the_fast_path_only_when_every_item_does() {
        let item = r#"{"id":"t-1","debit_account":"a","credit_account":"b","amount":"10.00"}"#;
        let (requests, atomic) =
            read_batch(&limits(), format!(r#"{{"transfers":[{item},{item}]}}"#).as_bytes()).unwrap();
        assert_eq!((requests.len(), atomic), (2, false));
        assert_eq!(Some(&requests[0]), strict(item.as_bytes()).as_ref());
        let (_, atomic) =
            read_batch(&limits(), format!(r#"{{"atomic":true,"transfers":[{item}]}}"#).as_bytes()).unwrap();
        assert!(atomic);
        assert_eq!(read_batch(&limits(), br#"{"transfers":[]}"#).unwrap().0.len(), 0);
        let bad = r#"{"id":"t-1","debit_account":"a","credit_account":"b","amount":10}"#;
        for body in [
            format!(r#"{{"transfers":[{item},{bad}]}}"#),
            format!(r#"{{"transfers":[{item}],"atomic":null}}"#),
            format!(r#"{{"transfers":[{item}],"other":1}}"#),
            format!(r#"{{"transfers":[{item}],"transfers":[{item}]}}"#),
            format!(r#"{{"transfers":{item}}}"#),
            r#"{"atomic":false}"#.to_owned(),
            format!(r#"{{"transfers":[{}]}}"#, [item; 9].join(",")),
        ] {
            assert!(read_batch(&limits(), body.as_bytes()).is_none(), "{body}");
        }
    }

    fn transfer(random: &mut SmallRng, index: u64) -> Transfer {
        let currency = [Currency::new("USD", 2), Currency::new("JPY", 0), Currency::new("ETH", 18)]
            [random.random_range(0..3)]
        .clone();
        let mut metadata = BTreeMap::new();
        for entry in 0..random.random_range(0..3) {
            metadata.insert(format!("k{entry}\"\\"), format!("v\u{1}\n{entry}é"));
        }
        Transfer {
            id: Id::parse(&format!("t-{index}")).unwrap(),
            debit_account: Id::parse("user:alice.1").unwrap(),
            credit_account: Id::parse("bob_2").unwrap(),
            amount: engine::Amount::from_minor_units(random.random_range(1..1_000_000_000_000)),
            posted_amount: engine::Amount::from_minor_units(random.random_range(0..1000)),
            currency,
            pending: random.random(),
            timeout_seconds: random.random_range(0..100),
            description: ["", "rent", "quote \" and \\ and \t tab", "ünï"][random.random_range(0..4)].to_owned(),
            metadata,
            created_at_ms: random.random_range(0..4_102_444_800_000),
            seq: random.random_range(1..u64::MAX),
            status: [TransferStatus::Posted, TransferStatus::Pending, TransferStatus::Voided, TransferStatus::Expired]
                [random.random_range(0..4)],
            last_seq: 1,
        }
    }

    #[test]
    fn transfer_objects_are_what_serde_prints() {
        let mut random = SmallRng::seed_from_u64(3);
        for index in 0..2_000 {
            let transfer = transfer(&mut random, index);
            let expected = serde_json::to_vec(&TransferBody::new(&transfer)).unwrap();
            assert_eq!(String::from_utf8(transfer_bytes(&transfer)).unwrap(), String::from_utf8(expected).unwrap());
        }
    }

    #[test]
    fn batch_answers_are_what_serde_prints() {
        let mut random = SmallRng::seed_from_u64(4);
        let outcomes: Vec<BatchItemResult> = (0..50)
            .map(|index| match index % 4 {
                0 | 1 => BatchItemResult::Created(Arc::new(transfer(&mut random, index))),
                2 => BatchItemResult::Exists(Arc::new(transfer(&mut random, index))),
                _ => BatchItemResult::Rejected(
                    [Rejection::InsufficientFunds, Rejection::InvalidAmount][random.random_range(0..2)],
                ),
            })
            .collect();
        let results = outcomes
            .iter()
            .map(|outcome| match outcome {
                BatchItemResult::Created(transfer) => BatchItemBody::Created { transfer: TransferBody::new(transfer) },
                BatchItemResult::Exists(transfer) => BatchItemBody::Exists { transfer: TransferBody::new(transfer) },
                BatchItemResult::Rejected(rejection) => BatchItemBody::Rejected { error: rejection_body(*rejection) },
            })
            .collect();
        let expected = serde_json::to_vec(&BatchResponse { results }).unwrap();
        assert_eq!(String::from_utf8(batch_bytes(&outcomes)).unwrap(), String::from_utf8(expected).unwrap());
        assert_eq!(batch_bytes(&[]), serde_json::to_vec(&json!({"results": []})).unwrap());
    }
}
