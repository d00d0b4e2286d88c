//! The sidecar's bootstrap file, parsed and validated.
//!
//! Bad input is a list of errors, each naming its field; never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mesh_sidecar::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml(text, Path::new("/nonexistent")) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(invalid) => {
            assert!(!invalid.errors.is_empty(), "a rejection says why");
            let _ = invalid.to_string();
        }
    }
});
