//! Signed check-in tokens: what the booking QR code carries, verified offline at the kiosk.
//!
//! The city website signs a compact binary payload with Ed25519; the appliance verifies it
//! against configured public keys, chosen by the token's key id (several keys may be valid at
//! once, for rotation). The token text is *decimal digits only*, because keyboard-wedge USB
//! scanners send key positions and only digits come through both US and German layouts.
//!
//! # Binary layout (format version 1)
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, `1` |
//! | 1 | key id |
//! | 2 | appointment day, days since 2020-01-01 (big-endian `u16`) |
//! | 2 | slot start, minute of the local day `0..=1439` (big-endian `u16`) |
//! | 4 | booking version (big-endian `u32`) |
//! | 1 + n | service id: length `1..=32`, then `a-z0-9-_` |
//! | 1 + n | booking id: length `1..=40`, then printable ASCII without space (`!`..=`~`) |
//! | 64 | Ed25519 signature |
//!
//! The signature covers [`SIGNATURE_DOMAIN`] (`b"leitsystem-token-v1\0"`), the site id's
//! length as an 8-byte big-endian integer, the site id's UTF-8 bytes, and then every payload
//! byte before the signature. A token of one site therefore never verifies at another.
//!
//! # Text encoding
//!
//! The bytes are cut into chunks of 7; each chunk is written as its big-endian value in
//! exactly 17 decimal digits (zero-padded). A final chunk of `k < 7` bytes takes a fixed number
//! of digits: 1 → 3, 2 → 5, 3 → 8, 4 → 10, 5 → 13, 6 → 15 ([`decimal_len`]). The encoding is
//! canonical: decoding refuses lengths no byte count produces and chunks whose value does not
//! fit their byte count. A typical token (8-character service, 14-character booking id) is 98
//! bytes = 238 digits, a version 6 QR code (41 modules) at level M in numeric mode.
//!
//! # Scanned input
//!
//! [`verify`] accepts a bare token or the token inside a URL (even one mangled by the keyboard
//! layout, `httpsÖ--termine.musterstadt.de-c-<digits>`): it takes the longest run of ASCII
//! digits. Input over [`MAX_INPUT_BYTES`] bytes, or a digit run outside
//! [`MIN_TOKEN_DIGITS`]`..=`[`MAX_TOKEN_DIGITS`], is refused before any decoding. Then:
//! decode, parse, look up the key id, verify the signature (`verify_strict`), return the
//! claims. Whether the day and time fit is the engine's business ([`check_day`] helps).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ed25519_dalek::{SIGNATURE_LENGTH, Signature, Signer};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::clock::{Calendar, Millis};
use crate::domain::{BookingId, ServiceId};

/// The only token format version this module reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// Domain-separation prefix of every signed message.
pub const SIGNATURE_DOMAIN: &[u8] = b"leitsystem-token-v1\0";
/// Scanned input longer than this (in bytes) is refused unread.
pub const MAX_INPUT_BYTES: usize = 1024;
/// A digit run shorter than this is not a token (the smallest valid token has 190 digits).
pub const MIN_TOKEN_DIGITS: usize = 100;
/// A digit run longer than this is refused (the largest valid token has 360 digits).
pub const MAX_TOKEN_DIGITS: usize = 400;
/// Longest service id a token carries.
pub const MAX_SERVICE_ID_LEN: usize = 32;
/// Longest booking id a token carries.
pub const MAX_BOOKING_ID_LEN: usize = 40;
/// Minutes in a (nominal) day; slot minutes are `0..MINUTES_PER_DAY`.
pub const MINUTES_PER_DAY: u16 = 1440;

/// Bytes per full chunk of the decimal encoding.
const CHUNK_BYTES: usize = 7;
/// Digits of a chunk of `k` bytes: the digits of `256^k - 1`.
const DIGITS_FOR_BYTES: [usize; 8] = [0, 3, 5, 8, 10, 13, 15, 17];
/// Digits of a full chunk.
const CHUNK_DIGITS: usize = DIGITS_FOR_BYTES[CHUNK_BYTES];

/// Day 0 of the token's day field.
fn epoch() -> Date {
    jiff::civil::date(2020, 1, 1)
}

