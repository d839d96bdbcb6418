//! Signed check-in tokens end to end: signing as the website does, verifying as the kiosk does,
//! and everything a scanner, a forger or a damaged ticket can hand in.

use jiff::civil::{Date, date};
use leitsystem::clock::Calendar;
use leitsystem::domain::{BookingId, ServiceId};
use leitsystem::token::{
    self, KeyRing, SigningKey, TokenClaims, TokenError, check_day, decode_decimal, encode_decimal,
    generate_key, qr_for, sign, verify,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SITE: &str = "musterstadt-rathaus";
const URL: &str = "https://termine.musterstadt.de/c/";

fn key(seed: u64) -> (SigningKey, String) {
    generate_key(&mut StdRng::seed_from_u64(seed))
}

/// A typical booking: 14-character booking id, 8-character service.
fn claims(key_id: u8) -> TokenClaims {
    TokenClaims {
        key_id,
        booking: BookingId::new("B-2026-0004711"),
        service: ServiceId::new("personal"),
        day: date(2026, 11, 24),
        slot_minute: 9 * 60 + 30,
        version: 3,
    }
}

/// Key 1 in a ring of its own, and a token it signed.
fn setup() -> (KeyRing, String) {
    let (signing, public) = key(1);
    let ring = KeyRing::parse([(1, public)]).unwrap_or_else(|e| panic!("{e}"));
    let token = sign(&claims(1), SITE, &signing).unwrap_or_else(|e| panic!("{e}"));
    (ring, token)
}

fn must_fail(scanned: &str, ring: &KeyRing) -> TokenError {
    match verify(scanned, SITE, ring) {
        Ok(claims) => panic!("{scanned:?} verified as {claims:?}"),
        Err(error) => error,
    }
}

#[test]
fn a_valid_token_verifies_and_gives_back_its_claims() {
    let (ring, token) = setup();
    assert_eq!(token.len(), 238, "98 bytes: 14 chunks of 17 digits");
    assert!(token.bytes().all(|b| b.is_ascii_digit()));
    let claims = verify(&token, SITE, &ring).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims, self::claims(1));
    assert_eq!(check_day(&claims, date(2026, 11, 24)), Ok(()));
    let cal = Calendar::berlin();
    assert_eq!(
        cal.local_rfc3339(claims.slot_start(&cal)),
        "2026-11-24T09:30:00+01:00"
    );
    // Ed25519 signatures are deterministic: the same claims give the same token.
    let (signing, _) = key(1);
    assert_eq!(sign(&claims, SITE, &signing), Ok(token));
}

#[test]
fn smallest_and_largest_tokens_verify() {
    let (signing, public) = key(1);
    let ring = KeyRing::parse([(9, public)]).unwrap_or_else(|e| panic!("{e}"));
    let small = TokenClaims {
        key_id: 9,
        booking: BookingId::new("1"),
        service: ServiceId::new("a"),
        day: date(2020, 1, 1),
        slot_minute: 0,
        version: 0,
    };
    let large = TokenClaims {
        key_id: 9,
        booking: BookingId::new("!~".repeat(20)),
        service: ServiceId::new("z9-_".repeat(8)),
        day: date(2199, 6, 6),
        slot_minute: 1439,
        version: u64::from(u32::MAX),
    };
    for (claims, digits) in [(small, 190), (large, 360)] {
        let token = sign(&claims, SITE, &signing).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(token.len(), digits);
        assert_eq!(verify(&token, SITE, &ring), Ok(claims));
    }
}

#[test]
fn signing_refuses_claims_a_token_cannot_carry() {
    let (signing, _) = key(1);
    let cases: Vec<(&str, TokenClaims)> = vec![
        (
            "version",
            TokenClaims {
                version: 1 << 32,
                ..claims(1)
            },
        ),
        (
            "slot_minute",
            TokenClaims {
                slot_minute: 1440,
                ..claims(1)
            },
        ),
        (
            "day",
            TokenClaims {
                day: date(2019, 12, 31),
                ..claims(1)
            },
        ),
        (
            "day",
            TokenClaims {
                day: date(2199, 6, 7),
                ..claims(1)
            },
        ),
        (
            "service",
            TokenClaims {
                service: ServiceId::new("Personal"),
                ..claims(1)
            },
        ),
        (
            "service",
            TokenClaims {
                service: ServiceId::new(""),
                ..claims(1)
            },
        ),
        (
            "service",
            TokenClaims {
                service: ServiceId::new("a".repeat(33)),
                ..claims(1)
            },
        ),
        (
            "booking",
            TokenClaims {
                booking: BookingId::new("B 1"),
                ..claims(1)
            },
        ),
        (
            "booking",
            TokenClaims {
                booking: BookingId::new("Bü"),
                ..claims(1)
            },
        ),
        (
            "booking",
            TokenClaims {
                booking: BookingId::new("b".repeat(41)),
                ..claims(1)
            },
        ),
    ];
    for (field, claims) in cases {
        match sign(&claims, SITE, &signing) {
            Ok(token) => panic!("signed {claims:?} as {token}"),
            Err(error) => assert_eq!(error.field, field, "{claims:?}: {error}"),
        }
    }
}

