//! Signing, verifying and the decimal writing of tokens.

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
