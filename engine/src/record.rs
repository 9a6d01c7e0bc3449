//! Log records and their on-disk encoding.
//!
//! The log is a sequence of groups. A group is the unit the committer writes (one sled value
//! per group) and holds consecutive records: record `i` of a group has sequence
//! `first_seq + i`. A group is encoded as `[len u32][crc32c u32][version u8][payload]`
//! (little-endian), where the payload is the postcard encoding of [`Group`] and the checksum
//! covers the version byte and the payload. Enum variants are append-only: a new kind of
//! record gets a new variant at the end, so old logs keep decoding.

use serde::{Deserialize, Serialize};

use crate::account::{Metadata, Overdraft};
use crate::amount::{Amount, Currency};
use crate::id::Id;

/// Version byte of the current group encoding. Version 1 (amounts as `rust_decimal` bytes) is
/// no longer read: a log written by it is refused with [`DecodeError::Version`].
pub const GROUP_FORMAT_VERSION: u8 = 2;
/// Bytes before the payload: length, checksum, version.
pub const ENVELOPE_HEADER_BYTES: usize = 9;
const _: () = assert!(ENVELOPE_HEADER_BYTES == size_of::<u32>() + size_of::<u32>() + size_of::<u8>());

/// One decided change to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    CreateAccount {
        id: Id,
        currency: Currency,
        overdraft: Overdraft,
        metadata: Metadata,
        created_at_ms: i64,
    },
    SetFrozen {
        account: Id,
        frozen: bool,
    },
    CreateTransfer {
        id: Id,
        debit_account: Id,
        credit_account: Id,
        amount: Amount,
        currency: Currency,
        pending: bool,
        timeout_seconds: u64,
        description: String,
        metadata: Metadata,
        created_at_ms: i64,
    },
    /// Posts `posted_amount` of a hold of `pending_amount`; the rest is released.
    PostPending {
        transfer: Id,
        debit_account: Id,
        credit_account: Id,
        pending_amount: Amount,
        posted_amount: Amount,
    },
    VoidPending {
        transfer: Id,
        debit_account: Id,
        credit_account: Id,
        pending_amount: Amount,
    },
    ExpirePending {
        transfer: Id,
        debit_account: Id,
        credit_account: Id,
        pending_amount: Amount,
    },
    /// A fact of the webhook/deposit/withdrawal bookkeeping that moves no money by itself
    /// (a registered deposit order, a provider status seen). Opaque to the engine: the owner
    /// of the payload (the API layer) encodes and interprets it; replay hands it back.
    External {
        kind: String,
        key: String,
        payload: Vec<u8>,
    },
}

impl Record {
    /// The accounts whose state this record changes, debit side first.
    pub fn accounts(&self) -> (Option<&Id>, Option<&Id>) {
        match self {
            Record::CreateAccount { id, .. } => (Some(id), None),
            Record::SetFrozen { account, .. } => (Some(account), None),
            Record::CreateTransfer { debit_account, credit_account, .. }
            | Record::PostPending { debit_account, credit_account, .. }
            | Record::VoidPending { debit_account, credit_account, .. }
            | Record::ExpirePending { debit_account, credit_account, .. } => {
                (Some(debit_account), Some(credit_account))
            }
            Record::External { .. } => (None, None),
        }
    }

    /// The transfer this record creates or changes, if any.
    pub fn transfer(&self) -> Option<&Id> {
        match self {
            Record::CreateTransfer { id, .. } => Some(id),
            Record::PostPending { transfer, .. }
            | Record::VoidPending { transfer, .. }
            | Record::ExpirePending { transfer, .. } => Some(transfer),
            _ => None,
        }
    }
}

/// Consecutive records written together: record `i` has sequence `first_seq + i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub first_seq: u64,
    pub records: Vec<Record>,
    /// The submissions of more than one record (an atomic batch, the facts of one payment
    /// decision), which were acknowledged as one unit: a point-in-time restore keeps each
    /// whole or leaves it out. Single records are units of their own and are not listed.
    pub units: Vec<Unit>,
}

/// Records `start .. start + len` of a group, acknowledged together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub start: u32,
    pub len: u32,
}

impl Group {
    /// A group of records each acknowledged on its own.
    pub fn new(first_seq: u64, records: Vec<Record>) -> Group {
        Group { first_seq, records, units: Vec::new() }
    }

