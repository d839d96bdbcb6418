//! Logins for the clerk and admin pages: users from `[[web.user]]` with argon2id password
//! hashes (PHC strings, made by `leitsystemd hash-password`), sessions kept in memory behind a
//! random 256-bit cookie token with an idle timeout, and failed logins rate-limited.
//!
//! A password check costs argon2's 19 MiB and tens of milliseconds, so checks run on a fixed
//! pool of [`VERIFIERS`] threads behind a queue of [`VERIFY_QUEUE`] waiting logins; a login that
//! finds the queue full is answered "busy" at once (429). Memory stays bounded however many
//! logins arrive.
//!
//! An attempt is counted *before* its password is checked, so parallel guesses cannot overtake
//! the lock: after [`MAX_FAILURES`] attempts that failed or are still being checked, the key is
//! locked for [`LOCK`]. The keys are the client address (any name) and the name *at* that
//! address: a lock made from one address never keeps the user out at another one.
//!
//! Unknown user names are verified against a dummy hash, so a login takes about as long
//! whether the name exists or not.
//!
//! Sessions survive a daemon restart (a watchdog restart or a power cut must not log out every
//! clerk mid-day): with a data directory they are kept in `sessions.json` there (mode 0600),
//! written on every login and logout, holding only SHA-256 digests of the tokens, the user
//! name, a digest of the user's password hash (a changed password ends the sessions) and the
//! last use. At start-up only sessions of users still configured, with the same password and
//! within the idle timeout, come back, with the rights the config gives the user now.
//!
//! Over 600 lines only with its unit tests (the code is about 500).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordVerifier};
use serde::{Deserialize, Serialize};

/// Name of the session cookie.
pub const COOKIE: &str = "leitsystem_session";
/// Failed logins (per address, and per name at an address) before the lock.
pub const MAX_FAILURES: u32 = 5;
/// Threads that check passwords (each needs argon2's 19 MiB while it checks).
pub const VERIFIERS: usize = 2;
/// Logins that may wait for a verifier; more are answered "busy".
pub const VERIFY_QUEUE: usize = 8;
/// How long a lock lasts.
pub const LOCK: Duration = Duration::from_secs(60);
/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most sessions at once (the oldest idle one goes first).
const MAX_SESSIONS: usize = 1000;
/// Most failure records kept (the table is pruned beyond).
const MAX_FAILURE_RECORDS: usize = 10_000;

pub use leitsystem_runtime::accounts::{Role, User, check_phc, hash_password};

fn verify(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// One password to check and where the answer goes.
struct VerifyJob {
    password: String,
    hash: String,
    answer: tokio::sync::oneshot::Sender<bool>,
}

/// The fixed pool of password-checking threads and its bounded queue.
#[derive(Debug)]
struct Verifier {
    jobs: std::sync::mpsc::SyncSender<VerifyJob>,
}

impl Verifier {
    /// Starts [`VERIFIERS`] threads; they end when the verifier is dropped.
    fn start() -> Verifier {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<VerifyJob>(VERIFY_QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..VERIFIERS {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("login-verify-{n}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                            queue.recv()
                        };
                        let Ok(job) = job else { break };
                        let ok = verify(&job.password, &job.hash);
                        let _ = job.answer.send(ok);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password verifier thread");
            }
        }
        Verifier { jobs }
    }

    /// Checks `password` against `hash`; `None` when the queue is full (or no verifier runs).
    async fn verify(&self, password: &str, hash: &str) -> Option<bool> {
        let (answer, result) = tokio::sync::oneshot::channel();
        let job = VerifyJob {
            password: password.to_string(),
            hash: hash.to_string(),
            answer,
        };
        self.jobs.try_send(job).ok()?;
        result.await.ok()
    }
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password.
    Invalid,
    /// Too many failures: try again after this long.
    Locked(Duration),
    /// Too many logins being checked at once: try again in a moment.
    Busy,
}

/// What one attempt added to the failure table (undone if the password was right).
#[derive(Debug)]
struct Attempt {
    keys: Vec<String>,
    /// Keys this attempt locked.
    locked: Vec<String>,
}

#[derive(Debug)]
struct Session {
    user: Arc<User>,
    last_seen: Instant,
}

/// One session as kept in `sessions.json`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    /// SHA-256 of the cookie token, hex.
    token_sha256: String,
    user: String,
    /// SHA-256 of the user's password hash when the session began, hex.
    password_sha256: String,
    /// Last use, Unix milliseconds.
    last_seen_ms: i64,
}

