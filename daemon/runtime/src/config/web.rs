//! `[web]`: where the web server listens, the socket caps, the kiosk allow-list and who may
//! log in, and its checks.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

/// `[web]`: where the web server listens, and who may log in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address and port, e.g. `127.0.0.1:8080` (the demo) or `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// A session ends after this many minutes without a request.
    #[serde(default = "default_session_idle")]
    pub session_idle_minutes: Spanned<i64>,
    /// Walk-in tickets one client address may pull at the kiosk per minute.
    #[serde(default = "default_kiosk_rate")]
    pub kiosk_tickets_per_minute: Spanned<i64>,
    /// Open wall-display WebSockets at most (`/display/ws`, no login); more are refused (503).
    #[serde(default = "default_display_sockets")]
    pub max_display_sockets: Spanned<i64>,
    /// Open clerk-console WebSockets at most (`/api/v1/desks/{desk}/ws`).
    #[serde(default = "default_console_sockets")]
    pub max_console_sockets: Spanned<i64>,
    /// Open kiosk WebSockets at most (`/api/v1/kiosk/ws`).
    #[serde(default = "default_kiosk_sockets")]
    pub max_kiosk_sockets: Spanned<i64>,
    /// The only client addresses (or networks, `192.168.10.0/24`) that may use the kiosk API:
    /// pull tickets, list services, follow scans. Absent: any address.
    #[serde(default)]
    pub kiosk_clients: Option<Vec<Spanned<String>>>,
    /// `[[web.user]]`: the clerks and admins.
    #[serde(rename = "user", default)]
    pub users: Vec<WebUserConfig>,
}

fn default_display_sockets() -> Spanned<i64> {
    Spanned::new(0..0, 64)
}

fn default_console_sockets() -> Spanned<i64> {
    Spanned::new(0..0, 128)
}

fn default_kiosk_sockets() -> Spanned<i64> {
    Spanned::new(0..0, 16)
}

/// An address or a network (`10.1.2.3`, `10.1.2.0/24`, `fd00::/8`) a client must be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl AddressRange {
    /// Parses `ip` or `ip/prefix`.
    pub fn parse(text: &str) -> Result<AddressRange, String> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is no IP address or network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{text}': the prefix must be 0..={max}"))?,
            None => max,
        };
        Ok(AddressRange { network, prefix })
    }

    /// Whether `ip` is in the range (an IPv4 address mapped into IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (value, network, width) = match (ip, self.network) {
            (IpAddr::V4(ip), IpAddr::V4(net)) => {
                (u128::from(u32::from(ip)), u128::from(u32::from(net)), 32)
            }
            (IpAddr::V6(ip), IpAddr::V6(net)) => (u128::from(ip), u128::from(net), 128),
            _ => return false,
        };
        let host_bits = width - u32::from(self.prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            u128::MAX << host_bits
        };
        value & mask == network & mask
    }
}

fn default_session_idle() -> Spanned<i64> {
    Spanned::new(0..0, 12 * 60)
}

fn default_kiosk_rate() -> Spanned<i64> {
    Spanned::new(0..0, 10)
}

/// `[[web.user]]`: one login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebUserConfig {
    /// Login name.
    pub name: Spanned<String>,
    /// `admin` or `clerk`.
    pub role: Spanned<String>,
    /// The desks a clerk may act for.
    #[serde(default)]
    pub desks: Vec<Spanned<String>>,
    /// argon2id PHC string from `leitsystemd hash-password`.
    pub password_hash: Spanned<String>,
}

impl WebConfig {
    /// The users, from a validated config.
    pub fn users(&self) -> Vec<crate::accounts::User> {
        self.users
            .iter()
            .filter_map(|u| {
                Some(crate::accounts::User {
                    name: u.name.get_ref().clone(),
                    role: crate::accounts::Role::parse(u.role.get_ref())?,
                    desks: u.desks.iter().map(|d| d.get_ref().clone()).collect(),
                    password_hash: u.password_hash.get_ref().clone(),
                })
            })
            .collect()
    }

    /// The session idle timeout.
    pub fn session_idle(&self) -> Duration {
        Duration::from_secs(u64::try_from(*self.session_idle_minutes.get_ref()).unwrap_or(1) * 60)
    }

    /// The kiosk allow-list of a validated config (`None`: any address).
    pub fn kiosk_clients(&self) -> Option<Vec<AddressRange>> {
        self.kiosk_clients.as_ref().map(|list| {
            list.iter()
                .filter_map(|a| AddressRange::parse(a.get_ref()).ok())
                .collect()
        })
    }

