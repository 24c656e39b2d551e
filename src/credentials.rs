//! Provider and API secrets: where each is named ([`SecretRef`]: an
//! environment variable or a file, never the config file itself), the
//! loaded value ([`Secret`], which never prints), and loading by reference
//! at the moment of use, so a rotated credential is picked up without a
//! restart.
//!
//! Used by `channel` (provider tokens) and `api` (bearer token, webhook
//! secrets); `config` only names them. Knows no provider and no request;
//! never logs a value.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a secret comes from. Never the config file itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable's name (`token_env`).
    Env(String),
    /// A file (`token_file`); a relative path is a systemd credential name,
    /// resolved against `$CREDENTIALS_DIRECTORY`.
    File(PathBuf),
}

/// A secret loaded from the environment or a file: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests, or a secret obtained elsewhere).
    #[must_use]
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself: only for putting it on the wire.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where secrets are looked up: the process environment in the daemon, a
/// map in tests (setting environment variables in tests is racy).
pub trait Env: Send + Sync {
    /// The variable's value, if set and valid Unicode.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Env for [(&'static str, &'static str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// systemd's `LoadCredential=` puts credential files here.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Loads a secret by reference. A file is read at every send, so a rotated
/// credential is picked up without a restart; a trailing newline is dropped.
///
/// # Errors
/// What is missing, naming the variable or file but never a value.
pub fn load_secret(r: &SecretRef, env: &dyn Env) -> Result<Secret, String> {
    let value = match r {
        SecretRef::Env(name) => env
            .var(name)
            .ok_or_else(|| format!("environment variable {name} (token_env) is not set"))?,
        SecretRef::File(path) => {
            let full = secret_path(path, env)?;
            std::fs::read_to_string(&full)
                .map_err(|e| format!("token_file {}: {e}", full.display()))?
        }
    };
    let value = value.trim_end_matches(['\n', '\r']);
    if value.trim().is_empty() {
        return Err(match r {
            SecretRef::Env(name) => format!("environment variable {name} (token_env) is empty"),
            SecretRef::File(p) => format!("token_file {} is empty", p.display()),
        });
    }
    Ok(Secret(value.to_owned()))
}

/// A relative `token_file` is a systemd credential name, resolved against
/// `$CREDENTIALS_DIRECTORY`.
fn secret_path(path: &Path, env: &dyn Env) -> Result<PathBuf, String> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    match env.var(CREDENTIALS_DIRECTORY) {
        Some(dir) if !dir.is_empty() => Ok(Path::new(&dir).join(path)),
        _ => Err(format!(
            "token_file {} is relative but $CREDENTIALS_DIRECTORY is not set \
             (use systemd LoadCredential= or an absolute path)",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_by_reference() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wa-token"), "s3cret\n").unwrap();
        let creds = dir.path().to_str().unwrap().to_owned();
        let creds: &'static str = Box::leak(creds.into_boxed_str());
        let env = [("WA_TOKEN", "from-env"), (CREDENTIALS_DIRECTORY, creds)];
        let env_ref = SecretRef::Env("WA_TOKEN".into());
        assert_eq!(load_secret(&env_ref, &env).unwrap().expose(), "from-env");
        let rel = SecretRef::File("wa-token".into());
        assert_eq!(load_secret(&rel, &env).unwrap().expose(), "s3cret");
        let abs = SecretRef::File(dir.path().join("wa-token"));
        assert_eq!(load_secret(&abs, &[]).unwrap().expose(), "s3cret");
        assert_eq!(
            load_secret(&rel, &[]).unwrap_err(),
            "token_file wa-token is relative but $CREDENTIALS_DIRECTORY is not set \
             (use systemd LoadCredential= or an absolute path)"
        );
        assert_eq!(
            load_secret(&SecretRef::Env("NOPE".into()), &env).unwrap_err(),
            "environment variable NOPE (token_env) is not set"
        );
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "Secret(***)");
    }
}
