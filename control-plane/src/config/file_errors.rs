//! The configuration's files as read, and the errors found in them: what both the services'
//! and the gateways' validation report through.

use std::collections::BTreeMap;

use mesh_api::validate::Errors;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One problem, at a file and a field path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileError {
    /// The file, relative to the configuration directory.
    pub file: String,
    /// Dotted field path; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The raw contents of a configuration directory, file by file: cheap to compare, so the
/// directory can be polled.
pub type ConfigFiles = BTreeMap<String, Vec<u8>>;

pub(super) fn yaml<T: DeserializeOwned>(
    file: &str,
    bytes: &[u8],
    errors: &mut Vec<FileError>,
) -> Option<T> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            errors.push(file_error(file, "", format!("not UTF-8: {e}")));
            return None;
        }
    };
    // serde_path_to_error records where a structural error (unknown field, wrong type, missing
    // field) happened; the YAML error itself carries line and column.
    let mut failed_at = None;
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            failed_at = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| {
        errors.push(file_error(
            file,
            &failed_at.filter(|p| p != ".").unwrap_or_default(),
            e.to_string(),
        ))
    })
    .ok()
}

pub(super) fn file_error(file: &str, path: &str, message: impl Into<String>) -> FileError {
    FileError {
        file: file.to_owned(),
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Moves errors collected for one file into the list, with the file's name.
pub(super) fn drain(file: &str, errors: Errors, into: &mut Vec<FileError>) {
    into.extend(
        errors
            .into_vec()
            .into_iter()
            .map(|e| file_error(file, &e.path, e.message)),
    );
}