/// What a valid token says. Only the signature makes it trustworthy; [`verify`] returns it
/// only after the signature was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The id of the key that signed the token.
    pub key_id: u8,
    /// The website's booking id.
    pub booking: BookingId,
    /// The booked service.
    pub service: ServiceId,
    /// The appointment's local day.
    pub day: Date,
    /// The slot's start as minute of the local day (`0..=1439`).
    pub slot_minute: u16,
    /// The website's booking version (a token carries at most `u32::MAX`).
    pub version: u64,
}

impl TokenClaims {
    /// The slot start as an instant: the local wall-clock time `slot_minute` on `day` in the
    /// calendar's time zone. DST-safe: on a day with a clock change the wall-clock time is
    /// converted with the offset in force at that time (09:00 is 09:00 on a 23- or 25-hour
    /// day); a time in the spring gap (02:30 in Berlin) becomes the same time after the
    /// shift (03:30), a time in the autumn fold its first occurrence (as jiff's `compatible`).
    pub fn slot_start(&self, calendar: &Calendar) -> Millis {
        calendar.local_instant(self.day, self.slot_minute)
    }

    /// The slot start as local `HH:MM`.
    pub fn slot_hhmm(&self) -> String {
        format!("{:02}:{:02}", self.slot_minute / 60, self.slot_minute % 60)
    }
}

/// Why a scanned code was refused. Every variant reads as a message a kiosk can show;
/// [`TokenError::code`] is the stable machine-readable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The input (or its digit run) is longer than any token.
    #[error("the scanned code is too long to be a check-in code")]
    TooLong,
    /// No digit run long enough to be a token.
    #[error("no check-in code found in the scanned code")]
    NoToken,
    /// The digits do not decode to a well-formed token.
    #[error("the check-in code is damaged or incomplete ({0})")]
    Malformed(&'static str),
    /// A token format this appliance does not know.
    #[error("the check-in code has format version {0}, which this system does not support")]
    UnsupportedVersion(u8),
    /// The key id is not configured (e.g. a retired key).
    #[error("the check-in code was signed with key {0}, which is not configured here")]
    UnknownKey(u8),
    /// The signature does not match: forged, altered, or issued for another site.
    #[error("the check-in code is not genuine (invalid signature, or issued for another site)")]
    Forged,
    /// A valid token, but not for today.
    #[error("the check-in code is for {day}, not for today ({today})")]
    WrongDay {
        /// The token's day.
        day: Date,
        /// The service day it was scanned on.
        today: Date,
    },
}

impl TokenError {
    /// Stable machine-readable code, e.g. `forged`.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::TooLong => "too_long",
            TokenError::NoToken => "no_token",
            TokenError::Malformed(_) => "malformed",
            TokenError::UnsupportedVersion(_) => "unsupported_version",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::Forged => "forged",
            TokenError::WrongDay { .. } => "wrong_day",
        }
    }
}

/// Why claims cannot be signed (the website side; [`sign`] checks what [`verify`] requires).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot sign a token: {field} {reason}")]
pub struct SignError {
    /// The offending field of [`TokenClaims`].
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A configured public key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 64 hex digits.
    #[error("{what}: {reason} (expected 64 hex digits)")]
    BadHex {
        /// Which key, e.g. `public key 3`.
        what: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The bytes are not a point on the curve.
    #[error("{what} is not a valid Ed25519 public key")]
    InvalidKey {
        /// Which key.
        what: String,
    },
    /// A small-order key, under which forgeries are easy.
    #[error("{what} is a weak (small-order) Ed25519 key")]
    WeakKey {
        /// Which key.
        what: String,
    },
    /// The same key id twice.
    #[error("key id {0} is configured twice")]
    DuplicateKeyId(u8),
}

/// The public keys a site accepts, by key id. Keys are given as 64 hex digits (32 bytes, the
/// standard Ed25519 public key encoding; upper or lower case; surrounding whitespace ignored).
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<u8, VerifyingKey>,
}

