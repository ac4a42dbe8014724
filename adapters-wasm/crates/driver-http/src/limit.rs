//! The request body limit: `options.max_body_bytes` of the baked config, or
//! `MSGPLUG_MAX_BODY_BYTES` at run time.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The limit when none is configured: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;

/// The part of the config JSON the driver reads (the backend reads the rest).
#[derive(Deserialize)]
struct Config {
    /// Backend and driver options, each a string.
    #[serde(default)]
    options: BTreeMap<String, String>,
}

/// Returns the body limit in bytes from the config JSON and the value of
/// `MSGPLUG_MAX_BODY_BYTES` (which wins unless empty), or why it cannot be read.
pub fn max_body_bytes(config: &str, env: Option<&str>) -> Result<u64, String> {
    if let Some(value) = env.map(str::trim).filter(|v| !v.is_empty()) {
        return bytes(value)
            .ok_or_else(|| format!("MSGPLUG_MAX_BODY_BYTES `{value}` is not a number of bytes"));
    }
    let config: Config =
        serde_json::from_str(config).map_err(|e| format!("invalid msgplug config: {e}"))?;
    match config.options.get("max_body_bytes") {
        None => Ok(DEFAULT_MAX_BODY_BYTES),
        Some(value) => bytes(value.trim()).ok_or_else(|| {
            format!("option max_body_bytes `{value}` is not a number of bytes; compose again with --option max_body_bytes=N")
        }),
    }
}

/// Parses a number of bytes: decimal digits only.
fn bytes(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_baked() {
        assert_eq!(max_body_bytes(r#"{"msgplug":1}"#, None), Ok(1 << 20));
        assert_eq!(
            max_body_bytes(r#"{"msgplug":1,"options":{"max_body_bytes":"10"}}"#, None),
            Ok(10)
        );
        assert_eq!(
            max_body_bytes(r#"{"msgplug":1,"options":{"qos":"1"}}"#, Some("  ")),
            Ok(1 << 20)
        );
    }

    #[test]
    fn environment_wins() {
        let baked = r#"{"msgplug":1,"options":{"max_body_bytes":"10"}}"#;
        assert_eq!(max_body_bytes(baked, Some("0")), Ok(0));
        assert_eq!(max_body_bytes(baked, Some(" 2048 ")), Ok(2048));
    }

    #[test]
    fn bad_values_say_where_they_came_from() {
        assert_eq!(
            max_body_bytes("{}", Some("+5")),
            Err("MSGPLUG_MAX_BODY_BYTES `+5` is not a number of bytes".into())
        );
        assert_eq!(
            max_body_bytes(r#"{"options":{"max_body_bytes":"1k"}}"#, None),
            Err("option max_body_bytes `1k` is not a number of bytes; compose again with --option max_body_bytes=N".into())
        );
        assert!(max_body_bytes(
            r#"{"options":{"max_body_bytes":"99999999999999999999"}}"#,
            None
        )
        .is_err());
        assert!(max_body_bytes("{", None)
            .unwrap_err()
            .starts_with("invalid msgplug config: "));
    }
}
