//! The prebuilt adapter components embedded in msgplug (built from `adapters-wasm/crates/`).
//!
//! The set is closed: a backend is chosen by the broker URL's scheme, a driver by the trigger.

/// What part an adapter plays in a composed artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterKind {
    /// Exports `wasi:messaging` and the `msgplug:adapter` backend interfaces.
    Backend,
    /// The trigger loop that calls the app's `incoming-handler`.
    Driver,
}

/// One embedded adapter component.
#[derive(Debug, serde::Serialize)]
pub struct Adapter {
    /// Kebab-case name; also the file name in `adapters-wasm/` without `.wasm`.
    pub name: &'static str,
    /// Backend or driver.
    pub kind: AdapterKind,
    /// For backends, the broker URL schemes that select it.
    pub schemes: &'static [&'static str],
    /// One line on what it does.
    pub summary: &'static str,
    /// What it needs from the host, as `wasmtime` flags or a plain note.
    pub host_needs: &'static str,
    /// Whether it reads messages (or replies to requests) from standard input.
    pub uses_stdin: bool,
    /// The component itself.
    #[serde(skip)]
    pub bytes: &'static [u8],
}

/// Every embedded adapter.
pub const ADAPTERS: &[Adapter] = &[
    Adapter {
        name: "backend-local",
        kind: AdapterKind::Backend,
        schemes: &["local"],
        summary: "embedded broker: NDJSON messages in on stdin, out on stdout",
        host_needs: "stdin and stdout only (no network)",
        uses_stdin: true,
        bytes: include_bytes!("../adapters-wasm/backend-local.wasm"),
    },
    Adapter {
        name: "driver-run",
        kind: AdapterKind::Driver,
        schemes: &[],
        summary:
            "`run` trigger: pull each delivery, call the app's handler, ack on Ok, nack on Err",
        host_needs: "`wasmtime run` (exports wasi:cli/run)",
        uses_stdin: false,
        bytes: include_bytes!("../adapters-wasm/driver-run.wasm"),
    },
];

/// Broker URL schemes that are planned but have no adapter yet.
pub const PLANNED_SCHEMES: &[&str] = &[
    "nats",
    "mqtt",
    "amqp",
    "kafka",
    "sqs",
    "servicebus",
    "redis",
    "http",
    "https",
];

/// An error finding an adapter.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// No backend handles this broker URL scheme, and none is planned.
    #[error("unknown broker scheme `{scheme}`; supported: {}", supported_schemes())]
    UnknownScheme {
        /// The scheme as given.
        scheme: String,
    },
    /// The scheme is known but its backend is not built yet.
    #[error(
        "the `{scheme}` backend is not available in this version of msgplug; supported: {}",
        supported_schemes()
    )]
    SchemeNotYetSupported {
        /// The scheme as given.
        scheme: String,
    },
    /// No adapter has this name.
    #[error("no adapter named `{name}`; the adapters are: {}", all_names())]
    UnknownName {
        /// The name as given.
        name: String,
    },
}

fn supported_schemes() -> String {
    backends()
        .flat_map(|a| a.schemes.iter())
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn all_names() -> String {
    ADAPTERS
        .iter()
        .map(|a| format!("`{}`", a.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn backends() -> impl Iterator<Item = &'static Adapter> {
    ADAPTERS.iter().filter(|a| a.kind == AdapterKind::Backend)
}

/// The backend for a broker URL scheme.
pub fn backend_for_scheme(scheme: &str) -> Result<&'static Adapter, AdapterError> {
    if let Some(adapter) = backends().find(|a| a.schemes.contains(&scheme)) {
        return Ok(adapter);
    }
    let scheme = scheme.to_string();
    if PLANNED_SCHEMES.contains(&scheme.as_str()) {
        Err(AdapterError::SchemeNotYetSupported { scheme })
    } else {
        Err(AdapterError::UnknownScheme { scheme })
    }
}

/// The adapter called `name`.
pub fn by_name(name: &str) -> Result<&'static Adapter, AdapterError> {
    ADAPTERS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| AdapterError::UnknownName {
            name: name.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::names;

    #[test]
    fn every_adapter_is_a_component_that_exports_what_its_kind_promises() {
        let wit = crate::wit::bundled();
        let backend_world = wit
            .resolve
            .select_world(&[wit.adapter], Some("backend"))
            .expect("world exists");
        for adapter in ADAPTERS {
            let info = crate::analyze::analyze(adapter.bytes)
                .unwrap_or_else(|e| panic!("{} does not decode: {e}", adapter.name));
            match adapter.kind {
                AdapterKind::Backend => {
                    for key in wit.resolve.worlds[backend_world].exports.keys() {
                        let name = wit.resolve.name_world_key(key);
                        assert!(info.exports(&name), "{} lacks export {name}", adapter.name);
                    }
                    assert!(
                        info.imports(names::CONFIG),
                        "{} must import config",
                        adapter.name
                    );
                }
                AdapterKind::Driver => {
                    assert!(info.imports(names::INCOMING_HANDLER), "{}", adapter.name);
                    assert!(
                        !info.entry_points().is_empty(),
                        "{} exports no entry point",
                        adapter.name
                    );
                }
            }
            for import in &info.imports {
                assert!(
                    import.starts_with("wasi:") || import.starts_with(names::ADAPTER_PREFIX),
                    "{} imports non-standard `{import}`",
                    adapter.name
                );
            }
        }
    }

    #[test]
    fn schemes_resolve_or_explain() {
        assert_eq!(backend_for_scheme("local").unwrap().name, "backend-local");
        let err = backend_for_scheme("nats").unwrap_err().to_string();
        assert!(err.contains("not available in this version"), "{err}");
        let err = backend_for_scheme("gopher").unwrap_err().to_string();
        assert!(err.contains("unknown broker scheme `gopher`"), "{err}");
        assert!(by_name("nope")
            .unwrap_err()
            .to_string()
            .contains("`driver-run`"));
    }
}
