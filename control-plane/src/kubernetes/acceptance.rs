//! Which MeshService objects are in force. The files' rule (an invalid directory changes
//! nothing) would let one bad object freeze every other team's changes, so objects are judged
//! one by one: an object with errors is refused, its last accepted spec (or nothing, if it was
//! never accepted) stays in force, and the other objects' changes apply.
//!
//! Errors name a file and a field; a MeshService's file is `services/<name>.yaml`, so each
//! error, cross-object ones included (`calls` naming a missing service), belongs to the
//! object whose spec has it. Judging is a fixed point: validate everything; put each refused
//! object's last accepted spec in its place (or drop it); validate again, until what is left
//! is valid. An object refused again in its accepted form (say, it calls a service whose
//! object was deleted) is dropped. Errors outside the objects (`mesh.yaml`) refuse the whole
//! change, as in file mode.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{
    self, ConfigFiles, FileError, GATEWAYS_DIR, InvalidConfig, MeshConfig, SERVICES_DIR,
};

/// The control plane's verdict on one object's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The service file judged, so the verdict is written only on the spec it is about.
    pub(crate) file: Vec<u8>,
    /// Why the spec is refused, each `spec.<field>: <problem>`; empty when it is accepted.
    pub(crate) errors: Vec<String>,
    /// What is in force for the object instead of a refused spec.
    pub(crate) in_force: InForce,
}

/// What serves for an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InForce {
    /// Its spec, as judged.
    Spec,
    /// The spec it had when last accepted.
    LastAccepted,
    /// Nothing: the service is not in the mesh.
    Nothing,
}

