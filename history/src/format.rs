//! The byte layouts of the history's files, each checksummed.
//!
//! - `transfers.dat`: one [`TransferRecord`] of [`TRANSFER_RECORD_BYTES`] per stored transfer,
//!   at `ordinal × 128` (ordinals count transfers in log order). Little-endian; the last four
//!   bytes are the crc32c of the others. Status, posted amount and last sequence change in
//!   place when a hold is posted, voided or expired; the rest never changes.
//! - `strings.dat`, `accounts.dat`, `facts.dat`: append-only frames `[len u32][crc32c
//!   u32][payload]` (the checksum covers the payload), whose payloads are the postcard
//!   encodings of [`TransferStrings`], [`AccountEntry`] and [`FactEntry`].
//! - `pages.idx`: the creation sequence of the first record of every page of `transfers.dat`
//!   (u64 each), so that a sequence is found in one page read.
//! - `heads-<n>.dat`: for every account (by ordinal), the ordinal + 1 of the newest transfer that
//!   touches it (0: none), then the crc32c of everything before.
//! - `run-<n>.idx`: the index runs ([`crate::run`]) of the id index, the fact index and the
//!   account index (account ordinal → ordinals of the transfers that touch it).
//! - `MANIFEST`: what the files hold as of the durable watermark ([`Manifest`]).

use engine::{Amount, Currency, Id, Metadata, TransferStatus};
use serde::{Deserialize, Serialize};

/// Size of a stored transfer's fixed record.
pub const TRANSFER_RECORD_BYTES: usize = 128;
/// Size of a page, the unit of reads and of the cache.
pub const PAGE_BYTES: usize = 4096;
/// Transfer records per page.
pub const RECORDS_PER_PAGE: u64 = (PAGE_BYTES / TRANSFER_RECORD_BYTES) as u64;
/// Bytes of a frame's header: length and checksum.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Largest frame payload (a transfer's strings are at most a few KiB; a fact at most a few).
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 1 << 20;
/// First bytes of `MANIFEST` and of a heads file.
pub const MANIFEST_MAGIC: &[u8; 10] = b"LEDGERHIST";
pub const HEADS_MAGIC: &[u8; 10] = b"LEDGERHEAD";
/// Version of the manifest's (and so of the whole layout's) format. 2: the account index.
pub const FORMAT_VERSION: u8 = 2;

const _: () = assert!(PAGE_BYTES.is_multiple_of(TRANSFER_RECORD_BYTES));
const CHECKED_BYTES: usize = TRANSFER_RECORD_BYTES - 4;

/// Why bytes are not what they should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("truncated: {found} bytes where {expected} are needed")]
    Truncated { found: usize, expected: usize },
    #[error("a frame of {0} bytes is larger than any the history writes")]
    FrameTooLarge(usize),
    #[error("does not decode: {0}")]
    Decode(String),
    #[error("bad magic")]
    Magic,
    #[error("format version {found}, where this build reads version {FORMAT_VERSION}")]
    Version { found: u8 },
    #[error("unknown transfer status byte {0}")]
    Status(u8),
}

/// The fixed part of a stored transfer. Accounts are by ordinal (see `accounts.dat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferRecord {
    /// Log sequence of the creation.
    pub seq: u64,
    /// Log sequence of the last change (creation, post, void, expiry).
    pub last_seq: u64,
    pub created_at_ms: i64,
    pub amount: Amount,
    pub posted_amount: Amount,
    pub debit_account: u32,
    pub credit_account: u32,
    /// Ordinal + 1 of the previous transfer that touches the debit account (0: none).
    pub previous_of_debit: u64,
    /// Ordinal + 1 of the previous transfer that touches the credit account (0: none).
    pub previous_of_credit: u64,
    pub timeout_seconds: u64,
    /// Where the transfer's [`TransferStrings`] frame is in `strings.dat`.
    pub strings_offset: u64,
    pub strings_bytes: u32,
    pub status: TransferStatus,
    pub pending: bool,
    /// The id's fingerprint (the key of the id index).
    pub fingerprint: u64,
}

