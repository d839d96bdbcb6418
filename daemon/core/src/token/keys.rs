//! Keys: the key ring of accepted public keys, hex encodings, new key pairs.

use super::KeyError;
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::collections::BTreeMap;
use std::fmt::Write as _;

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
