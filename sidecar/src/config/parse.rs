//! The YAML text into the schema's types, reporting every unknown field rather than the first
//! (and then the first other structural error, a wrong type or a missing field): after each
//! unknown field, it is taken out of a generic copy of the document and the rest is read again.

use mesh_api::validate::ConfigError;

use super::schema::File;

/// Structural errors reported at most; past that, the file is probably not a bootstrap file.
const MAX_ERRORS: usize = 20;

/// Reads `text`; on failure every structural error, the first with line and column.
pub(super) fn file(text: &str) -> Result<File, Vec<ConfigError>> {
    let mut failed_at = None;
    let first = match serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            failed_at = Some(e.path().to_string());
            e.into_inner()
        })
    }) {
        Ok(file) => return Ok(file),
        Err(e) => e,
    };
    let mut errors = vec![ConfigError {
        path: failed_at.clone().filter(|p| p != ".").unwrap_or_default(),
        message: first.to_string(),
    }];
    // The rest: from a generic copy, each error's entry removed before reading again.
    let Ok(mut doc) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return Err(errors);
    };
    // Only past unknown fields: taking out a value of the wrong type would make its field
    // missing, an error the file does not have.
    let mut at = failed_at.filter(|_| first.to_string().contains("unknown field"));
    while errors.len() < MAX_ERRORS {
        let Some(path) = at.take().filter(|p| p != ".") else {
            break;
        };
        if !remove(&mut doc, &path) {
            break;
        }
        match serde_path_to_error::deserialize::<_, File>(&doc) {
            Ok(_) => break,
            Err(e) => {
                let path = e.path().to_string();
                let unknown = e.inner().to_string().contains("unknown field");
                errors.push(ConfigError {
                    path: if path == "." {
                        String::new()
                    } else {
                        path.clone()
                    },
                    message: e.into_inner().to_string(),
                });
                at = unknown.then_some(path);
            }
        }
    }
    Err(errors)
}

/// Removes the entry at `path` (`a.b[2].c`); false when there is none.
fn remove(doc: &mut serde_json::Value, path: &str) -> bool {
    let mut steps: Vec<Step<'_>> = Vec::new();
    for part in path.split('.') {
        let (key, indices) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        if !key.is_empty() {
            steps.push(Step::Key(key));
        }
        for index in indices.split('[').filter(|s| !s.is_empty()) {
            match index.trim_end_matches(']').parse() {
                Ok(i) => steps.push(Step::Index(i)),
                Err(_) => return false,
            }
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut node = doc;
    for step in parents {
        let next = match step {
            Step::Key(k) => node.get_mut(*k),
            Step::Index(i) => node.get_mut(*i),
        };
        let Some(next) = next else {
            return false;
        };
        node = next;
    }
    match (last, node) {
        (Step::Key(k), serde_json::Value::Object(map)) => map.remove(*k).is_some(),
        (Step::Index(i), serde_json::Value::Array(list)) if *i < list.len() => {
            list.remove(*i);
            true
        }
        _ => false,
    }
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_field_is_reported() {
        let errors = file(
            "service: orders\ntrust_domain: mesh.local\napp: 127.0.0.1:1\nbogus: 1\n\
             listen: { admin: 127.0.0.1:2, colour: red }\ntracing: { colour: blue }\n",
        )
        .err()
        .unwrap();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["bogus", "listen.colour", "tracing.colour"],
            "{errors:?}"
        );
        assert!(errors[0].message.contains("line 4"), "{errors:?}");
        assert!(
            errors[1].message.contains("unknown field `colour`"),
            "{errors:?}"
        );
        // A value of the wrong type is reported, and ends the search.
        let errors = file("service: orders\naccess_log: maybe\nbogus: 1\n")
            .err()
            .unwrap();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["access_log"], "{errors:?}");
    }

    #[test]
    fn entries_are_found_by_path() {
        let mut doc = serde_json::json!({"a": {"b": [1, {"c": 2, "d": 3}]}});
        assert!(remove(&mut doc, "a.b[1].c"));
        assert_eq!(doc, serde_json::json!({"a": {"b": [1, {"d": 3}]}}));
        assert!(!remove(&mut doc, "a.x"));
        assert!(remove(&mut doc, "a.b[0]"));
        assert_eq!(doc, serde_json::json!({"a": {"b": [{"d": 3}]}}));
    }
}