#[test]
fn a_token_signed_with_another_key_under_a_known_key_id_is_forged() {
    let (ring, _) = setup();
    let (other, _) = key(2);
    let token = sign(&claims(1), SITE, &other).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(must_fail(&token, &ring), TokenError::Forged);
}

#[test]
fn an_unknown_key_id_is_refused_as_such() {
    let (ring, _) = setup();
    let (signing, _) = key(1);
    let token = sign(&claims(7), SITE, &signing).unwrap_or_else(|e| panic!("{e}"));
    let error = must_fail(&token, &ring);
    assert_eq!(error, TokenError::UnknownKey(7));
    assert_eq!(error.code(), "unknown_key");
}

#[test]
fn a_token_of_another_site_is_refused() {
    let (ring, token) = setup();
    for site in [
        "",
        "musterstadt-rathau",
        "musterstadt-rathaus2",
        "nachbarstadt",
    ] {
        assert_eq!(
            verify(&token, site, &ring),
            Err(TokenError::Forged),
            "{site}"
        );
    }
}

#[test]
fn every_single_digit_change_is_refused() {
    let (ring, token) = setup();
    let mut codes = std::collections::BTreeMap::<&str, usize>::new();
    for position in 0..token.len() {
        for digit in b'0'..=b'9' {
            let mut tampered = token.clone().into_bytes();
            if tampered[position] == digit {
                continue;
            }
            tampered[position] = digit;
            let tampered = String::from_utf8(tampered).unwrap_or_else(|e| panic!("{e}"));
            *codes.entry(must_fail(&tampered, &ring).code()).or_default() += 1;
        }
    }
    // 238 positions × 9 other digits, all refused, mostly by the signature.
    assert_eq!(codes.values().sum::<usize>(), 238 * 9);
    assert!(codes["forged"] > 238 * 9 / 2, "{codes:?}");
}

#[test]
fn every_flipped_payload_bit_is_refused() {
    let (ring, token) = setup();
    let bytes = decode_decimal(&token).unwrap_or_else(|e| panic!("{e}"));
    for bit in 0..bytes.len() * 8 {
        let mut tampered = bytes.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let error = must_fail(&encode_decimal(&tampered), &ring);
        if bit < 8 {
            assert_eq!(error.code(), "unsupported_version", "bit {bit}");
        }
    }
}

#[test]
fn structure_errors_are_malformed_or_unsupported() {
    let (ring, token) = setup();
    let bytes = decode_decimal(&token).unwrap_or_else(|e| panic!("{e}"));

    let mut v2 = bytes.clone();
    v2[0] = 2;
    let error = must_fail(&encode_decimal(&v2), &ring);
    assert_eq!(error, TokenError::UnsupportedVersion(2));
    assert_eq!(error.code(), "unsupported_version");

    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        must_fail(&encode_decimal(&trailing), &ring),
        TokenError::Malformed("trailing bytes")
    );

    // Slot minute 1440 (bytes 4..6).
    let mut late = bytes.clone();
    late[4..6].copy_from_slice(&1440u16.to_be_bytes());
    assert_eq!(must_fail(&encode_decimal(&late), &ring).code(), "malformed");

    // An overflowing chunk: the first 17 digits become all nines.
    let overflow = format!("{}{}", "9".repeat(17), &token[17..]);
    assert_eq!(
        must_fail(&overflow, &ring),
        TokenError::Malformed("digit group out of range")
    );
}

