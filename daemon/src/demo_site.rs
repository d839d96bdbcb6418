//! What `leitsystemd demo` adds to the embedded demo config so a newcomer can try every part
//! by hand:
//! - a website signing key of the demo's own, made on the first start and kept in
//!   `<data dir>/demo/website-key.hex` (0600); its public key is added to `[tokens]` at
//!   start, never to `demo.toml`, so a real site copied from it trusts no published key;
//! - two bookings for today, made once the daemon answers: `DEMO-1` (ID card, a plain id,
//!   which only the demo accepts) and `DEMO-2` (address registration, for "Erika Mustermann",
//!   with its signed check-in code in `<data dir>/demo/DEMO-2.code` and as a QR code in
//!   `DEMO-2.png`, to scan with `leitsystemd sim scan` or a real scanner);
//! - a note where the running demo's control socket is (`~/.local/state/leitsystem-demo.current`),
//!   so `leitsystemd ctl` finds the demo whatever `--data-dir` it was started with.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use leitsystem::config::{Config, ConfigError, DEMO_CONFIG, DEMO_CONFIG_NAME};
use leitsystem::control::{ControlClient, ControlRequest};
use leitsystem::domain::{BookingId, BookingInput, Command, PersonalData, ServiceId};
use leitsystem::token::{SigningKey, TokenClaims};

/// Key id of the demo's website key.
const DEMO_KEY_ID: u8 = 1;
/// The line of `demo.toml` the demo's key is added after.
const TOKENS_LINE: &str = "[tokens]\naccept_unsigned = true\n";

/// The demo's extras for one data directory.
pub struct DemoSite {
    key: SigningKey,
    key_is_new: bool,
    files: PathBuf,
}

/// Where the demo's extra files live: `<data dir>/demo/`.
fn files_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("demo")
}

/// The demo config with the demo's website key, and what the seeder needs.
pub fn prepare(data_dir: &Path) -> Result<(Config, DemoSite), ConfigError> {
    let files = files_dir(data_dir);
    let existing = std::fs::read_to_string(files.join("website-key.hex"))
        .ok()
        .and_then(|hex| leitsystem::token::parse_signing_key(hex.trim()).ok());
    let (key, key_is_new) = match existing {
        Some(key) => (key, false),
        None => (leitsystem::token::generate_key(&mut rand::rng()).0, true),
    };
    let public = leitsystem::token::public_key_hex(&key.verifying_key());
    let text = DEMO_CONFIG.replacen(
        TOKENS_LINE,
        &format!("{TOKENS_LINE}keys = [{{ id = {DEMO_KEY_ID}, public_key = \"{public}\" }}]\n"),
        1,
    );
    let config = Config::parse(&text, DEMO_CONFIG_NAME)?;
    Ok((
        config,
        DemoSite {
            key,
            key_is_new,
            files,
        },
    ))
}

/// The note `ctl` reads to find a running demo.
pub fn current_note(default_data_dir: &Path) -> PathBuf {
    let mut name = default_data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".current");
    default_data_dir.with_file_name(name)
}

/// The running demo's control socket from the note, when that socket exists.
pub fn running_demo_socket(default_data_dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(current_note(default_data_dir)).ok()?;
    let socket = PathBuf::from(text.trim());
    socket.exists().then_some(socket)
}

impl DemoSite {
    /// Waits (bounded) until the daemon answers on `socket`, then writes the key, the
    /// bookings, the signed code and the note; logs what to try. Runs on its own thread.
    pub fn seed_when_up(self, socket: PathBuf, default_data_dir: PathBuf, config: &Config) {
        let site_id = config.site.id.get_ref().clone();
        let zone = config.site.time_zone.get_ref().clone();
        std::thread::spawn(move || {
            if let Err(e) = self.seed(&socket, &default_data_dir, &site_id, &zone) {
                tracing::warn!("demo: the demo bookings could not be made: {e:#}");
            }
        });
    }

