//! The TOML config file: typed structs with `deny_unknown_fields`, parsed and validated in one
//! place. Every problem is reported with file, line and column; semantic problems (dangling
//! references, duplicates, ranges) are all reported at once. Nothing starts before the file is
//! valid.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

/// The demo config (a small citizens' office), embedded in the binary.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

pub use leitsystem_core::catalog::{LateArrival, Text, TicketQr, TicketTexts};

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
    pub web: Option<crate::web::WebConfig>,
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

/// `[mqtt]`: the broker the booking sync talks to (see `daemon/docs/mqtt.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: Spanned<String>,
    /// Broker port.
    #[serde(default = "default_mqtt_port")]
    pub port: Spanned<i64>,
    /// Client id; fixed, because the persistent session is bound to it. Default
    /// `leitsystemd-<site id>`.
    #[serde(default)]
    pub client_id: Option<Spanned<String>>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (needs `username`).
    #[serde(default)]
    pub password: Option<String>,
    /// TLS; absent = plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTlsConfig>,
    /// Root of the topics: the site's topics are `<topic_root>/<site id>/...`.
    #[serde(default = "default_topic_root")]
    pub topic_root: Spanned<String>,
    /// MQTT keep-alive in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_seconds: Spanned<i64>,
    /// Largest packet sent or received in bytes (day snapshots are large).
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: Spanned<i64>,
    /// First wait after a failed connection, in milliseconds (doubled up to the maximum).
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: Spanned<i64>,
    /// Longest wait between connection attempts, in milliseconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: Spanned<i64>,
}

/// `[mqtt.tls]`: TLS to the broker (rustls).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// The CA certificate(s) the broker's certificate is checked against (PEM). Relative
    /// paths are relative to the config file.
    pub ca_file: PathBuf,
    /// Client certificate (PEM), for brokers that authenticate clients by certificate.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

fn default_mqtt_port() -> Spanned<i64> {
    Spanned::new(0..0, 1883)
}

fn default_topic_root() -> Spanned<String> {
    Spanned::new(0..0, "leitsystem/v1".to_string())
}

fn default_keep_alive() -> Spanned<i64> {
    Spanned::new(0..0, 30)
}

fn default_max_packet() -> Spanned<i64> {
    Spanned::new(0..0, 16 * 1024 * 1024)
}

fn default_reconnect_min() -> Spanned<i64> {
    Spanned::new(0..0, 500)
}

fn default_reconnect_max() -> Spanned<i64> {
    Spanned::new(0..0, 30_000)
}

/// `[ticket]`: the layout of the printed ticket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketConfig {
    /// Languages printed, in order: `["de"]`, `["en"]`, `["de", "en"]` or `["en", "de"]`.
    #[serde(default = "default_languages")]
    pub languages: Spanned<Vec<String>>,
    /// What the QR code holds.
    #[serde(default)]
    pub qr: TicketQr,
    /// Status URL template: `{booking}`, `{ticket}`, `{day}` and `{site}` are replaced.
    #[serde(default)]
    pub status_url: Option<Spanned<String>>,
    /// Fixed texts of the ticket.
    #[serde(default)]
    pub texts: TicketTexts,
}

impl Default for TicketConfig {
    fn default() -> Self {
        Self {
            languages: Spanned::new(0..0, default_languages_vec()),
            qr: TicketQr::default(),
            status_url: None,
            texts: TicketTexts::default(),
        }
    }
}

fn default_languages_vec() -> Vec<String> {
    vec!["de".to_string()]
}

