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

use std::fmt::Write as _;

use ed25519_dalek::{SIGNATURE_LENGTH, Signature, Signer};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

mod keys;

pub use keys::*;

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

/// Why a QR code could not be drawn as PNG.
#[derive(Debug, thiserror::Error)]
pub enum QrPngError {
    /// More pixels than a PNG side holds.
    #[error("the QR code is too large for a PNG")]
    TooLarge,
    /// The PNG encoder failed.
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// Renders a QR code as PNG: 4 pixels per module, a quiet zone of 4 modules.
pub fn qr_png(code: &qrcode::QrCode) -> Result<Vec<u8>, QrPngError> {
    const SCALE: usize = 4;
    const QUIET: usize = 4;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
        for dy in 0..SCALE {
            let row = (my * SCALE + dy) * side;
            for dx in 0..SCALE {
                pixels[row + mx * SCALE + dx] = 0;
            }
        }
    }
    let mut out = Vec::new();
    {
        let side = u32::try_from(side).map_err(|_| QrPngError::TooLarge)?;
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
