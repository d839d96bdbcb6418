//! The web's user accounts as the config describes them: roles, users and their argon2id
//! password hashes (PHC strings). Sessions and logins are the web edge's (`auth`).

use argon2::{Argon2, PasswordHasher};
use serde::{Deserialize, Serialize};

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