fn status_byte(status: TransferStatus) -> u8 {
    match status {
        TransferStatus::Posted => 0,
        TransferStatus::Pending => 1,
        TransferStatus::Voided => 2,
        TransferStatus::Expired => 3,
    }
}

fn status_of_byte(byte: u8) -> Result<TransferStatus, FormatError> {
    Ok(match byte {
        0 => TransferStatus::Posted,
        1 => TransferStatus::Pending,
        2 => TransferStatus::Voided,
        3 => TransferStatus::Expired,
        other => return Err(FormatError::Status(other)),
    })
}

impl TransferRecord {
    /// The record's bytes, checksum included.
    pub fn encode(&self) -> [u8; TRANSFER_RECORD_BYTES] {
        let mut bytes = [0_u8; TRANSFER_RECORD_BYTES];
        bytes[0..8].copy_from_slice(&self.seq.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.last_seq.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.created_at_ms.to_le_bytes());
        bytes[24..40].copy_from_slice(&self.amount.minor_units().to_le_bytes());
        bytes[40..56].copy_from_slice(&self.posted_amount.minor_units().to_le_bytes());
        bytes[56..60].copy_from_slice(&self.debit_account.to_le_bytes());
        bytes[60..64].copy_from_slice(&self.credit_account.to_le_bytes());
        bytes[64..72].copy_from_slice(&self.previous_of_debit.to_le_bytes());
        bytes[72..80].copy_from_slice(&self.previous_of_credit.to_le_bytes());
        bytes[80..88].copy_from_slice(&self.timeout_seconds.to_le_bytes());
        bytes[88..96].copy_from_slice(&self.strings_offset.to_le_bytes());
        bytes[96..100].copy_from_slice(&self.strings_bytes.to_le_bytes());
        bytes[100] = status_byte(self.status);
        bytes[101] = u8::from(self.pending);
        bytes[104..112].copy_from_slice(&self.fingerprint.to_le_bytes());
        let checksum = crc32c::crc32c(&bytes[..CHECKED_BYTES]);
        bytes[CHECKED_BYTES..].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Checks the checksum and reads the record.
    pub fn decode(bytes: &[u8]) -> Result<TransferRecord, FormatError> {
        if bytes.len() < TRANSFER_RECORD_BYTES {
            return Err(FormatError::Truncated { found: bytes.len(), expected: TRANSFER_RECORD_BYTES });
        }
        let stored = u32_at(bytes, CHECKED_BYTES);
        let computed = crc32c::crc32c(&bytes[..CHECKED_BYTES]);
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        Ok(TransferRecord {
            seq: u64_at(bytes, 0),
            last_seq: u64_at(bytes, 8),
            created_at_ms: i64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
            amount: Amount::from_minor_units(i128_at(bytes, 24)),
            posted_amount: Amount::from_minor_units(i128_at(bytes, 40)),
            debit_account: u32_at(bytes, 56),
            credit_account: u32_at(bytes, 60),
            previous_of_debit: u64_at(bytes, 64),
            previous_of_credit: u64_at(bytes, 72),
            timeout_seconds: u64_at(bytes, 80),
            strings_offset: u64_at(bytes, 88),
            strings_bytes: u32_at(bytes, 96),
            status: status_of_byte(bytes[100])?,
            pending: bytes[101] != 0,
            fingerprint: u64_at(bytes, 104),
        })
    }
}

pub fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn i128_at(bytes: &[u8], at: usize) -> i128 {
    i128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

/// The variable part of a stored transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStrings {
    pub id: Id,
    pub description: String,
    pub metadata: Metadata,
}

/// One account of the directory: its creation sequence, id and currency (its ordinal is its
/// position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEntry {
    pub seq: u64,
    pub id: Id,
    pub currency: Currency,
}

/// One payment fact (an `External` record): the latest of a (kind, key) is the fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactEntry {
    pub seq: u64,
    pub kind: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Appends the frame of `value` to `out`; returns its length.
