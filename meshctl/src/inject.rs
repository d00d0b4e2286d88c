//! `meshctl inject` and `meshctl uninject`: manifests in, manifests out, with the mesh's
//! sidecar added to (or removed from) every pod template. The rewriting is `mesh-inject`'s;
//! this module reads the input and checks the flags that become its [`Settings`].

use std::io::Read;
use std::path::{Path, PathBuf};

use mesh_inject::{InjectError, Injection, Settings};

/// The flags of `meshctl inject`, as given.
#[derive(Clone, Debug)]
pub struct InjectOptions {
    /// The mesh's `ca.pem`: the trust anchor injected sidecars verify the control plane by.
    pub trust_anchor: PathBuf,
    /// The trust domain of the mesh's identities.
    pub trust_domain: String,
    /// The sidecar image (default: this version's published image).
    pub proxy_image: Option<String>,
    /// `imagePullPolicy` of the mesh's containers.
    pub image_pull_policy: Option<String>,
    /// `HOST:PORT` of the control plane, as pods reach it.
    pub control_plane: Option<String>,
    /// The sidecar's UID.
    pub proxy_uid: Option<u32>,
    /// The sidecar's log filter for pods that do not set `mesh.local/log-level`.
    pub log_level: Option<String>,
}

/// Why `meshctl inject` or `uninject` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InjectCommandError {
    /// The input or the trust anchor could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file, or `-` for stdin.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The trust anchor file holds no certificate.
    #[error(
        "--trust-anchor {path}: no PEM certificate in it (give the mesh's ca.pem, which starts \
         with -----BEGIN CERTIFICATE-----)"
    )]
    NotACertificate {
        /// The file.
        path: PathBuf,
    },
    /// A flag's value cannot be used.
    #[error("--{flag} {value:?}: {problem}")]
    BadFlag {
        /// The flag, without its dashes.
        flag: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        problem: &'static str,
    },
    /// The input could not be injected.
    #[error(transparent)]
    Inject(#[from] InjectError),
}

/// The input: a file, or stdin for `None` and `-`.
pub fn read_input(file: Option<&Path>) -> Result<String, InjectCommandError> {
    match file {
        Some(path) if path != Path::new("-") => {
            std::fs::read_to_string(path).map_err(|source| InjectCommandError::Read {
                path: path.display().to_string(),
                source,
            })
        }
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| InjectCommandError::Read {
                    path: "-".to_owned(),
                    source,
                })?;
            Ok(text)
        }
    }
}

/// The settings the flags describe, each checked.
pub fn settings(options: &InjectOptions) -> Result<Settings, InjectCommandError> {
    let path = options.trust_anchor.display().to_string();
    let pem = std::fs::read_to_string(&options.trust_anchor)
        .map_err(|source| InjectCommandError::Read { path, source })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(InjectCommandError::NotACertificate {
            path: options.trust_anchor.clone(),
        });
    }
    check_token("trust-domain", &options.trust_domain)?;
    let mut settings = Settings::new(options.trust_domain.clone(), pem);
    if let Some(image) = &options.proxy_image {
        check_token("proxy-image", image)?;
        settings.proxy_image = image.clone();
    }
    settings.image_pull_policy = options.image_pull_policy.clone();
    if let Some(address) = &options.control_plane {
        check_host_port(address)?;
        settings.control_plane = address.clone();
    }
    if let Some(uid) = options.proxy_uid {
        settings.proxy_uid = uid;
    }
    if let Some(level) = &options.log_level {
        check_token("log-level", level)?;
        settings.log_level = level.clone();
    }
    Ok(settings)
}

/// `meshctl inject`: the injected stream and its report.
pub fn inject(
    options: &InjectOptions,
    file: Option<&Path>,
) -> Result<Injection, InjectCommandError> {
    let settings = settings(options)?;
    let input = read_input(file)?;
    Ok(mesh_inject::inject_yaml(&input, &settings)?)
}

/// `meshctl uninject`: the stream without the mesh's additions.
pub fn uninject(file: Option<&Path>) -> Result<String, InjectCommandError> {
    let input = read_input(file)?;
    Ok(mesh_inject::uninject_yaml(&input)?)
}

/// A value that must be one non-empty word.
fn check_token(flag: &'static str, value: &str) -> Result<(), InjectCommandError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InjectCommandError::BadFlag {
            flag,
            value: value.to_owned(),
            problem: "must be one word, without spaces",
        });
    }
    Ok(())
}

fn check_host_port(address: &str) -> Result<(), InjectCommandError> {
    check_token("control-plane", address)?;
    let port = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .filter(|port| *port != 0);
    if port.is_none() {
        return Err(InjectCommandError::BadFlag {
            flag: "control-plane",
            value: address.to_owned(),
            problem: "is not HOST:PORT (e.g. mesh-control-plane.mesh-system.svc:15010)",
        });
    }
    Ok(())
}
