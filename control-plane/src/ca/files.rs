//! Reading and writing the CA's files in the state directory.

use std::fs;
use std::path::Path;

use super::error::CertError;
use super::x509::{hex, random_bytes};

/// A file's text, the error naming it.
pub(super) fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file, readable by its owner only when `private`. The file is a new one, created with
/// its final mode and renamed into place: a private key is never, even for a moment, in a file
/// others may read (as it would be if an existing file were truncated and then its mode set).
pub(super) fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    write_atomic(
        path,
        contents.as_bytes(),
        if private { 0o600 } else { 0o644 },
    )
}

/// Writes `path` so that readers see the old or the new contents, never a mix: a temporary file
/// in the same directory, created with `mode`, then renamed over.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", hex(&random_bytes::<4>())));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

/// Creates `dir` and its parents, readable by the owner only (it holds keys); an existing
/// directory is left as it is.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CertError::Io {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_private_file_is_written_as_a_new_private_file_not_over_an_open_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca-key.pem");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let before = fs::metadata(&path).unwrap().ino();
        write(&path, "-----BEGIN PRIVATE KEY-----\n", true).unwrap();
        let after = fs::metadata(&path).unwrap();
        // A new file, made 0600 before the key went in, renamed over the old one.
        assert_ne!(after.ino(), before);
        assert_eq!(after.permissions().mode() & 0o777, 0o600);
        assert_eq!(read(&path).unwrap(), "-----BEGIN PRIVATE KEY-----\n");
        // Nothing is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
