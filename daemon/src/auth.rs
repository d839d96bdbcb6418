//! Logins for the clerk and admin pages: users from `[[web.user]]` with argon2id password
//! hashes (PHC strings, made by `leitsystemd hash-password`), sessions kept in memory behind a
//! random 256-bit cookie token with an idle timeout, and failed logins rate-limited per user
//! name and per client address.
//!
//! Unknown user names are verified against a dummy hash, so a login takes about as long
//! whether the name exists or not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};

/// Name of the session cookie.
pub const COOKIE: &str = "leitsystem_session";
/// Failed logins (per user name or per address) before the lock.
pub const MAX_FAILURES: u32 = 5;
/// How long a lock lasts.
pub const LOCK: Duration = Duration::from_secs(60);
/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most sessions at once (the oldest idle one goes first).
const MAX_SESSIONS: usize = 1000;
/// Most failure records kept (the table is pruned beyond).
const MAX_FAILURE_RECORDS: usize = 10_000;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, every desk.
    Admin,
    /// The desks listed for the user.
    Clerk,
}

impl Role {
    /// Parses `admin` or `clerk`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "clerk" => Some(Role::Clerk),
            _ => None,
        }
    }
}

/// A user as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Desks a clerk may act for.
    pub desks: Vec<String>,
    /// argon2id PHC string.
    pub password_hash: String,
}

impl User {
    /// Whether the user may act for `desk`.
    pub fn may_use_desk(&self, desk: &str) -> bool {
        self.role == Role::Admin || self.desks.iter().any(|d| d == desk)
    }
}

/// Hashes a password with argon2id (default parameters, random salt) as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `hash` is a PHC string of an argon2 hash this build can verify.
pub fn check_phc(hash: &str) -> Result<(), String> {
    let parsed = argon2::PasswordHash::new(hash).map_err(|e| e.to_string())?;
    argon2::Algorithm::new(parsed.algorithm.as_str()).map_err(|e| e.to_string())?;
    Ok(())
}

fn verify(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password.
    Invalid,
    /// Too many failures: try again after this long.
    Locked(Duration),
}

#[derive(Debug)]
struct Session {
    user: Arc<User>,
    last_seen: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Users, sessions and the failure counters.
#[derive(Debug)]
pub struct Auth {
    users: HashMap<String, Arc<User>>,
    idle: Duration,
    dummy_hash: String,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Failures>>,
}

impl Auth {
    /// Users from the (validated) config and the session idle timeout.
    pub fn new(users: Vec<User>, idle: Duration) -> Auth {
        let dummy_hash = hash_password("not a password of anybody").unwrap_or_default();
        Auth {
            users: users
                .into_iter()
                .map(|u| (u.name.clone(), Arc::new(u)))
                .collect(),
            idle,
            dummy_hash,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The session idle timeout.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    fn locked(&self, keys: &[String], now: Instant) -> Option<Duration> {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.iter()
            .filter_map(|k| failures.get(k))
            .filter_map(|f| f.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    fn record_failure(&self, keys: &[String], now: Instant) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if failures.len() > MAX_FAILURE_RECORDS {
            failures.retain(|_, f| now.duration_since(f.last) < FAILURE_WINDOW);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: None,
            });
            if now.duration_since(entry.last) >= FAILURE_WINDOW {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
            if entry.count >= MAX_FAILURES {
                entry.count = 0;
                entry.locked_until = Some(now + LOCK);
            }
        }
    }

    /// Checks name and password (slow: argon2; call it off the async threads). On success,
    /// returns a new session token and the user.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<(String, Arc<User>), LoginError> {
        let now = Instant::now();
        let mut keys = vec![format!("user:{name}")];
        if let Some(ip) = client {
            keys.push(format!("ip:{ip}"));
        }
        if let Some(wait) = self.locked(&keys, now) {
            return Err(LoginError::Locked(wait));
        }
        let user = self.users.get(name);
        let hash = user.map_or(self.dummy_hash.as_str(), |u| u.password_hash.as_str());
        let ok = verify(password, hash) && user.is_some();
        let Some(user) = user.filter(|_| ok) else {
            self.record_failure(&keys, now);
            return Err(LoginError::Invalid);
        };
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&keys[0]);
        let token = new_token();
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions.retain(|_, s| now.duration_since(s.last_seen) < self.idle);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            token.clone(),
            Session {
                user: user.clone(),
                last_seen: now,
            },
        );
        Ok((token, user.clone()))
    }

    /// The user of a live session (and the session's idle timer restarts).
    pub fn session(&self, token: &str) -> Option<Arc<User>> {
        let now = Instant::now();
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let session = sessions.get_mut(token)?;
        if now.duration_since(session.last_seen) >= self.idle {
            sessions.remove(token);
            return None;
        }
        session.last_seen = now;
        Some(session.user.clone())
    }

    /// Ends a session.
    pub fn logout(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(token);
    }
}

/// A random 256-bit token, hex.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session token from a `Cookie` header.
pub fn token_from_cookies(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let hash = hash_password("geheim").unwrap_or_default();
        Auth::new(
            vec![User {
                name: "platz1".into(),
                role: Role::Clerk,
                desks: vec!["1".into()],
                password_hash: hash,
            }],
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn login_session_logout() {
        let auth = auth();
        let Ok((token, user)) = auth.login("platz1", "geheim", None) else {
            panic!("login failed");
        };
        assert_eq!(token.len(), 64);
        assert!(user.may_use_desk("1") && !user.may_use_desk("2"));
        assert!(auth.session(&token).is_some());
        auth.logout(&token);
        assert!(auth.session(&token).is_none());
        assert_eq!(
            auth.login("nobody", "geheim", None),
            Err(LoginError::Invalid)
        );
    }

    #[test]
    fn repeated_failures_lock_the_name() {
        let auth = auth();
        for _ in 0..MAX_FAILURES {
            assert_eq!(auth.login("platz1", "x", None), Err(LoginError::Invalid));
        }
        assert!(matches!(
            auth.login("platz1", "geheim", None),
            Err(LoginError::Locked(_))
        ));
    }

    #[test]
    fn phc_strings_are_checked_and_cookies_parsed() {
        assert!(check_phc("nope").is_err());
        assert!(check_phc(&hash_password("x").unwrap_or_default()).is_ok());
        assert_eq!(
            token_from_cookies("a=b; leitsystem_session=abc"),
            Some("abc")
        );
        assert_eq!(token_from_cookies("a=b"), None);
    }
}