pub fn push_frame<T: Serialize>(out: &mut Vec<u8>, value: &T) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0_u8; FRAME_HEADER_BYTES]);
    let mut buffer = std::mem::take(out);
    buffer = postcard::to_extend(value, buffer).expect("postcard encoding into a Vec is infallible");
    *out = buffer;
    let payload_len = out.len() - start - FRAME_HEADER_BYTES;
    let checksum = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
    let payload_len_u32 = u32::try_from(payload_len).expect("a frame is far below 4 GiB");
    out[start..start + 4].copy_from_slice(&payload_len_u32.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
    out.len() - start
}

/// The length of the frame that starts `bytes` (header included), from its header.
pub fn frame_len(header: &[u8]) -> Result<usize, FormatError> {
    if header.len() < FRAME_HEADER_BYTES {
        return Err(FormatError::Truncated { found: header.len(), expected: FRAME_HEADER_BYTES });
    }
    let payload_len = usize::try_from(u32_at(header, 0)).expect("u32 fits usize");
    if payload_len > FRAME_PAYLOAD_BYTES_MAX {
        return Err(FormatError::FrameTooLarge(payload_len));
    }
    Ok(FRAME_HEADER_BYTES + payload_len)
}

/// Checks a whole frame and decodes its payload.
pub fn decode_frame<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, FormatError> {
    let len = frame_len(bytes)?;
    if bytes.len() < len {
        return Err(FormatError::Truncated { found: bytes.len(), expected: len });
    }
    let payload = &bytes[FRAME_HEADER_BYTES..len];
    let stored = u32_at(bytes, 4);
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    postcard::from_bytes(payload).map_err(|error| FormatError::Decode(error.to_string()))
}

/// An index run named in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunName {
    /// The file's number: `run-<number>.idx`.
    pub number: u64,
    pub entries: u64,
}

/// What the history's files hold as of its durable watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every log record up to this sequence is in the files.
    pub watermark_seq: u64,
    /// 0: the history holds every record since the log's first. N > 0: it was seeded at N
    /// from a snapshot alone (a restore without the source's history or log), so transfers
    /// settled before N are not in it; the accounts and the holds open at N are.
    pub complete_from_seq: u64,
    /// Records in `transfers.dat`.
    pub transfers: u64,
    pub strings_bytes: u64,
    /// Accounts (frames) in `accounts.dat`, and its length.
    pub accounts: u64,
    pub accounts_bytes: u64,
    pub facts_bytes: u64,
    /// The heads file of this watermark, and the number the next new file gets.
    pub heads_number: u64,
    pub next_file_number: u64,
    /// The keys of the fingerprint function (random per store, so that ids cannot be chosen
    /// to collide).
    pub fingerprint_keys: [u64; 2],
    /// The id index (fingerprint → transfer ordinal), newest run last.
    pub transfer_runs: Vec<RunName>,
    /// The fact index (fingerprint of kind and key → offset in `facts.dat`), newest last.
    pub fact_runs: Vec<RunName>,
    /// The account index (account ordinal → ordinal of a transfer that touches it: two
    /// entries per transfer), newest last.
    pub account_runs: Vec<RunName>,
}

impl Manifest {
    /// The manifest's file: magic, version, length, checksum, body.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = MANIFEST_MAGIC.to_vec();
        bytes.push(FORMAT_VERSION);
        push_frame(&mut bytes, self);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
        let header = MANIFEST_MAGIC.len() + 1;
        if bytes.len() < header || &bytes[..MANIFEST_MAGIC.len()] != MANIFEST_MAGIC {
            return Err(FormatError::Magic);
        }
        if bytes[header - 1] != FORMAT_VERSION {
            return Err(FormatError::Version { found: bytes[header - 1] });
        }
        let frame = &bytes[header..];
        if frame.len() != frame_len(frame)? {
            return Err(FormatError::Decode("trailing or missing bytes after the manifest".to_owned()));
        }
        decode_frame(frame)
    }
}