impl Verdict {
    /// Whether the spec judged is in force.
    pub(crate) fn accepted(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The verdicts, by object name.
pub(crate) type Verdicts = BTreeMap<String, Verdict>;

/// Judges objects' specs, remembering each one's last accepted spec.
#[derive(Debug, Default)]
pub(crate) struct Acceptance {
    /// The last accepted service file of each object in force, by file name.
    accepted: BTreeMap<String, Vec<u8>>,
}

impl Acceptance {
    /// The configuration of `files` (`mesh.yaml` and the objects' service files) with every
    /// refused object replaced by its last accepted spec or left out, and each object's
    /// verdict; an error only when something outside the objects is invalid. The accepted
    /// specs are remembered once the caller puts the result in force ([`Self::commit`]).
    pub(crate) fn judge(
        &self,
        files: &ConfigFiles,
    ) -> Result<(MeshConfig, Verdicts, BTreeMap<String, Vec<u8>>), InvalidConfig> {
        let objects: BTreeSet<String> = files.keys().filter(|f| is_object(f)).cloned().collect();
        let mut candidate = files.clone();
        let mut refused: BTreeMap<String, Vec<FileError>> = BTreeMap::new();
        let mut fell_back: BTreeSet<String> = BTreeSet::new();
        // Each round puts back or drops at least one object, each object at most twice.
        for _ in 0..=2 * objects.len() {
            let invalid = match config::parse(&candidate) {
                Ok(config) => {
                    let in_force: BTreeMap<String, Vec<u8>> = candidate
                        .into_iter()
                        .filter(|(file, _)| is_object(file))
                        .collect();
                    let verdicts = objects
                        .iter()
                        .map(|file| verdict(file, files, &refused, &in_force))
                        .collect();
                    return Ok((config, verdicts, in_force));
                }
                Err(invalid) => invalid,
            };
            if invalid
                .errors
                .iter()
                .any(|e| !candidate_object(&candidate, e))
            {
                return Err(invalid);
            }
            let mut by_object: BTreeMap<String, Vec<FileError>> = BTreeMap::new();
            for error in invalid.errors {
                by_object.entry(error.file.clone()).or_default().push(error);
            }
            for (file, errors) in by_object {
                // The first errors found are the spec's own; later ones are its fallback's.
                refused.entry(file.clone()).or_insert(errors);
                match self.accepted.get(&file) {
                    Some(last)
                        if !fell_back.contains(&file) && candidate.get(&file) != Some(last) =>
                    {
                        candidate.insert(file.clone(), last.clone());
                        fell_back.insert(file);
                    }
                    _ => {
                        candidate.remove(&file);
                    }
                }
            }
        }
        Err(InvalidConfig {
            errors: refused.into_values().flatten().collect(),
        })
    }

    /// Remembers the objects' specs now in force as their last accepted ones.
    pub(crate) fn commit(&mut self, in_force: BTreeMap<String, Vec<u8>>) {
        self.accepted = in_force;
    }
}

/// Whether a configuration file is an object's: a MeshService's, or a Gateway's (with its
/// routes), judged the same way.
fn is_object(file: &str) -> bool {
    [SERVICES_DIR, GATEWAYS_DIR].iter().any(|dir| {
        file.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Whether an error belongs to an object still in the candidate configuration.
fn candidate_object(candidate: &ConfigFiles, error: &FileError) -> bool {
    is_object(&error.file) && candidate.contains_key(&error.file)
}

/// The object's name from its file's, `services/<name>.yaml` (a gateway file's verdict goes
/// by its file's name without `.yaml`, `gateways/<service>`).
pub(crate) fn object_name(file: &str) -> &str {
    let name = file
        .strip_prefix(SERVICES_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(file);
    name.strip_suffix(".yaml").unwrap_or(name)
}

fn verdict(
    file: &str,
    files: &ConfigFiles,
    refused: &BTreeMap<String, Vec<FileError>>,
    in_force: &BTreeMap<String, Vec<u8>>,
) -> (String, Verdict) {
    let spec = files.get(file).cloned().unwrap_or_default();
    let errors: Vec<String> = refused
        .get(file)
        .map(|errors| errors.iter().map(field_error).collect())
        .unwrap_or_default();
    let in_force = match in_force.get(file) {
        None => InForce::Nothing,
        Some(serving) if *serving == spec => InForce::Spec,
        Some(_) => InForce::LastAccepted,
    };
    (
        object_name(file).to_owned(),
        Verdict {
            file: spec,
            errors,
            in_force,
        },
    )
}

/// An error of a service file as the object's field: `timeout` is `spec.timeout`, and the
/// file's `name` is the object's `metadata.name`.
fn field_error(error: &FileError) -> String {
    let field = match error.path.as_str() {
        "" => "spec".to_owned(),
        "name" => "metadata.name".to_owned(),
        path if path.starts_with('[') => format!("spec{path}"),
        path => format!("spec.{path}"),
    };
    format!("{field}: {}", error.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "trust_domain: mesh.local\n";

    fn files(objects: &[(&str, &str)]) -> ConfigFiles {
        let mut files = ConfigFiles::new();
        files.insert(config::MESH_FILE.to_owned(), MESH.as_bytes().to_vec());
        for (name, spec) in objects {
            files.insert(
                format!("{SERVICES_DIR}/{name}.yaml"),
                format!("name: {name}\n{spec}").into_bytes(),
            );
        }
        files
    }

    fn timeout_ms(config: &MeshConfig, service: &str) -> Option<u128> {
        config.services[service]
            .policy
            .timeout
            .map(|t| t.as_millis())
    }

    #[test]
    fn an_invalid_object_keeps_its_last_accepted_spec_while_others_change() {
        let mut acceptance = Acceptance::default();
        let (_, verdicts, in_force) = acceptance
            .judge(&files(&[
                ("orders", "calls: [inventory]\n"),
                ("inventory", "timeout: 2s\n"),
            ]))
            .unwrap();
        assert!(verdicts.values().all(Verdict::accepted));
        acceptance.commit(in_force);

        let (config, verdicts, in_force) = acceptance
            .judge(&files(&[
                ("orders", "calls: [inventory]\ntimeout: 3s\n"),
                ("inventory", "timeout: banana\n"),
            ]))
            .unwrap();
        assert_eq!(timeout_ms(&config, "inventory"), Some(2000));
        assert_eq!(timeout_ms(&config, "orders"), Some(3000));
        let inventory = &verdicts["inventory"];
        assert_eq!(inventory.in_force, InForce::LastAccepted);
        assert_eq!(inventory.errors.len(), 1, "{:?}", inventory.errors);
        assert!(
            inventory.errors[0].starts_with("spec.timeout: "),
            "{:?}",
            inventory.errors
        );
        assert_eq!(verdicts["orders"].in_force, InForce::Spec);
        acceptance.commit(in_force);
    }

    #[test]
    fn a_cross_object_error_belongs_to_the_object_that_has_it() {
        let acceptance = Acceptance::default();
        let (config, verdicts, _) = acceptance
            .judge(&files(&[
                ("orders", "calls: [nowhere]\n"),
                ("inventory", ""),
            ]))
            .unwrap();
        assert!(
            !config.services.contains_key("orders"),
            "never accepted: not in force"
        );
        assert!(config.services.contains_key("inventory"));
        assert_eq!(verdicts["orders"].in_force, InForce::Nothing);
        assert!(
            verdicts["orders"].errors[0].starts_with("spec.calls[0]: "),
            "{:?}",
            verdicts["orders"].errors
        );
        assert!(verdicts["inventory"].accepted());
    }

    #[test]
    fn an_accepted_spec_refused_again_is_dropped() {
        let mut acceptance = Acceptance::default();
        let (_, _, in_force) = acceptance
            .judge(&files(&[
                ("orders", "calls: [inventory]\n"),
                ("inventory", ""),
            ]))
            .unwrap();
        acceptance.commit(in_force);
        let (config, verdicts, _) = acceptance
            .judge(&files(&[("orders", "calls: [inventory]\n")]))
            .unwrap();
        assert!(config.services.is_empty());
        assert_eq!(verdicts["orders"].in_force, InForce::Nothing);
        assert!(!verdicts["orders"].accepted());
    }

    #[test]
    fn a_mesh_file_error_refuses_the_whole_change() {
        let acceptance = Acceptance::default();
        let mut files = files(&[("orders", "")]);
        files.insert(
            config::MESH_FILE.to_owned(),
            b"trust_domain: 'no good'\n".to_vec(),
        );
        assert!(acceptance.judge(&files).is_err());
    }
}