    fn seed(
        &self,
        socket: &Path,
        default_data_dir: &Path,
        site_id: &str,
        zone: &str,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut client = loop {
            if let Ok(mut client) = ControlClient::connect(socket)
                && client.request(&ControlRequest::State).is_ok()
            {
                break client;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the daemon did not answer on {} in 60 s",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        std::fs::create_dir_all(&self.files)
            .with_context(|| format!("creating {}", self.files.display()))?;
        if self.key_is_new {
            write_private(
                &self.files.join("website-key.hex"),
                &leitsystem::token::signing_key_hex(&self.key),
            )?;
        }
        // Slots a quarter of an hour from now, on the quarter: within the check-in window.
        let tz = jiff::tz::TimeZone::get(zone)?;
        let now = jiff::Timestamp::now().to_zoned(tz);
        let minute = i32::from(now.hour()) * 60 + i32::from(now.minute());
        let slot_minute = ((minute / 15 + 1) * 15).min(23 * 60 + 45);
        let slot = now
            .date()
            .at(
                i8::try_from(slot_minute / 60)?,
                i8::try_from(slot_minute % 60)?,
                0,
                0,
            )
            .to_zoned(now.time_zone().clone())?;
        // One version per day: the demo's bookings move to today on every day it starts.
        let version = u64::try_from(
            i64::from(now.year()) * 10_000 + i64::from(now.month()) * 100 + i64::from(now.day()),
        )?;
        let bookings = [
            ("DEMO-1", "ausweis", None),
            ("DEMO-2", "meldung", Some("Erika Mustermann")),
        ];
        for (id, service, name) in bookings {
            let booking = BookingInput {
                id: BookingId::new(id),
                version,
                service: ServiceId::new(service),
                slot_start: slot.timestamp().as_millisecond(),
                duration_minutes: 15,
                desk: None,
                personal: name.map(|name| PersonalData {
                    name: Some(name.to_string()),
                    note: None,
                }),
                status: Default::default(),
                refusal: None,
            };
            let answer = client.request(&ControlRequest::Execute {
                request_id: Some(format!("demo-booking:{id}:{version}")),
                command: Command::UpsertBooking { booking },
            })?;
            if !answer.ok {
                tracing::warn!(booking = id, error = ?answer.error, "demo: booking refused");
            }
        }
        let claims = TokenClaims {
            key_id: DEMO_KEY_ID,
            booking: BookingId::new("DEMO-2"),
            service: ServiceId::new("meldung"),
            day: slot.date(),
            slot_minute: u16::try_from(slot_minute)?,
            version,
        };
        let code = leitsystem::token::sign(&claims, site_id, &self.key)
            .map_err(|e| anyhow::anyhow!("cannot sign the demo code: {e:?}"))?;
        let code_file = self.files.join("DEMO-2.code");
        std::fs::write(&code_file, format!("{code}\n"))
            .with_context(|| format!("writing {}", code_file.display()))?;
        let qr = leitsystem::token::qr_for(&code)
            .map_err(|e| anyhow::anyhow!("cannot make the QR code: {e}"))?;
        let png = self.files.join("DEMO-2.png");
        std::fs::write(&png, leitsystem::token::qr_png(&qr)?)
            .with_context(|| format!("writing {}", png.display()))?;
        let note = current_note(default_data_dir);
        if let Some(parent) = note.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&note, format!("{}\n", socket.display()))
            .with_context(|| format!("writing {}", note.display()))?;
        tracing::info!(
            slot = %format!("{:02}:{:02}", slot.hour(), slot.minute()),
            code_file = %code_file.display(),
            qr = %png.display(),
            "demo: bookings DEMO-1 (ID card) and DEMO-2 (Erika Mustermann) are made for today; \
             check in with `leitsystemd sim scan DEMO-1` or scan the signed code of DEMO-2"
        );
        Ok(())
    }

    /// Removes the note at a clean stop, if it still names this demo's socket.
    pub fn forget(socket: &Path, default_data_dir: &Path) {
        let note = current_note(default_data_dir);
        if std::fs::read_to_string(&note).is_ok_and(|text| Path::new(text.trim()) == socket) {
            let _ = std::fs::remove_file(note);
        }
    }
}

/// The signed code the running demo (else the demo in its default data directory) made for
/// `booking`.
pub fn signed_code(default_data_dir: &Path, booking: &str) -> anyhow::Result<String> {
    let data_dir = running_demo_socket(default_data_dir)
        .and_then(|socket| socket.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| default_data_dir.to_path_buf());
    let file = files_dir(&data_dir).join(format!("{booking}.code"));
    let code = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "no signed code for '{booking}' in {} (the demo makes one for DEMO-2 when it starts)",
            file.display()
        )
    })?;
    Ok(code.trim().to_string())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Sends one line to a simulated device (the demo's scanner or button box) and returns its
/// answer: `leitsystemd sim scan` and `leitsystemd sim button`, so no `nc` is needed.
pub fn send_line(host: &str, port: u16, line: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, BufReader};
    let mut stream = std::net::TcpStream::connect((host, port)).with_context(|| {
        format!(
            "no simulated device answers on {host}:{port} (is the demo running? `bash daemon/demo.sh`)"
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("the simulated device did not answer")?;
    Ok(answer.trim().to_string())
}