fn default_languages() -> Spanned<Vec<String>> {
    Spanned::new(0..0, default_languages_vec())
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

/// Placeholders a status URL template may use.
pub const STATUS_URL_PLACEHOLDERS: [&str; 4] = ["{booking}", "{ticket}", "{day}", "{site}"];

fn validate_ticket(ticket: &TicketConfig, out: &mut Vec<Problem>) {
    let languages = ticket.languages.get_ref();
    let mut seen = HashSet::new();
    if languages.is_empty() || languages.len() > 2 {
        out.push((
            ticket.languages.span(),
            "ticket.languages needs one or two of \"de\" and \"en\"".to_string(),
        ));
    }
    for language in languages {
        if language != "de" && language != "en" {
            out.push((
                ticket.languages.span(),
                format!("ticket language '{language}' is not \"de\" or \"en\""),
            ));
        } else if !seen.insert(language) {
            out.push((
                ticket.languages.span(),
                format!("ticket language '{language}' given twice"),
            ));
        }
    }
    match (&ticket.qr, &ticket.status_url) {
        (TicketQr::StatusUrl, None) => out.push((
            0..0,
            "ticket.qr = \"status_url\" needs ticket.status_url".to_string(),
        )),
        (_, Some(url)) => {
            let template = url.get_ref();
            let mut rest = template.clone();
            for placeholder in STATUS_URL_PLACEHOLDERS {
                rest = rest.replace(placeholder, "");
            }
            if rest.contains('{') || rest.contains('}') {
                out.push((
                    url.span(),
                    format!(
                        "ticket.status_url may only use the placeholders {}",
                        STATUS_URL_PLACEHOLDERS.join(", ")
                    ),
                ));
            }
            if template.len() > 150 || template.chars().any(char::is_whitespace) {
                out.push((
                    url.span(),
                    "ticket.status_url must be at most 150 characters without spaces (it \
                     becomes a QR code)"
                        .to_string(),
                ));
            }
        }
        _ => {}
    }
}

fn validate_mqtt(mqtt: &MqttConfig, out: &mut Vec<Problem>) {
    let host = mqtt.host.get_ref();
    if host.trim().is_empty() || host.chars().any(char::is_whitespace) {
        out.push((
            mqtt.host.span(),
            format!("mqtt.host '{host}' is not a host name"),
        ));
    }
    check_range("mqtt.port", &mqtt.port, 1, 65_535, out);
    if let Some(id) = &mqtt.client_id {
        let id_ref = id.get_ref();
        if id_ref.is_empty() || id_ref.len() > 128 || id_ref.contains(['+', '#', '/']) {
            out.push((
                id.span(),
                format!("mqtt.client_id '{id_ref}' must be 1-128 characters without + # /"),
            ));
        }
    }
    if mqtt.password.is_some() && mqtt.username.is_none() {
        out.push((0..0, "mqtt.password needs mqtt.username".to_string()));
    }
    if let Some(tls) = &mqtt.tls {
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            out.push((
                0..0,
                "mqtt.tls.client_cert and mqtt.tls.client_key go together".to_string(),
            ));
        }
    }
    let root = mqtt.topic_root.get_ref();
    if root.is_empty()
        || root.starts_with('/')
        || root.ends_with('/')
        || root.contains(['+', '#'])
        || root.split('/').any(str::is_empty)
    {
        out.push((
            mqtt.topic_root.span(),
            format!(
                "mqtt.topic_root '{root}' must be topic levels separated by '/', without \
                 wildcards or empty levels"
            ),
        ));
    }
    check_range(
        "mqtt.keep_alive_seconds",
        &mqtt.keep_alive_seconds,
        5,
        3_600,
        out,
    );
    check_range(
        "mqtt.max_packet_bytes",
        &mqtt.max_packet_bytes,
        64 * 1024,
        256 * 1024 * 1024,
        out,
    );
    check_range(
        "mqtt.reconnect_min_ms",
        &mqtt.reconnect_min_ms,
        10,
        600_000,
        out,
    );
    check_range(
        "mqtt.reconnect_max_ms",
        &mqtt.reconnect_max_ms,
        10,
        3_600_000,
        out,
    );
    if mqtt.reconnect_max_ms.get_ref() < mqtt.reconnect_min_ms.get_ref() {
        out.push((
            mqtt.reconnect_max_ms.span(),
            "mqtt.reconnect_max_ms must not be below mqtt.reconnect_min_ms".to_string(),
        ));
    }
}