impl KeyRing {
    /// An empty ring (verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// A ring from `(key id, public key as 64 hex digits)` pairs.
    pub fn parse<I, S>(keys: I) -> Result<Self, KeyError>
    where
        I: IntoIterator<Item = (u8, S)>,
        S: AsRef<str>,
    {
        let mut ring = Self::new();
        for (key_id, hex) in keys {
            ring.insert_hex(key_id, hex.as_ref())?;
        }
        Ok(ring)
    }

    /// Adds a key given as 64 hex digits.
    pub fn insert_hex(&mut self, key_id: u8, hex: &str) -> Result<(), KeyError> {
        let what = format!("public key {key_id}");
        let bytes = parse_hex32(hex, &what)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::InvalidKey { what: what.clone() })?;
        self.insert(key_id, key)
    }

    /// Adds a key; refuses a duplicate key id and weak keys.
    pub fn insert(&mut self, key_id: u8, key: VerifyingKey) -> Result<(), KeyError> {
        if key.is_weak() {
            return Err(KeyError::WeakKey {
                what: format!("public key {key_id}"),
            });
        }
        if self.keys.contains_key(&key_id) {
            return Err(KeyError::DuplicateKeyId(key_id));
        }
        self.keys.insert(key_id, key);
        Ok(())
    }

    /// The key with this id.
    pub fn get(&self, key_id: u8) -> Option<&VerifyingKey> {
        self.keys.get(&key_id)
    }

    /// The configured key ids, ascending.
    pub fn key_ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.keys().copied()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True without keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_hex32(text: &str, what: &str) -> Result<[u8; 32], KeyError> {
    let bad = |reason| KeyError::BadHex {
        what: what.to_string(),
        reason,
    };
    let digits = text.trim().as_bytes();
    if digits.len() != 64 {
        return Err(bad("wrong length"));
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = hex_value(pair[0]).ok_or_else(|| bad("not a hex digit"))?;
        let low = hex_value(pair[1]).ok_or_else(|| bad("not a hex digit"))?;
        *byte = (high << 4) | low;
    }
    Ok(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A public key as 64 lowercase hex digits (the format [`KeyRing`] reads).
pub fn public_key_hex(key: &VerifyingKey) -> String {
    to_hex(key.as_bytes())
}

/// A signing key's 32-byte secret as 64 hex digits (for the website simulator's key file;
/// it is the secret, keep it so).
pub fn signing_key_hex(key: &SigningKey) -> String {
    to_hex(&key.to_bytes())
}

/// Reads a signing key written by [`signing_key_hex`].
pub fn parse_signing_key(hex: &str) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&parse_hex32(hex, "signing key")?))
}

/// A new key pair from a cryptographic RNG (e.g. `rand::rng()`): the signing key and its
/// public key as hex. Uses 32 random bytes as the secret (`SigningKey::from_bytes`), since
/// ed25519-dalek 2 speaks `rand_core` 0.6 and the workspace uses `rand` 0.9.
pub fn generate_key<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> (SigningKey, String) {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let key = SigningKey::from_bytes(&secret);
    secret.fill(0);
    let public = public_key_hex(&key.verifying_key());
    (key, public)
}

/// Signs claims for a site: the token text (decimal digits) to put into the QR code.
pub fn sign(claims: &TokenClaims, site_id: &str, key: &SigningKey) -> Result<String, SignError> {
    let mut bytes = encode_payload(claims)?;
    let signature = key.sign(&signed_message(site_id, &bytes));
    bytes.extend_from_slice(&signature.to_bytes());
    Ok(encode_decimal(&bytes))
}

/// Verifies a scanned code (bare token or URL, see the module docs) for a site. Returns the
/// claims only if the signature is valid under the key its key id names; checks nothing
/// about the day or time (see [`check_day`]).
pub fn verify(scanned: &str, site_id: &str, keys: &KeyRing) -> Result<TokenClaims, TokenError> {
    let digits = extract_digits(scanned)?;
    let bytes = decode_decimal(digits)?;
    let token = parse_token(&bytes)?;
    let key = keys
        .get(token.claims.key_id)
        .ok_or(TokenError::UnknownKey(token.claims.key_id))?;
    key.verify_strict(&signed_message(site_id, token.signed), &token.signature)
        .map_err(|_| TokenError::Forged)?;
    Ok(token.claims)
}

