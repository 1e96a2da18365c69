//! One pkarr signed packet, verified and read, with no store: 64-byte signature ‖ 8-byte
//! big-endian µs timestamp ‖ DNS packet ≤ 1000 bytes, signed over the BEP44 encoding and
//! verified with the `pkarr` crate's `SignedPacket`. A peer that owns a key controls every
//! byte of the DNS packet inside, so this is the parser the relay's `PUT`, the
//! `dns.pkarr.publish` operation and the store's start-up all go through, and what the
//! `pkarr_relay` fuzz target drives (it needs no SQLite: see the `pkarr-packets` feature).

use bytes::Bytes;
use hickory_proto::op::Message;
use hickory_proto::rr::{LowerName, Name, Record, RecordType};

use crate::zone::{Outcome, ZoneAnswer};

/// The relay payload's largest size: signature, timestamp and a 1000-byte packet.
pub const MAX_RELAY_PAYLOAD: usize = alknet_runtime::PKARR_MAX_RELAY_PAYLOAD;

/// Why a packet was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not a pkarr public key (52 z-base32 characters): {0}")]
    Key(String),
    #[error("payload of {0} bytes is over the {MAX_RELAY_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("payload is not base64")]
    Encoding,
    #[error("invalid signed packet: {0}")]
    Invalid(String),
    #[error("stale: timestamp {got} is not newer than the stored {have}")]
    Stale { have: u64, got: u64 },
    #[error("the stored packet's timestamp is not {0} (If-Match)")]
    PreconditionFailed(u64),
    #[error("pkarr store: {0}")]
    Storage(String),
}

/// A relay payload that verified against its key, and the records of its packet.
#[derive(Debug)]
pub struct SignedRecords {
    timestamp: u64,
    records: Vec<Record>,
    /// The relay payload it came in, served as is by the relay API's `GET`.
    payload: Bytes,
}

impl SignedRecords {
    /// Checks a relay payload against `key` (z-base32, lowercase) and reads its records.
    pub fn verify(key: &str, payload: &[u8]) -> Result<Self, PublishError> {
        if payload.len() > MAX_RELAY_PAYLOAD {
            return Err(PublishError::TooLarge(payload.len()));
        }
        let public_key =
            pkarr::PublicKey::try_from(key).map_err(|_| PublishError::Key(key.to_string()))?;
        let payload = Bytes::copy_from_slice(payload);
        let signed = pkarr::SignedPacket::from_relay_payload(&public_key, &payload)
            .map_err(|e| PublishError::Invalid(e.to_string()))?;
        let packet = Message::from_vec(&signed.encoded_packet())
            .map_err(|e| PublishError::Invalid(format!("DNS packet: {e}")))?;
        Ok(Self {
            timestamp: signed.timestamp().as_u64(),
            records: packet.answers,
            payload,
        })
    }

    /// The packet's timestamp, µs since the Unix epoch.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The relay payload, as it came.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The smallest TTL of its records (0 with none).
    pub fn min_ttl(&self) -> u32 {
        self.records.iter().map(|r| r.ttl).min().unwrap_or(0)
    }

    /// Answers `qname`/`qtype` from the records: exact names (and a CNAME there) only; no
    /// SOA exists, so negative answers carry no authority.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> ZoneAnswer {
        let lower = LowerName::new(qname);
        let mut out = ZoneAnswer {
            outcome: Outcome::Answer,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        };
        let at_name: Vec<&Record> = self
            .records
            .iter()
            .filter(|r| LowerName::new(&r.name) == lower)
            .collect();
        out.answers = at_name
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .map(|r| (*r).clone())
            .collect();
        if out.answers.is_empty() {
            out.answers = at_name
                .iter()
                .filter(|r| r.record_type() == RecordType::CNAME)
                .map(|r| (*r).clone())
                .collect();
        }
        if out.answers.is_empty() {
            let below = self
                .records
                .iter()
                .any(|r| lower.zone_of(&LowerName::new(&r.name)));
            out.outcome = if below {
                Outcome::NoData
            } else {
                Outcome::NxDomain
            };
        }
        out
    }
}
