//! The control plane's configuration directory: `mesh.yaml` and `services/*.yaml`, with the
//! policy, route, authorization, fault and rate-limit files of `mesh-api` inside them.
//!
//! Input: the files' contents separated by NUL bytes, `mesh.yaml` first. Bad input is a list
//! of errors, each naming its file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_control_plane::config::{self, ConfigFiles, MESH_FILE, SERVICES_DIR};

fuzz_target!(|data: &[u8]| {
    let mut files = ConfigFiles::new();
    for (i, contents) in data.split(|&b| b == 0).enumerate() {
        let name = match i {
            0 => MESH_FILE.to_owned(),
            n => format!("{SERVICES_DIR}/s{n}.yaml"),
        };
        files.insert(name, contents.to_vec());
    }
    match config::parse(&files) {
        Ok(mesh) => {
            let _ = format!("{mesh:?}");
        }
        Err(invalid) => {
            assert!(!invalid.errors.is_empty(), "a rejection says why");
            let _ = invalid.to_string();
        }
    }
});
