//! The TOML config file: typed structs with `deny_unknown_fields`, parsed and validated in one
//! place. Every problem is reported with file, line and column; semantic problems (dangling
//! references, duplicates, ranges) are all reported at once. Nothing starts before the file is
//! valid.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

/// The demo config (a small citizens' office), embedded in the binary.
pub const DEMO_CONFIG: &str = include_str!("../../../config/demo.toml");

pub use leitsystem_core::catalog::{LateArrival, Text, TicketQr, TicketTexts};

mod mqtt;
mod ticket;
mod validate;
pub mod web;

pub use mqtt::*;
pub use ticket::*;
use validate::validate;
pub use web::{AddressRange, SocketCaps, WebConfig, WebUserConfig};

/// Name under which the embedded demo config is reported in errors.
pub const DEMO_CONFIG_NAME: &str = "<embedded demo.toml>";

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The site (one building or office).
    pub site: SiteConfig,
    /// Queue policy; defaults apply to every missing value.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The local control socket.
    #[serde(default)]
    pub control: ControlConfig,
    /// The durable store.
    #[serde(default)]
    pub store: StoreConfig,
    /// When a service day may start on the system clock's word.
    #[serde(default)]
    pub clock: ClockConfig,
    /// Departments with public traffic.
    #[serde(rename = "department", default)]
    pub departments: Vec<DepartmentConfig>,
    /// Services offered.
    #[serde(rename = "service", default)]
    pub services: Vec<ServiceConfig>,
    /// Desks.
    #[serde(rename = "desk", default)]
    pub desks: Vec<DeskConfig>,
    /// The web server (wall display, API, metrics); absent = no web server.
    #[serde(default)]
    pub web: Option<WebConfig>,
    /// The printed ticket.
    #[serde(default)]
    pub ticket: TicketConfig,
    /// Signed check-in codes: the website's public keys.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// Where driver plugins are found.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Devices: each bound to a plugin, a role and optionally desks.
    #[serde(rename = "device", default)]
    pub devices: Vec<DeviceEntry>,
    /// Booking sync with the city website over MQTT; absent = no sync.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
}

/// `[tokens]`: verifying the signed check-in codes of the booking confirmations.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// The website's public keys, by key id (several at once while keys are rotated).
    #[serde(default)]
    pub keys: Vec<TokenKeyConfig>,
    /// Also accept plain, unsigned booking ids (for testing; anyone who knows an id could
    /// check in with it). Without keys, plain ids are all there is.
    #[serde(default)]
    pub accept_unsigned: bool,
}

/// One public key of `[tokens]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenKeyConfig {
    /// Key id (0 to 255), as carried in the tokens.
    pub id: Spanned<i64>,
    /// Ed25519 public key, 64 hex digits.
    pub public_key: Spanned<String>,
}

/// `[plugins]`: directories searched for plugin files named without a path, and how long a
/// print job may go unanswered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Search directories, in order. Relative paths are relative to the config file.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// A print job without an answer from its printer after this many seconds counts as
    /// failed (the job was lost: a full queue, a restarting driver, a printer switched off);
    /// the ticket is reprinted once the printer is ready again.
    #[serde(default = "default_print_answer_seconds")]
    pub print_answer_seconds: Spanned<i64>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dirs: Vec::new(),
            print_answer_seconds: default_print_answer_seconds(),
        }
    }
}

fn default_print_answer_seconds() -> Spanned<i64> {
    Spanned::new(0..0, 30)
}

/// `[[device]]`: one device, driven by a plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// Id, unique among devices.
    pub id: Spanned<String>,
    /// Plugin file: a file name searched in `[plugins] dirs`, or a path.
    pub plugin: Spanned<String>,
    /// `scanner`, `buttons`, `printer` or `display`.
    pub role: Spanned<String>,
    /// Desks the device acts for (buttons); empty = any desk named in its messages.
    #[serde(default)]
    pub desks: Vec<Spanned<String>>,
    /// The check-in terminal the device belongs to (scanners and printers): a ticket issued
    /// by a terminal's scanner prints on that terminal's printer, and only there.
    #[serde(default)]
    pub terminal: Option<Spanned<String>>,
    /// Departments whose tickets this printer prints when no terminal decides (walk-ins from
    /// the kiosk page or the control socket); empty = any department.
    #[serde(default)]
    pub departments: Vec<Spanned<String>>,
    /// Plugin-specific options, handed to the plugin as JSON.
    #[serde(default)]
    pub options: toml::Table,
}

