//! `leitsystem-website-sim`: the city website, simulated, for the demo, the tests and the
//! website's developers: keys, signed check-in codes and their QR codes, bookings published to
//! the broker by contract v1 (`daemon/docs/mqtt.md`). Not part of the appliance.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The city website, simulated: keys, signed tokens and QR codes, bookings published to the
/// broker by contract v1 (`daemon/docs/mqtt.md`).
#[derive(Parser)]
#[command(name = "leitsystem-website-sim", version)]
struct Cli {
    #[command(subcommand)]
    action: SimAction,
}

/// Where the simulated website publishes.
#[derive(clap::Args)]
struct SimBroker {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
}

#[derive(Subcommand)]
enum SimAction {
    /// Make an Ed25519 key pair: writes the secret key (hex) to --out, prints the public key
    /// and the `[tokens]` snippet for the appliance's config.
    Keygen {
        /// File for the secret key.
        #[arg(long)]
        out: PathBuf,
        /// Key id (0-255).
        #[arg(long, default_value_t = 1)]
        key_id: u8,
    },
    /// Generate bookings and publish every day's snapshot (retained, QoS 1); waits for all
    /// acknowledgements.
    Publish {
        #[command(flatten)]
        broker: SimBroker,
        /// Site id.
        #[arg(long)]
        site: String,
        /// Number of bookings.
        #[arg(long)]
        bookings: usize,
        /// Spread over this many days.
        #[arg(long, default_value_t = 1)]
        days: u32,
        /// Seed of the generator (same seed, same bookings).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Services, comma-separated.
        #[arg(long, default_value = "ausweis,meldung,kfz")]
        services: String,
        /// First day (default: today in the time zone).
        #[arg(long)]
        start_day: Option<String>,
        /// State file: what was published, for later `change` and `snapshot`.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Topic root.
        #[arg(long, default_value = "leitsystem/v1")]
        topic_root: String,
        /// Time zone of the site.
        #[arg(long, default_value = "Europe/Berlin")]
        time_zone: String,
    },
    /// Change one booking: publishes the change, then the updated day snapshot(s).
    Change {
        #[command(flatten)]
        broker: SimBroker,
        /// State file written by `publish` (updated).
        #[arg(long)]
        state: PathBuf,
        /// Booking id.
        #[arg(long)]
        booking: String,
        /// booked, cancelled or deleted.
        #[arg(long, default_value = "booked")]
        status: String,
        /// New version (default: the stored one + 1).
        #[arg(long)]
        version: Option<u64>,
        /// Service (default: unchanged).
        #[arg(long)]
        service: Option<String>,
        /// Slot start, RFC 3339 with offset (default: unchanged).
        #[arg(long)]
        slot: Option<String>,
        /// Do not publish the day snapshot (simulates a lost snapshot update).
        #[arg(long)]
        skip_snapshot: bool,
        /// Publish the change with QoS 0 (lost when nobody is connected).
        #[arg(long)]
        qos0: bool,
        /// Wait this long between the change and the snapshot.
        #[arg(long, default_value_t = 0)]
        snapshot_delay_ms: u64,
        /// Time zone of the site.
        #[arg(long, default_value = "Europe/Berlin")]
        time_zone: String,
    },
    /// Publish the snapshots from a state file again (all days, or one).
    Snapshot {
        #[command(flatten)]
        broker: SimBroker,
        /// State file.
        #[arg(long)]
        state: PathBuf,
        /// Only this day.
        #[arg(long)]
        day: Option<String>,
    },
    /// Sign a check-in token; prints it (or the URL holding it) and optionally writes its QR.
    Token {
        /// Secret key file from `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Key id.
        #[arg(long, default_value_t = 1)]
        key_id: u8,
        /// Site id.
        #[arg(long)]
        site: String,
        /// Booking id.
        #[arg(long)]
        booking: String,
        /// Service id.
        #[arg(long)]
        service: String,
        /// Slot start, RFC 3339 with offset.
        #[arg(long)]
        slot: String,
        /// Booking version.
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// Put the token after this URL prefix, e.g. `https://termine.example/c/`.
        #[arg(long)]
        url_prefix: Option<String>,
        /// Write the QR code as PNG (4 px modules, 4-module quiet zone).
        #[arg(long)]
        qr: Option<PathBuf>,
        /// Time zone of the site.
        #[arg(long, default_value = "Europe/Berlin")]
        time_zone: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match website_sim(cli.action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "leitsystem-website-sim: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn website_sim(action: SimAction) -> anyhow::Result<()> {
    use anyhow::Context;
    use leitsystem_core::clock::Calendar;
    use leitsystem_core::contract::{WireStatus, parse_day};
    use leitsystem_website_sim::{self as sim, Message, SimState};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout();
    match action {
        SimAction::Keygen { out: file, key_id } => {
            let (key, public) = leitsystem_core::token::generate_key(&mut rand::rng());
            std::fs::write(&file, leitsystem_core::token::signing_key_hex(&key))
                .with_context(|| format!("writing {}", file.display()))?;
            writeln!(out, "public key: {public}")?;
            writeln!(out, "[tokens]")?;
            writeln!(
                out,
                "keys = [{{ id = {key_id}, public_key = \"{public}\" }}]"
            )?;
        }
        SimAction::Publish {
            broker,
            site,
            bookings,
            days,
            seed,
            services,
            start_day,
            state,
            topic_root,
            time_zone,
        } => {
            let calendar = Calendar::new(&time_zone)?;
            let start = match start_day {
                Some(d) => parse_day(&d).map_err(anyhow::Error::msg)?,
                None => calendar.day_of(jiff::Timestamp::now().as_millisecond()),
            };
            let services: Vec<String> = services.split(',').map(str::to_string).collect();
            let generated = sim::generate(bookings, days, seed, &services, start, &calendar)?;
            let mut sim_state = SimState {
                site,
                topic_root,
                ..SimState::default()
            };
            for (day, booking) in generated {
                sim_state.upsert(booking, &day);
            }
            let messages = sim_state
                .days
                .keys()
                .map(|day| Message::snapshot(&sim_state, day))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let count = messages.len();
            if let Some(path) = &state {
                sim_state.save(path)?;
            }
            runtime.block_on(sim::publish(&broker.host, broker.port, messages))?;
            writeln!(
                out,
                "published {bookings} bookings in {count} day snapshots"
            )?;
        }
        SimAction::Change {
            broker,
            state,
            booking,
            status,
            version,
            service,
            slot,
            skip_snapshot,
            qos0,
            snapshot_delay_ms,
            time_zone,
        } => {
            let calendar = Calendar::new(&time_zone)?;
            let mut sim_state = SimState::load(&state)?;
            let old_day = sim_state
                .day_of_booking(&booking)
                .with_context(|| format!("booking {booking} is not in {}", state.display()))?;
            let mut b = sim_state
                .days
                .get(&old_day)
                .and_then(|d| d.get(&booking))
                .cloned()
                .context("booking vanished")?;
            b.status = match status.as_str() {
                "booked" => WireStatus::Booked,
                "cancelled" => WireStatus::Cancelled,
                "deleted" => WireStatus::Deleted,
                other => anyhow::bail!("status '{other}' is not booked, cancelled or deleted"),
            };
            b.version = version.unwrap_or(b.version + 1);
            if let Some(service) = service {
                b.service = service;
            }
            if let Some(slot) = slot {
                let at = leitsystem_core::clock::parse_instant(&slot)
                    .with_context(|| format!("slot '{slot}' is not RFC 3339"))?;
                b.slot_start = calendar.local_rfc3339(at);
            }
            if b.status == WireStatus::Deleted {
                b.personal = None;
            }
            let at = leitsystem_core::clock::parse_instant(&b.slot_start)?;
            let day = calendar.day_of(at).to_string();
            let changed = sim_state.upsert(b.clone(), &day);
            let qos = if qos0 {
                rumqttc::QoS::AtMostOnce
            } else {
                rumqttc::QoS::AtLeastOnce
            };
            let change = Message::change(&sim_state, &b, &day, qos)?;
            runtime.block_on(sim::publish(&broker.host, broker.port, vec![change]))?;
            if !skip_snapshot {
                if snapshot_delay_ms > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(snapshot_delay_ms));
                }
                let snapshots = changed
                    .iter()
                    .map(|d| Message::snapshot(&sim_state, d))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                runtime.block_on(sim::publish(&broker.host, broker.port, snapshots))?;
            }
            sim_state.save(&state)?;
            let (count, digest) = sim_state.day_digest(&day);
            writeln!(
                out,
                "{booking} v{} {status} on {day}; day now {count} bookings, digest {digest}",
                b.version
            )?;
        }
        SimAction::Snapshot { broker, state, day } => {
            let sim_state = SimState::load(&state)?;
            let days: Vec<String> = match day {
                Some(d) => vec![d],
                None => sim_state.days.keys().cloned().collect(),
            };
            let messages = days
                .iter()
                .map(|d| Message::snapshot(&sim_state, d))
                .collect::<anyhow::Result<Vec<_>>>()?;
            runtime.block_on(sim::publish(&broker.host, broker.port, messages))?;
            writeln!(out, "published {} day snapshots", days.len())?;
        }
        SimAction::Token {
            key,
            key_id,
            site,
            booking,
            service,
            slot,
            version,
            url_prefix,
            qr,
            time_zone,
        } => {
            let hex = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let signing = leitsystem_core::token::parse_signing_key(hex.trim())
                .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            let tz = jiff::tz::TimeZone::get(&time_zone)?;
            let zoned = slot
                .parse::<jiff::Timestamp>()
                .with_context(|| format!("slot '{slot}' is not RFC 3339 with offset"))?
                .to_zoned(tz);
            let claims = leitsystem_core::token::TokenClaims {
                key_id,
                booking: leitsystem_core::domain::BookingId::new(booking),
                service: leitsystem_core::domain::ServiceId::new(service),
                day: zoned.date(),
                slot_minute: u16::try_from(
                    i32::from(zoned.hour()) * 60 + i32::from(zoned.minute()),
                )?,
                version,
            };
            let digits = leitsystem_core::token::sign(&claims, &site, &signing)
                .map_err(|e| anyhow::anyhow!("cannot sign: {e:?}"))?;
            let text = match url_prefix {
                Some(prefix) => format!("{prefix}{digits}"),
                None => digits,
            };
            writeln!(out, "{text}")?;
            if let Some(path) = qr {
                let code = leitsystem_core::token::qr_for(&text)
                    .map_err(|e| anyhow::anyhow!("cannot make a QR code: {e}"))?;
                std::fs::write(&path, leitsystem_core::token::qr_png(&code)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