#[test]
fn a_random_or_non_canonical_signature_is_forged() {
    let (ring, token) = setup();
    let bytes = decode_decimal(&token).unwrap_or_else(|e| panic!("{e}"));
    let split = bytes.len() - 64;
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..200 {
        let mut forged = bytes[..split].to_vec();
        forged.extend((0..64).map(|_| rng.random::<u8>()));
        assert_eq!(
            must_fail(&encode_decimal(&forged), &ring),
            TokenError::Forged
        );
    }
    // s + L (the group order) is the same signature mathematically; verify_strict refuses
    // such malleated signatures.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut malleated = bytes.clone();
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let sum = u16::from(malleated[split + 32 + i]) + u16::from(*l) + carry;
        malleated[split + 32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    assert_eq!(
        must_fail(&encode_decimal(&malleated), &ring),
        TokenError::Forged
    );
}

#[test]
fn check_day_refuses_other_days() {
    let (ring, token) = setup();
    let claims = verify(&token, SITE, &ring).unwrap_or_else(|e| panic!("{e}"));
    for today in [date(2026, 11, 23), date(2026, 11, 25), date(2027, 11, 24)] {
        let error = check_day(&claims, today).err();
        assert_eq!(
            error,
            Some(TokenError::WrongDay {
                day: claims.day,
                today
            })
        );
        let error = error.unwrap_or(TokenError::NoToken);
        assert_eq!(error.code(), "wrong_day");
        assert_eq!(
            error.to_string(),
            format!("the check-in code is for 2026-11-24, not for today ({today})")
        );
    }
}

#[test]
fn every_truncation_is_refused() {
    let (ring, token) = setup();
    for len in 0..token.len() {
        let error = must_fail(&token[..len], &ring);
        if len < 100 {
            assert_eq!(error, TokenError::NoToken, "{len} digits");
        } else {
            assert_eq!(error.code(), "malformed", "{len} digits");
        }
        // Losing the start (a scanner that missed the first characters) too.
        must_fail(&token[token.len() - len..], &ring);
    }
}

#[test]
fn garbage_is_refused() {
    let (ring, _) = setup();
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..2000 {
        let len = rng.random_range(0..1200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        must_fail(&String::from_utf8_lossy(&bytes), &ring);
        let len = rng.random_range(100..=400);
        let digits: String = (0..len)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect();
        must_fail(&digits, &ring);
    }
    assert_eq!(must_fail("", &ring), TokenError::NoToken);
    assert_eq!(must_fail("hello", &ring), TokenError::NoToken);
    assert_eq!(must_fail(&"0".repeat(401), &ring), TokenError::TooLong);
    assert_eq!(must_fail(&"x".repeat(1025), &ring), TokenError::TooLong);
    assert_eq!(
        must_fail(&"0".repeat(238), &ring).code(),
        "unsupported_version"
    );
}

#[test]
fn a_token_inside_a_url_verifies_even_when_the_keyboard_layout_mangled_it() {
    let (ring, token) = setup();
    let inputs = [
        format!("{URL}{token}"),
        // A German-layout scanner on a US-configured host (and vice versa): ':' and '/'
        // arrive as other characters, digits survive.
        format!("httpsÖ--termine.musterstadt.de-c-{token}"),
        format!("HTTPSÖ--TERMINE.MUSTERSTADT.DE-C-{token}\r\n"),
        format!("https&//termine.musterstadt.de&c&{token}?utm=2026"),
        format!("  {token}\n"),
    ];
    for input in inputs {
        assert_eq!(verify(&input, SITE, &ring), Ok(claims(1)), "{input}");
    }
    // A long digit run elsewhere does not hide the token (the longest run wins) ...
    let decoy = "1".repeat(120);
    assert_eq!(
        verify(&format!("{decoy}-{token}"), SITE, &ring),
        Ok(claims(1))
    );
    // ... but input over 1024 bytes is refused however it looks.
    let padded = format!("{URL}{token}?{}", "a".repeat(1024));
    assert_eq!(must_fail(&padded, &ring), TokenError::TooLong);
}

#[test]
fn key_rotation_accepts_both_keys_and_retiring_one_refuses_its_tokens() {
    let (old, old_public) = key(1);
    let (new, new_public) = key(2);
    let both = KeyRing::parse([(1, old_public.as_str()), (2, new_public.as_str())])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(both.key_ids().collect::<Vec<_>>(), vec![1, 2]);
    let old_token = sign(&claims(1), SITE, &old).unwrap_or_else(|e| panic!("{e}"));
    let new_token = sign(&claims(2), SITE, &new).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verify(&old_token, SITE, &both), Ok(claims(1)));
    assert_eq!(verify(&new_token, SITE, &both), Ok(claims(2)));

    let only_new = KeyRing::parse([(2, new_public)]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verify(&new_token, SITE, &only_new), Ok(claims(2)));
    assert_eq!(
        verify(&old_token, SITE, &only_new),
        Err(TokenError::UnknownKey(1))
    );
    // The new key does not sign for the old key id.
    let wrong_id = sign(&claims(1), SITE, &new).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verify(&wrong_id, SITE, &both), Err(TokenError::Forged));
}