/// `[site]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Short id used in topics and logs (`a-z`, `0-9`, `-`, `_`).
    pub id: Spanned<String>,
    /// The town, e.g. "Stadt Musterstadt".
    pub town: String,
    /// The office or building, e.g. "Rathaus Mitte".
    pub name: String,
    /// IANA time zone of the service day.
    #[serde(default = "default_time_zone")]
    pub time_zone: Spanned<String>,
    /// Where the durable store lives.
    pub data_dir: PathBuf,
}

fn default_time_zone() -> Spanned<String> {
    Spanned::new(0..0, "Europe/Berlin".to_string())
}

/// `[policy]`: the queue policy. All durations in minutes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Check-in opens this long before the slot.
    pub checkin_early_minutes: Spanned<i64>,
    /// Check-in for the appointment closes this long after the slot starts.
    pub checkin_late_minutes: Spanned<i64>,
    /// What to do with a visitor later than that.
    pub late_arrival: LateArrival,
    /// An appointment becomes due (called ahead of walk-ins) this long before its slot.
    pub appointment_due_before_minutes: Spanned<i64>,
    /// A walk-in that waited this long is called before due appointments.
    pub walk_in_max_wait_minutes: Spanned<i64>,
    /// A ticket for a named desk is called by that desk only, for this long after it is due.
    pub named_desk_grace_minutes: Spanned<i64>,
    /// A no-show is called again after this delay ...
    pub no_show_requeue_delay_minutes: Spanned<i64>,
    /// ... until it was called this many times in all (1 = never re-queued).
    pub max_calls: Spanned<i64>,
    /// A "next" at a desk within this many seconds of its last call repeats that call
    /// (answers with the called ticket, changes nothing): a bouncing button or a double click
    /// must not finish a visitor who was never served. 0 turns it off.
    pub repeat_next_within_seconds: Spanned<i64>,
    /// The wall clock "jumped" when it moved this many seconds more or less than the
    /// monotonic clock between two readings. A jump into another day, or backwards, is held:
    /// the engine keeps counting on the monotonic clock until an admin confirms the new time
    /// (`/admin`, `leitsystemd ctl confirm-clock`) or the clock comes back by itself.
    pub clock_jump_seconds: Spanned<i64>,
    /// Personal data is erased this many days after the appointment's day (0 = at the end of
    /// that day).
    pub personal_data_retention_days: Spanned<i64>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let n = |v| Spanned::new(0..0, v);
        Self {
            checkin_early_minutes: n(60),
            checkin_late_minutes: n(15),
            late_arrival: LateArrival::WalkIn,
            appointment_due_before_minutes: n(5),
            walk_in_max_wait_minutes: n(45),
            named_desk_grace_minutes: n(10),
            no_show_requeue_delay_minutes: n(5),
            max_calls: n(2),
            repeat_next_within_seconds: n(5),
            clock_jump_seconds: n(300),
            personal_data_retention_days: n(0),
        }
    }
}

/// `[control]`: the local control socket used by `leitsystemd ctl`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix socket path; default `<data_dir>/control.sock`.
    pub socket: Option<PathBuf>,
}

/// `[clock]`: whether a service day needs a synchronised system clock to start.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// Start a service day (the first after start-up too) only on a synchronised clock, or
    /// after an admin confirmed the time (`/admin`, `leitsystemd ctl confirm-clock`). Until
    /// then every command is refused and bookings wait at the broker. Off by default (the
    /// demo); the packaged config turns it on.
    pub require_synchronised: bool,
    /// How "synchronised" is known: the path of a file that exists once it is (default:
    /// systemd-timesyncd's `/run/systemd/timesync/synchronized`), or `kernel` for the
    /// kernel's NTP status (needs `ProtectClock=no` and `SystemCallFilter=adjtimex` in the unit).
    pub synchronised_when: Option<Spanned<String>>,
}

impl ClockConfig {
    /// The sync source, `None` when no synchronised clock is required.
    pub fn sync_source(&self) -> Option<crate::clock::SyncSource> {
        use crate::clock::{SyncSource, TIMESYNCD_FLAG_FILE};
        if !self.require_synchronised {
            return None;
        }
        Some(
            match self.synchronised_when.as_ref().map(Spanned::get_ref) {
                None => SyncSource::FlagFile(PathBuf::from(TIMESYNCD_FLAG_FILE)),
                Some(text) if text == "kernel" => SyncSource::Kernel,
                Some(path) => SyncSource::FlagFile(PathBuf::from(path)),
            },
        )
    }
}