/// Refuses a token whose day is not `today` (the local service day).
pub fn check_day(claims: &TokenClaims, today: Date) -> Result<(), TokenError> {
    if claims.day == today {
        Ok(())
    } else {
        Err(TokenError::WrongDay {
            day: claims.day,
            today,
        })
    }
}

/// A QR code for token text (or a URL holding it) at error correction level M. The encoder
/// picks segments optimally, so a bare token is one numeric-mode segment (3.33 bits per
/// digit); a URL adds a byte-mode segment for its non-digit prefix.
pub fn qr_for(text: &str) -> Result<qrcode::QrCode, qrcode::types::QrError> {
    qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
}

/// Takes the token candidate out of scanned input: the longest run of ASCII digits (the first
/// of equally long ones). Refuses oversized input and runs of implausible length unread.
pub fn extract_digits(scanned: &str) -> Result<&str, TokenError> {
    if scanned.len() > MAX_INPUT_BYTES {
        return Err(TokenError::TooLong);
    }
    let bytes = scanned.as_bytes();
    let (mut best_start, mut best_len) = (0, 0);
    let mut run_start = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if byte.is_ascii_digit() {
            let len = i + 1 - run_start;
            if len > best_len {
                (best_start, best_len) = (run_start, len);
            }
        } else {
            run_start = i + 1;
        }
    }
    if best_len > MAX_TOKEN_DIGITS {
        return Err(TokenError::TooLong);
    }
    if best_len < MIN_TOKEN_DIGITS {
        return Err(TokenError::NoToken);
    }
    // ASCII digits sit on character boundaries.
    scanned
        .get(best_start..best_start + best_len)
        .ok_or(TokenError::NoToken)
}

/// Number of digits [`encode_decimal`] writes for `bytes` bytes.
pub fn decimal_len(bytes: usize) -> usize {
    bytes / CHUNK_BYTES * CHUNK_DIGITS + DIGITS_FOR_BYTES[bytes % CHUNK_BYTES]
}

/// Writes bytes as decimal digits: 7-byte chunks as 17 digits, a final shorter chunk with its
/// fixed digit count (see the module docs).
pub fn encode_decimal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(decimal_len(bytes.len()));
    for chunk in bytes.chunks(CHUNK_BYTES) {
        let value = chunk
            .iter()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
        let width = DIGITS_FOR_BYTES[chunk.len()];
        let _ = write!(out, "{value:0width$}");
    }
    out
}

/// Reads digits written by [`encode_decimal`]. Refuses non-digits, lengths that no byte count
/// produces and chunks whose value does not fit their bytes.
pub fn decode_decimal(digits: &str) -> Result<Vec<u8>, TokenError> {
    let digits = digits.as_bytes();
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(TokenError::Malformed("not a digit"));
    }
    let last_bytes = DIGITS_FOR_BYTES
        .iter()
        .position(|&count| count == digits.len() % CHUNK_DIGITS)
        .ok_or(TokenError::Malformed("wrong number of digits"))?;
    let mut out = Vec::with_capacity(digits.len() / CHUNK_DIGITS * CHUNK_BYTES + last_bytes);
    for chunk in digits.chunks(CHUNK_DIGITS) {
        let bytes = if chunk.len() == CHUNK_DIGITS {
            CHUNK_BYTES
        } else {
            last_bytes
        };
        let value = chunk
            .iter()
            .fold(0u64, |acc, &digit| acc * 10 + u64::from(digit - b'0'));
        if value >> (8 * bytes) != 0 {
            return Err(TokenError::Malformed("digit group out of range"));
        }
        out.extend_from_slice(&value.to_be_bytes()[8 - bytes..]);
    }
    Ok(out)
}

/// The bytes the signature covers.
fn signed_message(site_id: &str, payload: &[u8]) -> Vec<u8> {
    let site_len = u64::try_from(site_id.len()).unwrap_or(u64::MAX);
    let mut message =
        Vec::with_capacity(SIGNATURE_DOMAIN.len() + 8 + site_id.len() + payload.len());
    message.extend_from_slice(SIGNATURE_DOMAIN);
    message.extend_from_slice(&site_len.to_be_bytes());
    message.extend_from_slice(site_id.as_bytes());
    message.extend_from_slice(payload);
    message
}

