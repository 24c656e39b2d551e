//! The installation secret: 32 random bytes that key the hashes of
//! customers' device identifiers. Created once, mode 0600, never logged.
//!
//! Losing it makes every stored identity unrecognisable (customers must be
//! re-imported); leaking it lets someone test guesses against the hashes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{Error, Result};

/// Reads the secret at `path`, creating it (and its directory) on first run.
///
/// # Errors
/// [`Error::Secret`] when the file cannot be read or created, has the wrong
/// size, or is readable by group or others.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32]> {
    let fail = |reason: String| Error::Secret {
        path: path.to_owned(),
        reason,
    };
    match File::open(path) {
        Ok(mut f) => {
            let mode = f
                .metadata()
                .map_err(|e| fail(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "readable by others (mode {:o}); run `chmod 600 {}`",
                    mode & 0o777,
                    path.display()
                )));
            }
            let mut buf = Vec::with_capacity(33);
            Read::by_ref(&mut f)
                .take(33)
                .read_to_end(&mut buf)
                .map_err(|e| fail(e.to_string()))?;
            <[u8; 32]>::try_from(buf.as_slice()).map_err(|_| {
                fail(format!(
                    "expected 32 bytes, found {}; restore it from backup",
                    buf.len()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
            }
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| fail(format!("no randomness: {e}")))?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail(e.to_string()))?;
            f.write_all(&secret)
                .and_then(|()| f.sync_all())
                .map_err(|e| fail(e.to_string()))?;
            tracing::info!(path = %path.display(), "created installation secret");
            Ok(secret)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/secret.key");
        let a = load_or_create_secret(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_secret(&path).unwrap(), a);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn refuses_a_world_readable_or_truncated_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        std::fs::write(&path, [1u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_secret(&path).unwrap_err().to_string();
        assert!(e.contains("readable by others (mode 644)"), "{e}");
        std::fs::write(&path, [1u8; 31]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_or_create_secret(&path).unwrap_err().to_string();
        assert!(e.contains("expected 32 bytes, found 31"), "{e}");
    }
}
