//! One log record: the changes one use case made, as absolute puts and
//! removals, so replaying a record twice leaves what replaying it once did.
//!
//! On disk: `len: u32 LE`, `crc32(payload): u32 LE`, then `payload`:
//! `lsn: u64 LE`, `count: u32 LE`, and per change `tree: u8`,
//! `key_len: u32 LE`, key, `value_len: u32 LE` (`u32::MAX` for a removal),
//! value. A record whose length or checksum does not hold ends its segment:
//! it is the tail of a write that never finished, so nobody was told it was
//! stored.

use sled::IVec;

/// The trees a change may name. The numbers are on disk: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tree {
    Windows = 1,
    WindowExpiry = 2,
    InboundIds = 3,
    InboundAge = 4,
    Templates = 5,
    Outbox = 6,
    Idempotency = 7,
    IdempotencyAge = 8,
    Deliveries = 9,
    DeliveryQueue = 10,
    Wamids = 11,
    EarlyStatuses = 12,
    EarlyStatusAge = 13,
    WindowChanges = 14,
    ChangeExpiry = 15,
    ChangePairs = 16,
    Accounts = 17,
    BusinessNumbers = 18,
    PhoneNumberIds = 19,
    Consent = 20,
    Reaches = 21,
    ReachAge = 22,
    LimitUsage = 23,
    SendRates = 24,
    SendRateAge = 25,
}

impl Tree {
    pub const ALL: [Tree; 25] = [
        Tree::Windows,
        Tree::WindowExpiry,
        Tree::InboundIds,
        Tree::InboundAge,
        Tree::Templates,
        Tree::Outbox,
        Tree::Idempotency,
        Tree::IdempotencyAge,
        Tree::Deliveries,
        Tree::DeliveryQueue,
        Tree::Wamids,
        Tree::EarlyStatuses,
        Tree::EarlyStatusAge,
        Tree::WindowChanges,
        Tree::ChangeExpiry,
        Tree::ChangePairs,
        Tree::Accounts,
        Tree::BusinessNumbers,
        Tree::PhoneNumberIds,
        Tree::Consent,
        Tree::Reaches,
        Tree::ReachAge,
        Tree::LimitUsage,
        Tree::SendRates,
        Tree::SendRateAge,
    ];

    fn from_byte(byte: u8) -> Option<Tree> {
        Tree::ALL.into_iter().find(|tree| *tree as u8 == byte)
    }
}

/// A put (`Some`) or a removal (`None`) of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub tree: Tree,
    pub key: Vec<u8>,
    pub value: Option<IVec>,
}

/// One use case's changes, in the order it made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub changes: Vec<Change>,
}

const HEADER: usize = 8;
const REMOVAL: u32 = u32::MAX;

/// Appends `record`, framed, to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&record.lsn.to_le_bytes());
    out.extend_from_slice(&(record.changes.len() as u32).to_le_bytes());
    for change in &record.changes {
        out.push(change.tree as u8);
        out.extend_from_slice(&(change.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&change.key);
        match &change.value {
            Some(value) => {
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
            None => out.extend_from_slice(&REMOVAL.to_le_bytes()),
        }
    }
    let payload = &out[start + HEADER..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + HEADER].copy_from_slice(&crc);
}

/// What reading a segment's bytes found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Record(Record, usize),
    /// Zeroes, a torn or a failed write: the segment's written part ends here.
    End,
}

/// Why a record whose checksum holds could not be read: a bug or a disk
/// that returns other bytes than it was given, not a crash.
#[derive(Debug, thiserror::Error)]
#[error("log record at byte {offset}: {reason}")]
pub struct Malformed {
    pub offset: usize,
    pub reason: &'static str,
}

/// Reads the record at `offset` in `bytes`.
pub fn decode(bytes: &[u8], offset: usize) -> Result<Next, Malformed> {
    let Some(header) = bytes.get(offset..offset + HEADER) else {
        return Ok(Next::End);
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let Some(payload) = bytes.get(offset + HEADER..offset + HEADER + len) else {
        return Ok(Next::End);
    };
    if len == 0 || crc32fast::hash(payload) != crc {
        return Ok(Next::End);
    }
    let malformed = |reason| Malformed { offset, reason };
    let mut reader = Reader(payload);
    let lsn = reader.u64().ok_or(malformed("no lsn"))?;
    let count = reader.u32().ok_or(malformed("no change count"))?;
    let mut changes = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let tree = reader.u8().ok_or(malformed("no tree"))?;
        let tree = Tree::from_byte(tree).ok_or(malformed("unknown tree"))?;
        let key_len = reader.u32().ok_or(malformed("no key length"))?;
        let key = reader
            .bytes(key_len)
            .ok_or(malformed("short key"))?
            .to_vec();
        let value = match reader.u32().ok_or(malformed("no value length"))? {
            REMOVAL => None,
            value_len => Some(IVec::from(
                reader.bytes(value_len).ok_or(malformed("short value"))?,
            )),
        };
        changes.push(Change { tree, key, value });
    }
    if !reader.0.is_empty() {
        return Err(malformed("bytes after the last change"));
    }
    Ok(Next::Record(Record { lsn, changes }, offset + HEADER + len))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: u32) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n as usize)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn change() -> impl Strategy<Value = Change> {
        (
            0..Tree::ALL.len(),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
        )
            .prop_map(|(tree, key, value)| Change {
                tree: Tree::ALL[tree],
                key,
                value: value.map(IVec::from),
            })
    }

    fn record() -> impl Strategy<Value = Record> {
        (any::<u64>(), proptest::collection::vec(change(), 0..6))
            .prop_map(|(lsn, changes)| Record { lsn, changes })
    }

    proptest! {
        #[test]
        fn records_read_back_as_written(records in proptest::collection::vec(record(), 1..5)) {
            let mut bytes = Vec::new();
            for record in &records {
                encode(record, &mut bytes);
            }
            let mut offset = 0;
            for record in &records {
                let Next::Record(read, next) = decode(&bytes, offset).unwrap() else {
                    panic!("record at {offset} not read back");
                };
                prop_assert_eq!(&read, record);
                offset = next;
            }
            prop_assert_eq!(decode(&bytes, offset).unwrap(), Next::End);
        }

        #[test]
        fn a_torn_or_damaged_record_ends_the_segment(
            record in record(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            encode(&record, &mut bytes);
            let torn = &bytes[..cut.index(bytes.len())];
            prop_assert_eq!(decode(torn, 0).unwrap(), Next::End);
            let mut damaged = bytes.clone();
            let at = flip.index(damaged.len());
            damaged[at] ^= 0x40;
            prop_assert_eq!(decode(&damaged, 0).unwrap(), Next::End);
        }
    }

    #[test]
    fn zeroes_end_the_segment() {
        assert_eq!(decode(&[0; 64], 0).unwrap(), Next::End);
    }
}