/// File name of the kept sessions in the data directory.
pub const SESSIONS_FILE: &str = "sessions.json";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
    /// Live sessions by the SHA-256 of their token.
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, Failures>>,
    verifier: Verifier,
    /// Where the sessions are kept across restarts (none: in memory only).
    sessions_file: Option<std::path::PathBuf>,
    /// Snapshots of the sessions taken, and the newest one written.
    save_generation: AtomicU64,
    saved_generation: Arc<Mutex<u64>>,
    /// Counts logouts, so open sockets learn at once that a session may have ended.
    logouts: tokio::sync::watch::Sender<u64>,
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
            verifier: Verifier::start(),
            logouts: tokio::sync::watch::Sender::new(0),
            sessions_file: None,
            save_generation: AtomicU64::new(0),
            saved_generation: Arc::new(Mutex::new(0)),
        }
    }

    /// Keeps the sessions in `dir/sessions.json` across restarts, taking back the ones kept
    /// there that are still valid. A missing or unreadable file starts with none (logged).
    pub fn keep_sessions_in(mut self, dir: &std::path::Path) -> Auth {
        let path = dir.join(SESSIONS_FILE);
        let kept: Vec<StoredSession> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "kept sessions unreadable; every user logs in again");
                Vec::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the kept sessions; every user logs in again");
                Vec::new()
            }
        };
        let (now, now_ms) = (Instant::now(), unix_ms());
        let idle_ms = i64::try_from(self.idle.as_millis()).unwrap_or(i64::MAX);
        let mut restored = 0;
        {
            let sessions = self.sessions.get_mut().unwrap_or_else(|p| p.into_inner());
            for stored in kept {
                let Some(user) = self.users.get(&stored.user) else {
                    continue;
                };
                let age = now_ms.saturating_sub(stored.last_seen_ms);
                if sha256_hex(&user.password_hash) != stored.password_sha256
                    || !(0..idle_ms).contains(&age)
                {
                    continue;
                }
                let age = Duration::from_millis(u64::try_from(age).unwrap_or(0));
                sessions.insert(
                    stored.token_sha256,
                    Session {
                        user: user.clone(),
                        last_seen: now.checked_sub(age).unwrap_or(now),
                    },
                );
                restored += 1;
            }
        }
        if restored > 0 {
            tracing::info!(sessions = restored, "logins kept across the restart");
        }
        self.sessions_file = Some(path);
        self
    }

    /// Writes the live sessions to the sessions file (temp file, fsync, rename) on a blocking
    /// thread; of two overlapping saves the later snapshot wins.
    async fn save_sessions(&self) {
        let Some(path) = self.sessions_file.clone() else {
            return;
        };
        let (now, now_ms) = (Instant::now(), unix_ms());
        let (generation, stored): (u64, Vec<StoredSession>) = {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let generation = self.save_generation.fetch_add(1, Ordering::Relaxed) + 1;
            let stored = sessions
                .iter()
                .filter(|(_, s)| now.duration_since(s.last_seen) < self.idle)
                .map(|(digest, s)| StoredSession {
                    token_sha256: digest.clone(),
                    user: s.user.name.clone(),
                    password_sha256: sha256_hex(&s.user.password_hash),
                    last_seen_ms: now_ms.saturating_sub(
                        i64::try_from(now.duration_since(s.last_seen).as_millis()).unwrap_or(0),
                    ),
                })
                .collect();
            (generation, stored)
        };
        let written = self.saved_generation.clone();
        let bytes = serde_json::to_vec(&stored).unwrap_or_default();
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut last = written.lock().unwrap_or_else(|p| p.into_inner());
            if *last >= generation {
                return Ok(());
            }
            let temp = path.with_extension("json.tmp");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            *last = generation;
            Ok(())
        })
        .await;
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %error, "cannot keep the sessions; a restart will log users out");
    }

    /// The session idle timeout.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Counts an attempt on every key, unless one of them is locked (then: how long).
    fn begin_attempt(&self, keys: Vec<String>, now: Instant) -> Result<Attempt, Duration> {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| failures.get(k))
            .filter_map(|f| f.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if failures.len() > MAX_FAILURE_RECORDS {
            failures.retain(|_, f| now.duration_since(f.last) < FAILURE_WINDOW);
        }
        let mut locked = Vec::new();
        for key in &keys {
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
                locked.push(key.clone());
            }
        }
        Ok(Attempt { keys, locked })
    }

    /// Takes back an attempt that was not a failure (right password, or never checked).
    fn undo_attempt(&self, attempt: &Attempt) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in &attempt.keys {
            if let Some(entry) = failures.get_mut(key) {
                if attempt.locked.contains(key) {
                    entry.locked_until = None;
                    entry.count = MAX_FAILURES - 1;
                } else {
                    entry.count = entry.count.saturating_sub(1);
                }
            }
        }
    }

    /// Checks name and password. On success, returns a new session token and the user.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<(String, Arc<User>), LoginError> {
        let now = Instant::now();
        let keys = match client {
            Some(ip) => vec![format!("ip:{ip}"), format!("user:{name}@{ip}")],
            None => vec![format!("user:{name}")],
        };
        let attempt = self.begin_attempt(keys, now).map_err(LoginError::Locked)?;
        let user = self.users.get(name);
        let hash = user.map_or(self.dummy_hash.as_str(), |u| u.password_hash.as_str());
        let Some(verified) = self.verifier.verify(password, hash).await else {
            self.undo_attempt(&attempt);
            return Err(LoginError::Busy);
        };
        let Some(user) = user.filter(|_| verified) else {
            return Err(LoginError::Invalid);
        };
        self.undo_attempt(&attempt);
        if let Some(name_at_address) = attempt.keys.get(1) {
            self.failures
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(name_at_address);
        }
        let token = new_token();
        self.insert_session(&token, user.clone(), now);
        self.save_sessions().await;
        Ok((token, user.clone()))
    }

    /// Adds a session (the oldest idle one goes when there are too many).
    fn insert_session(&self, token: &str, user: Arc<User>, now: Instant) {
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
            sha256_hex(token),
            Session {
                user,
                last_seen: now,
            },
        );
    }

    /// The user of a live session (and the session's idle timer restarts).
    pub fn session(&self, token: &str) -> Option<Arc<User>> {
        let now = Instant::now();
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let digest = sha256_hex(token);
        let session = sessions.get_mut(&digest)?;
        if now.duration_since(session.last_seen) >= self.idle {
            sessions.remove(&digest);
            return None;
        }
        session.last_seen = now;
        Some(session.user.clone())
    }

    /// Whether a session is live, without restarting its idle timer (for open sockets, which
    /// must not keep a session alive by themselves).
    pub fn is_live(&self, token: &str) -> bool {
        let now = Instant::now();
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&sha256_hex(token))
            .is_some_and(|s| now.duration_since(s.last_seen) < self.idle)
    }

    /// Ends a session (and tells the open sockets).
    pub async fn logout(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&sha256_hex(token));
        self.save_sessions().await;
        self.logouts.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes on every logout.
    pub fn logouts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.logouts.subscribe()
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
        auth_with(hash_password("geheim").unwrap_or_default())
    }

    fn auth_with(hash: String) -> Auth {
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

    #[tokio::test]
    async fn login_session_logout() {
        let auth = auth();
        let Ok((token, user)) = auth.login("platz1", "geheim", None).await else {
            panic!("login failed");
        };
        assert_eq!(token.len(), 64);
        assert!(user.may_use_desk("1") && !user.may_use_desk("2"));
        assert!(auth.session(&token).is_some() && auth.is_live(&token));
        auth.logout(&token).await;
        assert!(auth.session(&token).is_none() && !auth.is_live(&token));
        assert_eq!(
            auth.login("nobody", "geheim", None).await,
            Err(LoginError::Invalid)
        );
    }

    #[tokio::test]
    async fn sessions_survive_a_restart_but_not_a_logout_or_a_password_change() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hash = hash_password("geheim").unwrap_or_default();
        let first = auth_with(hash.clone()).keep_sessions_in(dir.path());
        let Ok((kept, _)) = first.login("platz1", "geheim", None).await else {
            panic!("login failed");
        };
        let Ok((ended, _)) = first.login("platz1", "geheim", None).await else {
            panic!("login failed");
        };
        first.logout(&ended).await;
        let file = std::fs::read_to_string(dir.path().join(SESSIONS_FILE)).unwrap_or_default();
        assert!(!file.contains(&kept), "a token in clear: {file}");
        drop(first);
        let second = auth_with(hash).keep_sessions_in(dir.path());
        assert!(second.session(&kept).is_some(), "the login did not survive");
        assert!(second.session(&ended).is_none(), "a logout came back");
        // A new password (another hash) for the same user: the kept session is gone.
        drop(second);
        let third = auth().keep_sessions_in(dir.path());
        assert!(third.session(&kept).is_none());
    }

    #[tokio::test]
    async fn repeated_failures_lock_the_name() {
        let auth = auth();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                auth.login("platz1", "x", None).await,
                Err(LoginError::Invalid)
            );
        }
        assert!(matches!(
            auth.login("platz1", "geheim", None).await,
            Err(LoginError::Locked(_))
        ));
    }

    #[tokio::test]
    async fn a_lock_made_at_one_address_does_not_keep_the_user_out_at_another() {
        let auth = auth();
        let (attacker, clerk) = (
            Some(IpAddr::from([10, 0, 0, 66])),
            Some(IpAddr::from([10, 0, 0, 1])),
        );
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                auth.login("platz1", "x", attacker).await,
                Err(LoginError::Invalid)
            );
        }
        assert!(matches!(
            auth.login("platz1", "geheim", attacker).await,
            Err(LoginError::Locked(_))
        ));
        assert!(matches!(
            auth.login("someone-else", "x", attacker).await,
            Err(LoginError::Locked(_))
        ));
        assert!(auth.login("platz1", "geheim", clerk).await.is_ok());
    }

    #[tokio::test]
    async fn a_right_password_does_not_reset_the_count_of_its_address() {
        let auth = auth();
        let ip = Some(IpAddr::from([10, 0, 0, 66]));
        for _ in 0..MAX_FAILURES - 1 {
            assert_eq!(auth.login("admin", "x", ip).await, Err(LoginError::Invalid));
        }
        assert!(auth.login("platz1", "geheim", ip).await.is_ok());
        assert_eq!(auth.login("admin", "x", ip).await, Err(LoginError::Invalid));
        assert!(matches!(
            auth.login("admin", "y", ip).await,
            Err(LoginError::Locked(_))
        ));
    }

    #[tokio::test]
    async fn parallel_guesses_are_counted_before_they_are_checked() {
        let auth = Arc::new(auth());
        let ip = Some(IpAddr::from([10, 0, 0, 66]));
        let guesses: Vec<_> = (0..40)
            .map(|n| {
                let auth = auth.clone();
                tokio::spawn(async move { auth.login("platz1", &format!("guess{n}"), ip).await })
            })
            .collect();
        let mut checked = 0;
        for guess in guesses {
            match guess.await {
                Ok(Err(LoginError::Invalid)) => checked += 1,
                Ok(Err(LoginError::Locked(_) | LoginError::Busy)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(checked, MAX_FAILURES);
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
