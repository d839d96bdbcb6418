//! Signed check-in codes at the scanner, on the real daemon with the sim scanner: a valid
//! token checks a visitor in even though the booking never arrived from the website (offline
//! first), also inside a URL mangled by a German keyboard layout; a replay, a forged or
//! tampered code, a code of another site and a plain booking id are refused, and nothing is
//! issued for them.

use std::time::Duration;

use anyhow::Context;
use leitsystem::control::ControlRequest;
use leitsystem::domain::{BookingId, ServiceId, Ticket};
use leitsystem::token::{TokenClaims, generate_key, sign};
use leitsystem_tests::daemon::{
    Daemon, device_line, free_port, request, sim_scanner, wait_for, write_config_with_devices,
};

const SITE: &str = "musterstadt-rathaus";

fn tickets(daemon: &Daemon) -> anyhow::Result<Vec<Ticket>> {
    let state = request(daemon, &ControlRequest::State)?
        .state
        .context("no state")?;
    Ok(state.tickets)
}

/// Claims for a slot at the current minute today (always inside the check-in window).
fn claims(booking: &str, key_id: u8) -> anyhow::Result<TokenClaims> {
    let now = jiff::Zoned::now().in_tz("Europe/Berlin")?;
    Ok(TokenClaims {
        key_id,
        booking: BookingId::new(booking),
        service: ServiceId::new("meldung"),
        day: now.date(),
        slot_minute: u16::try_from(i32::from(now.hour()) * 60 + i32::from(now.minute()))?,
        version: 1,
    })
}

#[test]
fn signed_codes_check_in_offline_and_forged_replayed_or_unsigned_codes_are_refused()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let scanner = free_port()?;
    let mut rng = rand::rng();
    let (key, public) = generate_key(&mut rng);
    let (other_key, _) = generate_key(&mut rng);
    let devices = format!(
        r#"
[tokens]
keys = [{{ id = 7, public_key = "{public}" }}]
{}"#,
        sim_scanner(scanner)
    );
    let config = write_config_with_devices(dir.path(), &data, &devices)?;
    // The demo's own [tokens] (unsigned ids accepted) gives way to the key above.
    let text =
        std::fs::read_to_string(&config)?.replacen("[tokens]\naccept_unsigned = true\n", "", 1);
    std::fs::write(&config, text)?;
    let daemon = Daemon::start(&config, &data, &[])?;
    let scan = |code: &str| -> anyhow::Result<()> {
        wait_for("the scanner", Duration::from_secs(10), || {
            Ok(device_line(scanner, code).ok())
        })?;
        Ok(())
    };
    let count = |daemon: &Daemon| -> anyhow::Result<usize> { Ok(tickets(daemon)?.len()) };

    // The booking never reached the appliance; the signed code is enough.
    let token = sign(&claims("BK-OFFLINE", 7)?, SITE, &key)?;
    scan(&format!("https://termine.musterstadt.de/c/{token}"))?;
    wait_for("the offline check-in", Duration::from_secs(10), || {
        Ok((count(&daemon)? == 1).then_some(()))
    })?;
    // Through a German keyboard layout the URL's punctuation changes, the digits do not.
    let token = sign(&claims("BK-LAYOUT", 7)?, SITE, &key)?;
    scan(&format!("httpsÖ--termine.musterstadt.de-c-{token}"))?;
    wait_for(
        "the check-in through a German layout",
        Duration::from_secs(10),
        || Ok((count(&daemon)? == 2).then_some(())),
    )?;

    // Refused: the same code again, a forged signature, a tampered digit, another site, a
    // plain booking id. A valid code after them proves they were all processed.
    let replay = sign(&claims("BK-OFFLINE", 7)?, SITE, &key)?;
    let forged = sign(&claims("BK-FORGED", 7)?, SITE, &other_key)?;
    let mut tampered = sign(&claims("BK-TAMPER", 7)?, SITE, &key)?.into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'1' { b'2' } else { b'1' };
    let tampered = String::from_utf8(tampered)?;
    let elsewhere = sign(&claims("BK-ELSEWHERE", 7)?, "another-town", &key)?;
    for code in [
        &replay,
        &forged,
        &tampered,
        &elsewhere,
        &"BK-PLAIN".to_string(),
    ] {
        scan(code)?;
    }
    let last = sign(&claims("BK-LAST", 7)?, SITE, &key)?;
    scan(&last)?;
    wait_for("the last check-in", Duration::from_secs(10), || {
        Ok((count(&daemon)? == 3).then_some(()))
    })?;
    let bookings: Vec<String> = tickets(&daemon)?
        .iter()
        .filter_map(|t| match &t.origin {
            leitsystem::domain::TicketOrigin::Appointment { booking, .. } => {
                Some(booking.to_string())
            }
            leitsystem::domain::TicketOrigin::WalkIn { booking } => {
                booking.as_ref().map(|b| b.to_string())
            }
        })
        .collect();
    assert_eq!(bookings, ["BK-OFFLINE", "BK-LAYOUT", "BK-LAST"]);
    let log = std::fs::read_to_string(&daemon.log)?;
    for reason in [
        "already checked in",
        "forged",
        "another site",
        "unsigned codes",
    ] {
        assert!(
            log.to_lowercase().contains(reason),
            "no refusal mentioning {reason:?} in the log:\n{}",
            daemon.log_tail()
        );
    }
    Ok(())
}