fn validate(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let site = &config.site;
    if !is_valid_id(site.id.get_ref()) {
        out.push((
            site.id.span(),
            format!(
                "site id '{}' must be 1-64 characters of a-z, 0-9, '-' or '_'",
                site.id.get_ref()
            ),
        ));
    }
    if jiff::tz::TimeZone::get(site.time_zone.get_ref()).is_err() {
        out.push((
            site.time_zone.span(),
            format!("unknown time zone '{}'", site.time_zone.get_ref()),
        ));
    }
    if site.data_dir.as_os_str().is_empty() {
        out.push((0..0, "site.data_dir must not be empty".to_string()));
    }

    if let Some(when) = &config.clock.synchronised_when {
        let text = when.get_ref();
        if text != "kernel" && !Path::new(text).is_absolute() {
            out.push((
                when.span(),
                format!(
                    "clock.synchronised_when '{text}' must be \"kernel\" or an absolute path \
                     (e.g. {})",
                    crate::clock::TIMESYNCD_FLAG_FILE
                ),
            ));
        }
    }

    let p = &config.policy;
    check_range(
        "checkin_early_minutes",
        &p.checkin_early_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range(
        "checkin_late_minutes",
        &p.checkin_late_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range(
        "appointment_due_before_minutes",
        &p.appointment_due_before_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range(
        "walk_in_max_wait_minutes",
        &p.walk_in_max_wait_minutes,
        1,
        24 * 60,
        &mut out,
    );
    check_range(
        "named_desk_grace_minutes",
        &p.named_desk_grace_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range(
        "no_show_requeue_delay_minutes",
        &p.no_show_requeue_delay_minutes,
        0,
        24 * 60,
        &mut out,
    );
    check_range("max_calls", &p.max_calls, 1, 10, &mut out);
    check_range(
        "print_answer_seconds",
        &config.plugins.print_answer_seconds,
        1,
        3_600,
        &mut out,
    );
    check_range(
        "repeat_next_within_seconds",
        &p.repeat_next_within_seconds,
        0,
        600,
        &mut out,
    );
    check_range(
        "clock_jump_seconds",
        &p.clock_jump_seconds,
        10,
        86_400,
        &mut out,
    );
    check_range(
        "personal_data_retention_days",
        &p.personal_data_retention_days,
        0,
        365,
        &mut out,
    );
    check_range("cache_mib", &config.store.cache_mib, 1, 1024, &mut out);
    check_range(
        "lock_wait_seconds",
        &config.store.lock_wait_seconds,
        0,
        600,
        &mut out,
    );

    validate_ticket(&config.ticket, &mut out);
    if let Some(mqtt) = &config.mqtt {
        validate_mqtt(mqtt, &mut out);
    }
    let mut key_ids = HashSet::new();
    for key in &config.tokens.keys {
        let id = *key.id.get_ref();
        if !(0..=255).contains(&id) {
            out.push((
                key.id.span(),
                format!("token key id {id} is out of range 0..=255"),
            ));
        } else if !key_ids.insert(id) {
            out.push((key.id.span(), format!("token key id {id} given twice")));
        }
        if let Err(e) = crate::token::KeyRing::new().insert_hex(0, key.public_key.get_ref()) {
            out.push((key.public_key.span(), format!("token key {id}: {e}")));
        }
    }

    if config.departments.is_empty() {
        out.push((0..0, "at least one [[department]] is needed".to_string()));
    }
    if config.services.is_empty() {
        out.push((0..0, "at least one [[service]] is needed".to_string()));
    }
    if config.desks.is_empty() {
        out.push((0..0, "at least one [[desk]] is needed".to_string()));
    }

    let mut department_ids = HashSet::new();
    for d in &config.departments {
        check_id("department", &d.id, &mut department_ids, &mut out);
    }

    let mut service_ids = HashSet::new();
    let mut service_department: HashMap<&str, &str> = HashMap::new();
    let mut prefixes: HashMap<String, String> = HashMap::new();
    for s in &config.services {
        check_id("service", &s.id, &mut service_ids, &mut out);
        service_department.insert(s.id.get_ref(), s.department.get_ref());
        if !department_ids.contains(s.department.get_ref()) {
            out.push((
                s.department.span(),
                format!(
                    "service '{}' names department '{}', which does not exist",
                    s.id.get_ref(),
                    s.department.get_ref()
                ),
            ));
        }
        let prefix = s.prefix.get_ref();
        if prefix.is_empty() || prefix.len() > 3 || !prefix.chars().all(|c| c.is_ascii_uppercase())
        {
            out.push((
                s.prefix.span(),
                format!("prefix '{prefix}' must be 1 to 3 capital letters A-Z"),
            ));
        } else if let Some(other) = prefixes.insert(prefix.clone(), s.id.get_ref().clone()) {
            out.push((
                s.prefix.span(),
                format!(
                    "duplicate prefix '{prefix}': services '{other}' and '{}' would issue the same numbers",
                    s.id.get_ref()
                ),
            ));
        }
        check_range("expected_minutes", &s.expected_minutes, 1, 480, &mut out);
    }

    let mut desk_ids = HashSet::new();
    let mut served: HashSet<&str> = HashSet::new();
    for d in &config.desks {
        check_id("desk", &d.id, &mut desk_ids, &mut out);
        if !department_ids.contains(d.department.get_ref()) {
            out.push((
                d.department.span(),
                format!(
                    "desk '{}' names department '{}', which does not exist",
                    d.id.get_ref(),
                    d.department.get_ref()
                ),
            ));
        }
        if d.services.is_empty() {
            out.push((
                d.id.span(),
                format!("desk '{}' serves no service", d.id.get_ref()),
            ));
        }
        for s in &d.services {
            match service_department.get(s.get_ref().as_str()) {
                None => out.push((
                    s.span(),
                    format!(
                        "desk '{}' serves service '{}', which does not exist",
                        d.id.get_ref(),
                        s.get_ref()
                    ),
                )),
                Some(dept) if *dept != d.department.get_ref() => out.push((
                    s.span(),
                    format!(
                        "desk '{}' of department '{}' serves service '{}' of department '{}'",
                        d.id.get_ref(),
                        d.department.get_ref(),
                        s.get_ref(),
                        dept
                    ),
                )),
                Some(_) => {
                    served.insert(s.get_ref());
                }
            }
        }
    }
    let mut device_ids = HashSet::new();
    for d in &config.devices {
        check_id("device", &d.id, &mut device_ids, &mut out);
        if !["scanner", "buttons", "printer", "display"].contains(&d.role.get_ref().as_str()) {
            out.push((
                d.role.span(),
                format!(
                    "device '{}' has role '{}'; roles are scanner, buttons, printer, display",
                    d.id.get_ref(),
                    d.role.get_ref()
                ),
            ));
        }
        if d.plugin.get_ref().trim().is_empty() {
            out.push((
                d.plugin.span(),
                format!("device '{}' names no plugin", d.id.get_ref()),
            ));
        }
        let role = d.role.get_ref().as_str();
        if let Some(terminal) = &d.terminal {
            if !["scanner", "printer"].contains(&role) {
                out.push((
                    terminal.span(),
                    format!(
                        "device '{}' is a {role}; only scanners and printers belong to a terminal",
                        d.id.get_ref()
                    ),
                ));
            } else if role == "scanner"
                && !config.devices.iter().any(|p| {
                    p.role.get_ref() == "printer"
                        && p.terminal.as_ref().map(|t| t.get_ref()) == Some(terminal.get_ref())
                })
            {
                out.push((
                    terminal.span(),
                    format!(
                        "scanner '{}' is at terminal '{}', but no printer is: its tickets could \
                         not be printed",
                        d.id.get_ref(),
                        terminal.get_ref()
                    ),
                ));
            }
        }
        for department in &d.departments {
            if role != "printer" {
                out.push((
                    department.span(),
                    format!(
                        "device '{}' is a {role}; only printers are bound to departments",
                        d.id.get_ref()
                    ),
                ));
            } else if !config
                .departments
                .iter()
                .any(|known| known.id.get_ref() == department.get_ref())
            {
                out.push((
                    department.span(),
                    format!(
                        "printer '{}' is bound to department '{}', which does not exist",
                        d.id.get_ref(),
                        department.get_ref()
                    ),
                ));
            }
        }
        for desk in &d.desks {
            if !desk_ids.contains(desk.get_ref()) {
                out.push((
                    desk.span(),
                    format!(
                        "device '{}' is bound to desk '{}', which does not exist",
                        d.id.get_ref(),
                        desk.get_ref()
                    ),
                ));
            }
        }
    }
    if let Some(web) = &config.web {
        out.extend(crate::web::validate_config(web, &desk_ids));
    }
    for s in &config.services {
        if !served.contains(s.id.get_ref().as_str()) && service_ids.contains(s.id.get_ref()) {
            out.push((
                s.id.span(),
                format!(
                    "no desk serves service '{}': its tickets could never be called",
                    s.id.get_ref()
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text, "test.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn demo_config_is_valid() {
        if let Err(e) = Config::demo() {
            panic!("demo config invalid:\n{e}");
        }
    }

    #[test]
    fn broken_toml_names_file_and_line() {
        let p = problems("[site]\nid = \"x\"\ntown = \n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("test.toml:3:"), "{p:?}");
    }

    #[test]
    fn a_sync_source_that_is_neither_kernel_nor_an_absolute_path_is_refused() {
        let with = |when: &str| {
            DEMO_CONFIG.replacen(
                "[clock]\nrequire_synchronised = false\n",
                &format!("[clock]\nrequire_synchronised = true\nsynchronised_when = \"{when}\"\n"),
                1,
            )
        };
        let p = problems(&with("run/flag"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("must be \"kernel\" or an absolute path"),
            "{p:?}"
        );
        assert_eq!(problems(&with("kernel")), Vec::<String>::new());
        let config = Config::parse(&with("/run/x/synchronized"), "test.toml");
        assert_eq!(
            config.ok().and_then(|c| c.clock.sync_source()),
            Some(crate::clock::SyncSource::FlagFile(
                "/run/x/synchronized".into()
            ))
        );
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let text = DEMO_CONFIG.replacen("[site]\n", "[site]\ncolour = \"blue\"\n", 1);
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("unknown field `colour`"), "{p:?}");
        let line = DEMO_CONFIG
            .lines()
            .position(|l| l == "[site]")
            .map(|i| i + 2)
            .unwrap_or(0);
        assert!(p[0].starts_with(&format!("test.toml:{line}:")), "{p:?}");
    }

    #[test]
    fn dangling_references_and_duplicates_are_all_reported_at_once() {
        let text = r#"
[site]
id = "x"
town = "T"
name = "N"
data_dir = "/tmp/x"

[[department]]
id = "d"
name = { de = "D", en = "D" }
waiting_area = { de = "W", en = "W" }

[[service]]
id = "a"
department = "d"
prefix = "A"
name = { de = "A", en = "A" }
expected_minutes = 5

[[service]]
id = "b"
department = "nowhere"
prefix = "A"
name = { de = "B", en = "B" }
expected_minutes = 0

[[desk]]
id = "1"
label = { de = "1", en = "1" }
department = "d"
services = ["a", "ghost"]
"#;
        let p = problems(text);
        let joined = p.join("\n");
        assert!(
            joined.contains("test.toml:22:14: service 'b' names department 'nowhere'"),
            "{joined}"
        );
        assert!(
            joined.contains("test.toml:23:10: duplicate prefix 'A'"),
            "{joined}"
        );
        assert!(
            joined.contains("expected_minutes = 0 is out of range"),
            "{joined}"
        );
        assert!(
            joined
                .contains("test.toml:31:18: desk '1' serves service 'ghost', which does not exist"),
            "{joined}"
        );
        assert!(joined.contains("no desk serves service 'b'"), "{joined}");
        assert_eq!(p.len(), 5, "{joined}");
    }
}