/// `[store]`: settings of the durable store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled's page cache in MiB (small: the appliance has 512 MB of RAM).
    pub cache_mib: Spanned<i64>,
    /// How long to wait for a store still locked by a previous process, in seconds.
    pub lock_wait_seconds: Spanned<i64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_mib: Spanned::new(0..0, 8),
            lock_wait_seconds: Spanned::new(0..0, 10),
        }
    }
}

/// `[[department]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentConfig {
    /// Id.
    pub id: Spanned<String>,
    /// Name.
    pub name: Text,
    /// Where its visitors wait.
    pub waiting_area: Text,
}

/// `[[service]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Id.
    pub id: Spanned<String>,
    /// Department offering it.
    pub department: Spanned<String>,
    /// Ticket prefix, 1 to 3 capital letters, unique.
    pub prefix: Spanned<String>,
    /// Name.
    pub name: Text,
    /// Expected duration of one visit, used until service times are measured.
    pub expected_minutes: Spanned<i64>,
    /// Documents to bring.
    #[serde(default)]
    pub documents: Vec<Text>,
}

/// `[[desk]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskConfig {
    /// Id (usually the desk number).
    pub id: Spanned<String>,
    /// Label shown on the display, e.g. "Platz 3".
    pub label: Text,
    /// Department.
    pub department: Spanned<String>,
    /// Services served here.
    pub services: Vec<Spanned<String>>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// Plain message.
    pub message: String,
}

/// All problems found in a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// Problems, in file order.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line > 0 {
                write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
            } else {
                write!(f, "{}: {}", self.file, p.message)?;
            }
        }
        Ok(())
    }
}

impl Config {
    /// What a valid config does that a real site should know about: logged at start-up and
    /// printed by `check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.tokens.accept_unsigned {
            out.push(
                "[tokens] accept_unsigned = true: plain booking ids are checked in without a \
                 signature, so anyone who knows (or guesses) a booking id can check it in; \
                 for testing and demos only"
                    .to_string(),
            );
        } else if self.tokens.keys.is_empty() {
            out.push(
                "[tokens] has no keys and accept_unsigned is not set: no scanned code can \
                 check anybody in; add the website's public key (keys = [{ id = 1, \
                 public_key = \"...\" }])"
                    .to_string(),
            );
        }
        if let Some(web) = &self.web {
            if !web.listen.ip().is_loopback() && web.kiosk_clients.is_none() {
                out.push(format!(
                    "[web] listens on {} without kiosk_clients: any computer on the network \
                     can pull and print walk-in tickets; list the kiosks' addresses \
                     (kiosk_clients = [\"192.168.10.20\"])",
                    web.listen
                ));
            }
        }
        out
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![ConfigProblem {
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::parse(&text, &file)
    }

    /// The embedded demo config.
    pub fn demo() -> Result<Config, ConfigError> {
        Self::parse(DEMO_CONFIG, DEMO_CONFIG_NAME)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let locate = |span: Option<Range<usize>>, message: String| {
            let (line, column) = span.map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigProblem {
                line,
                column,
                message,
            }
        };
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            problems: vec![locate(e.span(), e.message().trim().to_string())],
        })?;
        let mut problems: Vec<ConfigProblem> = validate(&config)
            .into_iter()
            .map(|(span, message)| locate(if span == (0..0) { None } else { Some(span) }, message))
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            problems.sort_by_key(|p| (p.line, p.column));
            Err(ConfigError {
                file: file.to_string(),
                problems,
            })
        }
    }

    /// Path of the control socket.
    pub fn control_socket(&self, data_dir: &Path) -> PathBuf {
        self.control
            .socket
            .clone()
            .unwrap_or_else(|| data_dir.join("control.sock"))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

type Problem = (Range<usize>, String);

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn check_id(kind: &str, id: &Spanned<String>, seen: &mut HashSet<String>, out: &mut Vec<Problem>) {
    if !is_valid_id(id.get_ref()) {
        out.push((
            id.span(),
            format!(
                "{kind} id '{}' must be 1-64 characters of a-z, 0-9, '-' or '_'",
                id.get_ref()
            ),
        ));
    } else if !seen.insert(id.get_ref().clone()) {
        out.push((id.span(), format!("duplicate {kind} id '{}'", id.get_ref())));
    }
}

fn check_range(name: &str, value: &Spanned<i64>, min: i64, max: i64, out: &mut Vec<Problem>) {
    let v = *value.get_ref();
    if v < min || v > max {
        out.push((
            value.span(),
            format!("{name} = {v} is out of range {min}..={max}"),
        ));
    }
}

#[cfg(test)]
mod tests;