    /// The largest sequence at most `seq` that ends a unit, for a restore that must stop at
    /// `seq`: `seq` itself unless it falls inside a unit of this group.
    pub fn unit_end_at_or_before(&self, seq: u64) -> u64 {
        for unit in &self.units {
            let start = self.first_seq + u64::from(unit.start);
            let end = start + u64::from(unit.len) - 1;
            if start <= seq && seq < end {
                return start - 1;
            }
        }
        seq
    }

    /// Sequence of the last record (`first_seq - 1` for an empty group).
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64 - 1
    }

    /// Records with their sequences.
    pub fn sequenced(&self) -> impl Iterator<Item = (u64, &Record)> {
        (self.first_seq..).zip(self.records.iter())
    }
}

/// Why bytes are not a sound group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {0} bytes, shorter than the envelope says")]
    Truncated(usize),
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error(
        "log group format {0}, but this ledgerd reads format {GROUP_FORMAT_VERSION} only (a data dir of an earlier ledgerd cannot be read; see RUNBOOK.md, \"Upgrading\")"
    )]
    Version(u8),
    #[error("payload does not decode: {0}")]
    Payload(String),
    #[error("trailing bytes after the envelope")]
    Trailing,
}

/// Encodes a group into its checksummed envelope.
pub fn encode_group(group: &Group) -> Vec<u8> {
    let mut bytes = vec![0_u8; ENVELOPE_HEADER_BYTES];
    bytes[8] = GROUP_FORMAT_VERSION;
    // Serializing plain data into a Vec cannot fail.
    let bytes = postcard::to_extend(group, bytes).expect("postcard encoding into a Vec is infallible");
    seal(bytes)
}

/// Fills in length and checksum of an envelope whose payload follows the 9-byte header.
pub fn seal(mut bytes: Vec<u8>) -> Vec<u8> {
    let payload_len = u32::try_from(bytes.len() - ENVELOPE_HEADER_BYTES).expect("a group is smaller than 4 GiB");
    let checksum = crc32c::crc32c(&bytes[8..]);
    bytes[0..4].copy_from_slice(&payload_len.to_le_bytes());
    bytes[4..8].copy_from_slice(&checksum.to_le_bytes());
    bytes
}

/// Checks an envelope and returns its version and payload.
pub fn open(bytes: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    if bytes.len() < ENVELOPE_HEADER_BYTES {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    let payload_len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let stored = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let end = ENVELOPE_HEADER_BYTES + payload_len;
    if bytes.len() < end {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    if bytes.len() > end {
        return Err(DecodeError::Trailing);
    }
    let computed = crc32c::crc32c(&bytes[8..end]);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok((bytes[8], &bytes[ENVELOPE_HEADER_BYTES..end]))
}

/// Decodes and verifies a group.
pub fn decode_group(bytes: &[u8]) -> Result<Group, DecodeError> {
    let (version, payload) = open(bytes)?;
    if version != GROUP_FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (group, rest): (Group, &[u8]) =
        postcard::take_from_bytes(payload).map_err(|error| DecodeError::Payload(error.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Group {
        let id = |text: &str| Id::parse(text).unwrap();
        Group {
            first_seq: 7,
            units: vec![Unit { start: 0, len: 2 }],
            records: vec![
                Record::CreateAccount {
                    id: id("alice"),
                    currency: Currency::new("USD", 2),
                    overdraft: Overdraft::Limited(Amount::ZERO),
                    metadata: [("tier".to_owned(), "gold".to_owned())].into(),
                    created_at_ms: 1_700_000_000_000,
                },
                Record::CreateTransfer {
                    id: id("t-1"),
                    debit_account: id("alice"),
                    credit_account: id("bob"),
                    amount: Amount::from_minor_units(1050),
                    currency: Currency::new("USD", 2),
                    pending: true,
                    timeout_seconds: 30,
                    description: "rent".to_owned(),
                    metadata: Metadata::new(),
                    created_at_ms: 1_700_000_000_001,
                },
            ],
        }
    }

    #[test]
    fn group_round_trips() {
        let group = sample();
        let bytes = encode_group(&group);
        assert_eq!(decode_group(&bytes).unwrap(), group);
        assert_eq!(group.last_seq(), 8);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode_group(&sample());
        for index in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[index] ^= 0x40;
            assert!(decode_group(&corrupt).is_err(), "flip at {index} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = encode_group(&sample());
        for len in 0..bytes.len() {
            assert!(decode_group(&bytes[..len]).is_err(), "truncation to {len} went unnoticed");
        }
    }
}
