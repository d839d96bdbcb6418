//! `[mqtt]`: the booking sync's broker connection, and its checks.

use super::{Problem, check_range};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::path::PathBuf;

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

pub(crate) fn default_mqtt_port() -> Spanned<i64> {
    Spanned::new(0..0, 1883)
}

pub(crate) fn default_topic_root() -> Spanned<String> {
    Spanned::new(0..0, "leitsystem/v1".to_string())
}

pub(crate) fn default_keep_alive() -> Spanned<i64> {
    Spanned::new(0..0, 30)
}

pub(crate) fn default_max_packet() -> Spanned<i64> {
    Spanned::new(0..0, 16 * 1024 * 1024)
}

pub(crate) fn default_reconnect_min() -> Spanned<i64> {
    Spanned::new(0..0, 500)
}

pub(crate) fn default_reconnect_max() -> Spanned<i64> {
    Spanned::new(0..0, 30_000)
}

pub(crate) fn validate_mqtt(mqtt: &MqttConfig, out: &mut Vec<Problem>) {
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