#[test]
fn signing_keys_round_trip_through_hex() {
    let (signing, public) = generate_key(&mut rand::rng());
    let hex = token::signing_key_hex(&signing);
    let back = token::parse_signing_key(&hex).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(token::public_key_hex(&back.verifying_key()), public);
    assert!(token::parse_signing_key("abc").is_err());
}

#[test]
fn a_typical_token_fits_a_small_qr_code() {
    let (_, token) = setup();
    let code = qr_for(&token).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code.error_correction_level(), qrcode::EcLevel::M);
    assert_eq!(code.version(), qrcode::Version::Normal(6));
    assert_eq!(code.width(), 41, "41 modules: 20.5 mm at 0.5 mm per module");
    assert!(code.width() <= 45);
    // Inside the URL: a byte-mode prefix plus the numeric token.
    let code = qr_for(&format!("{URL}{token}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code.version(), qrcode::Version::Normal(8));
    assert_eq!(code.width(), 49);
    // The largest possible token still makes a QR code.
    let (signing, _) = key(1);
    let large = TokenClaims {
        booking: BookingId::new("b".repeat(40)),
        service: ServiceId::new("s".repeat(32)),
        ..claims(1)
    };
    let token = sign(&large, SITE, &signing).unwrap_or_else(|e| panic!("{e}"));
    let code = qr_for(&token).unwrap_or_else(|e| panic!("{e}"));
    assert!(code.width() <= 57, "{}", code.width());
}

#[test]
fn every_error_has_a_stable_code_and_a_readable_message() {
    let errors = [
        (TokenError::TooLong, "too_long"),
        (TokenError::NoToken, "no_token"),
        (TokenError::Malformed("truncated"), "malformed"),
        (TokenError::UnsupportedVersion(2), "unsupported_version"),
        (TokenError::UnknownKey(4), "unknown_key"),
        (TokenError::Forged, "forged"),
        (
            TokenError::WrongDay {
                day: date(2026, 1, 2),
                today: date(2026, 1, 1),
            },
            "wrong_day",
        ),
    ];
    for (error, code) in errors {
        assert_eq!(error.code(), code);
        let message = error.to_string();
        assert!(
            message.starts_with("the ") || message.starts_with("no "),
            "{message}"
        );
    }
}

fn typical_token() -> &'static (KeyRing, String) {
    static TOKEN: std::sync::OnceLock<(KeyRing, String)> = std::sync::OnceLock::new();
    TOKEN.get_or_init(setup)
}

fn today() -> Date {
    date(2026, 11, 24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_verify(input in any::<String>()) {
        let (ring, _) = typical_token();
        prop_assert!(verify(&input, SITE, ring).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let (ring, _) = typical_token();
        prop_assert!(verify(&String::from_utf8_lossy(&bytes), SITE, ring).is_err());
    }

    #[test]
    fn arbitrary_digit_runs_never_verify(
        prefix in "[^0-9]{0,40}",
        digits in "[0-9]{100,400}",
        suffix in "[^0-9]{0,40}",
    ) {
        let (ring, _) = typical_token();
        let input = format!("{prefix}{digits}{suffix}");
        prop_assert!(verify(&input, SITE, ring).is_err());
    }

    #[test]
    fn arbitrary_byte_payloads_never_verify(bytes in proptest::collection::vec(any::<u8>(), 40..170)) {
        let (ring, _) = typical_token();
        prop_assert!(verify(&encode_decimal(&bytes), SITE, ring).is_err());
    }

    #[test]
    fn edits_of_a_valid_token_never_verify(
        position in 0usize..238,
        edit in 0u8..3,
        digit in 0u8..10,
    ) {
        let (ring, token) = typical_token();
        let mut edited = token.clone().into_bytes();
        match edit {
            0 => edited[position] = b'0' + digit,
            1 => { edited.remove(position); }
            _ => edited.insert(position, b'0' + digit),
        }
        let edited = String::from_utf8(edited).unwrap_or_default();
        let result = verify(&edited, SITE, ring);
        if &edited == token {
            let claims = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(check_day(&claims, today()).is_ok());
        } else {
            prop_assert!(result.is_err(), "{edited} verified");
        }
    }
}