fn is_service_char(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
}

fn is_booking_char(byte: u8) -> bool {
    byte.is_ascii_graphic()
}

/// The payload bytes before the signature.
fn encode_payload(claims: &TokenClaims) -> Result<Vec<u8>, SignError> {
    let fail = |field, reason| SignError { field, reason };
    let days = epoch()
        .until(claims.day)
        .ok()
        .and_then(|span| u16::try_from(span.get_days()).ok())
        .ok_or(fail("day", "is outside 2020-01-01 ..= 2199-06-06"))?;
    if claims.slot_minute >= MINUTES_PER_DAY {
        return Err(fail("slot_minute", "is not a minute of the day (0..=1439)"));
    }
    let version =
        u32::try_from(claims.version).map_err(|_| fail("version", "does not fit into 32 bits"))?;
    let service = claims.service.as_str().as_bytes();
    if service.is_empty() || service.len() > MAX_SERVICE_ID_LEN {
        return Err(fail("service", "must be 1 to 32 characters"));
    }
    if !service.iter().all(|&b| is_service_char(b)) {
        return Err(fail("service", "may only hold a-z, 0-9, '-' and '_'"));
    }
    let booking = claims.booking.as_str().as_bytes();
    if booking.is_empty() || booking.len() > MAX_BOOKING_ID_LEN {
        return Err(fail("booking", "must be 1 to 40 characters"));
    }
    if !booking.iter().all(|&b| is_booking_char(b)) {
        return Err(fail(
            "booking",
            "may only hold printable ASCII without spaces",
        ));
    }
    let mut out = Vec::with_capacity(12 + service.len() + booking.len() + SIGNATURE_LENGTH);
    out.push(FORMAT_VERSION);
    out.push(claims.key_id);
    out.extend_from_slice(&days.to_be_bytes());
    out.extend_from_slice(&claims.slot_minute.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    // Lengths were checked against 32 and 40 above.
    out.push(u8::try_from(service.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(service);
    out.push(u8::try_from(booking.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(booking);
    Ok(out)
}

/// A structurally valid token, signature not yet checked.
struct ParsedToken<'a> {
    claims: TokenClaims,
    signed: &'a [u8],
    signature: Signature,
}

/// Reads fields off the front of a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.rest.len() < n {
            return Err(TokenError::Malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        self.take(N)?
            .try_into()
            .map_err(|_| TokenError::Malformed("truncated"))
    }

    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, TokenError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, TokenError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A length-prefixed string of `1..=max` bytes, each passing `allowed`.
    fn string(
        &mut self,
        max: usize,
        allowed: fn(u8) -> bool,
        what: &'static str,
    ) -> Result<String, TokenError> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > max {
            return Err(TokenError::Malformed(what));
        }
        let bytes = self.take(len)?;
        if !bytes.iter().all(|&b| allowed(b)) {
            return Err(TokenError::Malformed(what));
        }
        // Only ASCII passes `allowed`.
        String::from_utf8(bytes.to_vec()).map_err(|_| TokenError::Malformed(what))
    }
}

fn parse_token(bytes: &[u8]) -> Result<ParsedToken<'_>, TokenError> {
    let version = *bytes.first().ok_or(TokenError::Malformed("empty"))?;
    if version != FORMAT_VERSION {
        return Err(TokenError::UnsupportedVersion(version));
    }
    let signed_len = bytes
        .len()
        .checked_sub(SIGNATURE_LENGTH)
        .ok_or(TokenError::Malformed("truncated"))?;
    let (signed, signature) = bytes.split_at(signed_len);
    let signature: [u8; SIGNATURE_LENGTH] = signature
        .try_into()
        .map_err(|_| TokenError::Malformed("truncated"))?;

    let mut reader = Reader { rest: signed };
    reader.u8()?; // the format version, checked above
    let key_id = reader.u8()?;
    let days = reader.u16()?;
    let slot_minute = reader.u16()?;
    let booking_version = reader.u32()?;
    let service = reader.string(MAX_SERVICE_ID_LEN, is_service_char, "bad service id")?;
    let booking = reader.string(MAX_BOOKING_ID_LEN, is_booking_char, "bad booking id")?;
    if !reader.rest.is_empty() {
        return Err(TokenError::Malformed("trailing bytes"));
    }
    if slot_minute >= MINUTES_PER_DAY {
        return Err(TokenError::Malformed("slot time out of range"));
    }
    let day = epoch()
        .checked_add(jiff::Span::new().days(i64::from(days)))
        .map_err(|_| TokenError::Malformed("day out of range"))?;
    Ok(ParsedToken {
        claims: TokenClaims {
            key_id,
            booking: BookingId::new(booking),
            service: ServiceId::new(service),
            day,
            slot_minute,
            version: u64::from(booking_version),
        },
        signed,
        signature: Signature::from_bytes(&signature),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(37)
                    .wrapping_add(seed)
                    .wrapping_mul(101)
            })
            .collect()
    }

    #[test]
    fn decimal_round_trips_every_length_with_exact_digit_counts() {
        for len in 0..100 {
            for data in [vec![0u8; len], vec![0xff; len], bytes_of(len, 7)] {
                let text = encode_decimal(&data);
                assert_eq!(text.len(), decimal_len(len), "length {len}");
                let full = len / 7;
                let rest = [0, 3, 5, 8, 10, 13, 15][len % 7];
                assert_eq!(text.len(), full * 17 + rest);
                assert!(text.bytes().all(|b| b.is_ascii_digit()));
                assert_eq!(decode_decimal(&text), Ok(data), "length {len}");
            }
        }
    }

    #[test]
    fn digit_counts_are_the_smallest_that_fit() {
        for k in 1..=7u32 {
            let max = (1u64 << (8 * k)) - 1;
            assert_eq!(
                max.to_string().len(),
                DIGITS_FOR_BYTES[k as usize],
                "{k} bytes"
            );
        }
        assert_eq!(encode_decimal(&[0xff; 7]), "72057594037927935");
        assert_eq!(encode_decimal(&[1]), "001");
        assert_eq!(encode_decimal(&[0xff, 0xff]), "65535");
    }

    #[test]
    fn decoding_refuses_overflowing_chunks() {
        // One above the largest value of each chunk size.
        for (k, &width) in DIGITS_FOR_BYTES.iter().enumerate().skip(1) {
            let over = 1u64 << (8 * k);
            let text = format!("{over:0width$}");
            assert_eq!(text.len(), width, "2^(8k) has as many digits as 2^(8k) - 1");
            assert_eq!(
                decode_decimal(&text),
                Err(TokenError::Malformed("digit group out of range")),
                "{k} bytes"
            );
            let all_nines = "9".repeat(width);
            assert!(decode_decimal(&all_nines).is_err(), "{k} bytes of nines");
            // An overflowing chunk after a valid full chunk.
            let text = format!("{}{all_nines}", encode_decimal(&[0; 7]));
            assert!(decode_decimal(&text).is_err());
        }
        assert!(decode_decimal("99999999999999999").is_err());
        assert!(decode_decimal("72057594037927936").is_err());
        assert_eq!(
            decode_decimal("72057594037927935"),
            Ok(vec![0xff; 7]),
            "the largest 7-byte chunk"
        );
    }

    #[test]
    fn decoding_refuses_non_digits_and_impossible_lengths() {
        assert!(decode_decimal("00a").is_err());
        assert!(decode_decimal("0 1").is_err());
        assert!(decode_decimal("٠٠١").is_err()); // Arabic-Indic digits
        let valid: Vec<usize> = (0..60).map(decimal_len).collect();
        for len in 0..(17 * 8) {
            let result = decode_decimal(&"0".repeat(len));
            assert_eq!(result.is_ok(), valid.contains(&len), "{len} digits");
        }
        assert_eq!(decode_decimal(""), Ok(vec![]));
    }

    #[test]
    fn extraction_takes_the_longest_digit_run_and_caps_lengths() {
        let token = "1".repeat(150);
        assert_eq!(extract_digits(&token), Ok(token.as_str()));
        let url = format!("https://t2.example.de/c/{token}?x=12");
        assert_eq!(extract_digits(&url), Ok(token.as_str()));
        assert_eq!(extract_digits(&"1".repeat(99)), Err(TokenError::NoToken));
        assert_eq!(extract_digits("no digits"), Err(TokenError::NoToken));
        assert_eq!(extract_digits(""), Err(TokenError::NoToken));
        assert_eq!(extract_digits(&"1".repeat(401)), Err(TokenError::TooLong));
        assert!(extract_digits(&"1".repeat(400)).is_ok());
        assert_eq!(
            extract_digits(&format!("{token}{}", "x".repeat(1024 - 150 + 1))),
            Err(TokenError::TooLong)
        );
        assert!(extract_digits(&format!("{token}{}", "ö".repeat(437))).is_ok());
    }

    #[test]
    fn smallest_and_largest_tokens_fit_the_digit_bounds() {
        let smallest = 10 + 2 + 2 + SIGNATURE_LENGTH;
        let largest = 10 + 1 + MAX_SERVICE_ID_LEN + 1 + MAX_BOOKING_ID_LEN + SIGNATURE_LENGTH;
        assert_eq!(decimal_len(smallest), 190);
        assert_eq!(decimal_len(largest), 360);
        assert!(decimal_len(smallest) >= MIN_TOKEN_DIGITS);
        assert!(decimal_len(largest) <= MAX_TOKEN_DIGITS);
    }

    #[test]
    fn slot_start_matches_jiff_on_every_minute_of_dst_days() {
        let cal = Calendar::berlin();
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap_or(jiff::tz::TimeZone::UTC);
        for day in [
            jiff::civil::date(2026, 3, 29),
            jiff::civil::date(2026, 10, 25),
            jiff::civil::date(2026, 7, 1),
            jiff::civil::date(2026, 1, 15),
        ] {
            for slot_minute in 0..MINUTES_PER_DAY {
                let claims = TokenClaims {
                    key_id: 0,
                    booking: BookingId::new("b"),
                    service: ServiceId::new("s"),
                    day,
                    slot_minute,
                    version: 1,
                };
                let expected = day
                    .at((slot_minute / 60) as i8, (slot_minute % 60) as i8, 0, 0)
                    .to_zoned(tz.clone())
                    .map(|z| z.timestamp().as_millisecond())
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(claims.slot_start(&cal), expected, "{day} {slot_minute}");
            }
        }
        let claims = TokenClaims {
            key_id: 0,
            booking: BookingId::new("b"),
            service: ServiceId::new("s"),
            day: jiff::civil::date(2026, 3, 29),
            slot_minute: 9 * 60,
            version: 1,
        };
        assert_eq!(
            cal.local_rfc3339(claims.slot_start(&cal)),
            "2026-03-29T09:00:00+02:00"
        );
        assert_eq!(claims.slot_hhmm(), "09:00");
    }

    #[test]
    fn hex_keys_parse_with_clear_errors() {
        let (_, public) = generate_key(&mut rand::rng());
        assert!(KeyRing::parse([(1, public.as_str())]).is_ok());
        assert!(KeyRing::parse([(1, public.to_uppercase())]).is_ok());
        assert!(KeyRing::parse([(1, format!(" {public}\n"))]).is_ok());
        let err = KeyRing::parse([(3, &public[..62])]).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("public key 3: wrong length (expected 64 hex digits)".to_string())
        );
        let bad = format!("g{}", &public[1..]);
        assert!(matches!(
            KeyRing::parse([(3, bad)]),
            Err(KeyError::BadHex { .. })
        ));
        assert_eq!(
            KeyRing::parse([(1, public.as_str()), (1, public.as_str())]).err(),
            Some(KeyError::DuplicateKeyId(1))
        );
        // The identity point is a small-order key.
        let identity = format!("01{}", "0".repeat(62));
        assert!(matches!(
            KeyRing::parse([(1, identity)]),
            Err(KeyError::WeakKey { .. })
        ));
    }
}
