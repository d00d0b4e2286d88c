//! Join tokens: `tokens/<service>` in the state directory, one per declared service.
//!
//! A token is 32 random bytes, hex, in a file of mode 0600 (directory 0700). Tokens are created
//! when a service is first declared, whole or not at all, and never overwritten, so an operator
//! can hand them out once; to rotate one, replace the file. They are read at each request, so a replaced file
//! takes effect at once.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::ca::{hex, random_bytes};

/// The tokens of one state directory.
#[derive(Clone, Debug)]
pub struct Tokens {
    dir: PathBuf,
}

/// A token file could not be created or read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct TokenError {
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    pub source: io::Error,
}

impl Tokens {
    /// Tokens under `state_dir/tokens` (created with mode 0700).
    pub fn open(state_dir: &Path) -> Result<Self, TokenError> {
        let dir = state_dir.join("tokens");
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| TokenError {
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(Self { dir })
    }

    /// The file of `service`'s token.
    pub fn path(&self, service: &str) -> PathBuf {
        self.dir.join(service)
    }

    /// Creates a token for each service that has none; returns the services that got one.
    pub fn ensure<'a>(
        &self,
        services: impl IntoIterator<Item = &'a String>,
    ) -> Result<Vec<String>, TokenError> {
        let mut created = Vec::new();
        for service in services {
            let path = self.path(service);
            // An empty file is what a crash while creating one left: it holds no token.
            let holds_token = std::fs::read_to_string(&path).is_ok_and(|t| !t.trim().is_empty());
            if holds_token {
                continue;
            }
            match self.create(&path) {
                Ok(()) => created.push(service.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(TokenError { path, source }),
            }
        }
        Ok(created)
    }

    /// Writes a new token to `path` whole or not at all: into a temporary file first (mode
    /// 0600), then linked into place, which fails rather than overwrite a token that appeared
    /// meanwhile. An empty file at `path` is replaced.
    fn create(&self, path: &Path) -> io::Result<()> {
        let token = hex(&random_bytes::<32>());
        let tmp = self.dir.join(format!(".new-{}", hex(&random_bytes::<8>())));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(format!("{token}\n").as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| {
                if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
                    std::fs::rename(&tmp, path)
                } else {
                    std::fs::hard_link(&tmp, path)
                }
            });
        let _ = std::fs::remove_file(&tmp);
        written
    }

    /// Whether `presented` is `service`'s token, compared in constant time.
    pub fn check(&self, service: &str, presented: &str) -> bool {
        let Ok(stored) = std::fs::read_to_string(self.path(service)) else {
            return false;
        };
        let stored = stored.trim();
        !stored.is_empty() && constant_time_eq(stored.as_bytes(), presented.trim().as_bytes())
    }
}

/// Under the state directory: the admin credential's directory.
const ADMIN_DIR: &str = "admin";
/// The admin token's name among the admin tokens.
pub(crate) const ADMIN_TOKEN_NAME: &str = "control-plane";

/// The admin token's file in `state_dir`: `admin/tokens/control-plane` (mode 0600).
pub fn admin_token_path(state_dir: &Path) -> PathBuf {
    state_dir
        .join(ADMIN_DIR)
        .join("tokens")
        .join(ADMIN_TOKEN_NAME)
}

/// The admin token, created on first start like a join token.
pub(crate) fn admin_tokens(state_dir: &Path) -> Result<Tokens, TokenError> {
    let tokens = Tokens::open(&state_dir.join(ADMIN_DIR))?;
    tokens.ensure([&ADMIN_TOKEN_NAME.to_owned()])?;
    Ok(tokens)
}

/// Compares the SHA-256 digests of both sides with a branch-free fold: the time taken does not
/// depend on where the inputs differ, nor (beyond hashing) on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use ring::digest::{SHA256, digest};
    let (a, b) = (digest(&SHA256, a), digest(&SHA256, b));
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        let services = vec!["orders".to_owned()];
        assert_eq!(tokens.ensure(&services).unwrap(), ["orders"]);
        let first = std::fs::read_to_string(tokens.path("orders")).unwrap();
        assert_eq!(first.trim().len(), 64);
        assert!(tokens.ensure(&services).unwrap().is_empty());
        assert_eq!(
            std::fs::read_to_string(tokens.path("orders")).unwrap(),
            first
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tokens.path("orders")), 0o600);
        assert_eq!(mode(&dir.path().join("tokens")), 0o700);
        assert!(tokens.check("orders", first.trim()));
        assert!(!tokens.check("orders", "nope"));
        assert!(!tokens.check("payments", first.trim()));
    }

    #[test]
    fn an_empty_token_file_left_by_a_crash_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        std::fs::write(tokens.path("orders"), "").unwrap();
        let services = vec!["orders".to_owned()];
        assert_eq!(tokens.ensure(&services).unwrap(), ["orders"]);
        let token = std::fs::read_to_string(tokens.path("orders")).unwrap();
        assert_eq!(token.trim().len(), 64);
        assert!(tokens.check("orders", token.trim()));
        // Only the token is left in the directory.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tokens"))
                .unwrap()
                .count(),
            1
        );
    }
}
