//! Fuzzes the scanned-input path of check-in tokens: arbitrary bytes (as lossy UTF-8, as a
//! scanner delivers them) must never panic and never verify.
#![no_main]

use std::sync::OnceLock;

use leitsystem_core::token::{KeyRing, SigningKey, decode_decimal, verify};
use libfuzzer_sys::fuzz_target;

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        // A fixed key: runs are reproducible, and nobody outside this process signs with it.
        let mut ring = KeyRing::new();
        let _ = ring.insert(1, SigningKey::from_bytes(&[7; 32]).verifying_key());
        ring
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert!(verify(&text, "fuzz-site", ring()).is_err());
    if let Ok(digits) = std::str::from_utf8(data) {
        let _ = decode_decimal(digits);
    }
});
