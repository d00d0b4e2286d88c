//! Logging refused callers: at most a few warnings a second ([`LogLimit`], shared with the
//! sidecar), and caller-chosen text escaped and cut before it reaches a log line.

pub(crate) use mesh_api::log_limit::LogLimit;

/// Longest caller-chosen text (a service name) put in a log line.
const MAX_LOGGED: usize = 64;

/// Caller-chosen text made safe for a log line: escaped (no control characters or newlines)
/// and cut to [`MAX_LOGGED`] characters.
pub(crate) fn escaped(text: &str) -> String {
    let cut: String = text.chars().take(MAX_LOGGED).collect();
    let mut out = cut.escape_debug().to_string();
    if cut.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_text_is_escaped_and_cut() {
        assert_eq!(escaped("orders"), "orders");
        assert_eq!(escaped("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(100);
        assert_eq!(escaped(&long), format!("{}…", "x".repeat(64)));
    }
}