/// A heads file's bytes.
pub fn encode_heads(heads: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADS_MAGIC.len() + 8 + heads.len() * 8 + 4);
    bytes.extend_from_slice(HEADS_MAGIC);
    bytes.extend_from_slice(&u64::try_from(heads.len()).expect("a length fits u64").to_le_bytes());
    for head in heads {
        bytes.extend_from_slice(&head.to_le_bytes());
    }
    let checksum = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes
}

pub fn decode_heads(bytes: &[u8]) -> Result<Vec<u64>, FormatError> {
    let prefix = HEADS_MAGIC.len() + 8;
    if bytes.len() < prefix + 4 || &bytes[..HEADS_MAGIC.len()] != HEADS_MAGIC {
        return Err(FormatError::Magic);
    }
    let body = &bytes[..bytes.len() - 4];
    let stored = u32_at(bytes, bytes.len() - 4);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    let count = usize::try_from(u64_at(bytes, HEADS_MAGIC.len())).map_err(|_| FormatError::Magic)?;
    let expected = prefix + count.checked_mul(8).ok_or(FormatError::Magic)? + 4;
    if bytes.len() != expected {
        return Err(FormatError::Truncated { found: bytes.len(), expected });
    }
    Ok((0..count).map(|index| u64_at(bytes, prefix + index * 8)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TransferRecord {
        TransferRecord {
            seq: 42,
            last_seq: 50,
            created_at_ms: -7,
            amount: Amount::from_minor_units(10_i128.pow(36)),
            posted_amount: Amount::from_minor_units(3),
            debit_account: 1,
            credit_account: u32::MAX,
            previous_of_debit: 9,
            previous_of_credit: 0,
            timeout_seconds: 30,
            strings_offset: 1 << 40,
            strings_bytes: 77,
            status: TransferStatus::Voided,
            pending: true,
            fingerprint: 0xdead_beef,
        }
    }

    #[test]
    fn records_round_trip_and_every_flipped_bit_is_caught() {
        let bytes = record().encode();
        assert_eq!(TransferRecord::decode(&bytes), Ok(record()));
        for index in 0..TRANSFER_RECORD_BYTES {
            let mut corrupt = bytes;
            corrupt[index] ^= 0x10;
            assert!(TransferRecord::decode(&corrupt).is_err(), "flip at {index}");
        }
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let strings = TransferStrings {
            id: Id::parse("t-1").unwrap(),
            description: "rent".to_owned(),
            metadata: [("k".to_owned(), "v".to_owned())].into(),
        };
        let mut bytes = Vec::new();
        let len = push_frame(&mut bytes, &strings);
        assert_eq!(len, bytes.len());
        assert_eq!(decode_frame::<TransferStrings>(&bytes), Ok(strings));
        for index in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[index] ^= 0x01;
            assert!(decode_frame::<TransferStrings>(&corrupt).is_err(), "flip at {index}");
        }
        assert!(decode_frame::<TransferStrings>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn manifests_and_heads_round_trip() {
        let manifest = Manifest {
            watermark_seq: 9,
            complete_from_seq: 0,
            transfers: 3,
            strings_bytes: 100,
            accounts: 2,
            accounts_bytes: 60,
            facts_bytes: 0,
            heads_number: 4,
            next_file_number: 5,
            fingerprint_keys: [1, 2],
            transfer_runs: vec![RunName { number: 3, entries: 3 }],
            fact_runs: Vec::new(),
            account_runs: vec![RunName { number: 6, entries: 6 }],
        };
        let bytes = manifest.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(manifest));
        let mut older = bytes.clone();
        older[MANIFEST_MAGIC.len()] = 1;
        assert_eq!(Manifest::decode(&older), Err(FormatError::Version { found: 1 }));
        let mut corrupt = bytes.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert!(Manifest::decode(&corrupt).is_err());
        let heads = vec![0, 5, 7];
        assert_eq!(decode_heads(&encode_heads(&heads)), Ok(heads));
        let mut corrupt = encode_heads(&[1, 2]);
        corrupt[12] ^= 1;
        assert!(decode_heads(&corrupt).is_err());
    }
}