    /// The socket caps of a validated config: display, console, kiosk.
    pub fn socket_caps(&self) -> SocketCaps {
        let cap = |v: &Spanned<i64>| usize::try_from(*v.get_ref()).unwrap_or(1);
        SocketCaps {
            display: cap(&self.max_display_sockets),
            console: cap(&self.max_console_sockets),
            kiosk: cap(&self.max_kiosk_sockets),
        }
    }
}

/// Most WebSockets open at once, per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketCaps {
    /// Wall displays.
    pub display: usize,
    /// Clerk consoles.
    pub console: usize,
    /// Kiosks.
    pub kiosk: usize,
}

impl Default for SocketCaps {
    fn default() -> Self {
        SocketCaps {
            display: 64,
            console: 128,
            kiosk: 16,
        }
    }
}

/// Semantic problems of `[web]` (span, message), for the config's list of problems.
pub fn validate_config(
    web: &WebConfig,
    desk_ids: &std::collections::HashSet<String>,
) -> Vec<(std::ops::Range<usize>, String)> {
    let mut out = Vec::new();
    let idle = *web.session_idle_minutes.get_ref();
    if !(1..=7 * 24 * 60).contains(&idle) {
        out.push((
            web.session_idle_minutes.span(),
            format!("session_idle_minutes = {idle} is out of range 1..=10080"),
        ));
    }
    let rate = *web.kiosk_tickets_per_minute.get_ref();
    if !(1..=1000).contains(&rate) {
        out.push((
            web.kiosk_tickets_per_minute.span(),
            format!("kiosk_tickets_per_minute = {rate} is out of range 1..=1000"),
        ));
    }
    for (value, key) in [
        (&web.max_display_sockets, "max_display_sockets"),
        (&web.max_console_sockets, "max_console_sockets"),
        (&web.max_kiosk_sockets, "max_kiosk_sockets"),
    ] {
        let n = *value.get_ref();
        if !(1..=10_000).contains(&n) {
            out.push((
                value.span(),
                format!("{key} = {n} is out of range 1..=10000"),
            ));
        }
    }
    for address in web.kiosk_clients.iter().flatten() {
        if let Err(e) = AddressRange::parse(address.get_ref()) {
            out.push((address.span(), format!("kiosk_clients: {e}")));
        }
    }
    let mut names = std::collections::HashSet::new();
    for user in &web.users {
        let name = user.name.get_ref();
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == ' ') {
            out.push((
                user.name.span(),
                format!("web user name '{name}' must be 1-64 characters without spaces"),
            ));
        } else if !names.insert(name.clone()) {
            out.push((user.name.span(), format!("duplicate web user '{name}'")));
        }
        let role = crate::accounts::Role::parse(user.role.get_ref());
        if role.is_none() {
            out.push((
                user.role.span(),
                format!(
                    "web user '{name}' has role '{}'; roles are admin, clerk",
                    user.role.get_ref()
                ),
            ));
        }
        if role == Some(crate::accounts::Role::Clerk) && user.desks.is_empty() {
            out.push((user.name.span(), format!("clerk '{name}' has no desks")));
        }
        for desk in &user.desks {
            if !desk_ids.contains(desk.get_ref()) {
                out.push((
                    desk.span(),
                    format!(
                        "web user '{name}' is given desk '{}', which does not exist",
                        desk.get_ref()
                    ),
                ));
            }
        }
        if let Err(e) = crate::accounts::check_phc(user.password_hash.get_ref()) {
            out.push((
                user.password_hash.span(),
                format!(
                    "web user '{name}': password_hash is no argon2 PHC string ({e}); \
                     make one with `leitsystemd hash-password`"
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_ranges_parse_and_match() {
        let range = |t: &str| AddressRange::parse(t).unwrap_or_else(|e| panic!("{e}"));
        let ip = |t: &str| t.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        let lan = range("192.168.10.0/24");
        assert!(lan.contains(ip("192.168.10.77")));
        assert!(!lan.contains(ip("192.168.11.77")));
        assert!(lan.contains(ip("::ffff:192.168.10.5")));
        assert!(!lan.contains(ip("fd00::1")));
        let one = range("127.0.0.1");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!(range("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(range("fd00::/8").contains(ip("fd12::1")));
        assert!(!range("fd00::/8").contains(ip("fe80::1")));
        assert!(range("::/0").contains(ip("fe80::1")));
        for bad in ["", "kiosk", "10.0.0.0/33", "fd00::/129", "10.0.0.1/x"] {
            assert!(AddressRange::parse(bad).is_err(), "{bad}");
        }
    }
}
