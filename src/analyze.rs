//! Reading a component's world: what it imports and exports, and what that means for msgplug.

use wasmparser::{
    CanonicalFunction, CanonicalOption, Encoding, Parser, Payload, Validator, WasmFeatures,
};

use crate::wit::{names, MESSAGING_VERSION};

/// The top-level imports and exports of a component, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Import names in declaration order, e.g. `wasi:messaging/producer@0.2.0-draft`.
    pub imports: Vec<String>,
    /// Export names in declaration order, e.g. `wasi:cli/run@0.2.0`.
    pub exports: Vec<String>,
    /// The payload of the `msgplug-config` custom section (a [`crate::config::Manifest`]),
    /// when the component was composed by msgplug.
    pub manifest: Option<Vec<u8>>,
    /// Whether the component, or any component nested in it, uses a canonical built-in
    /// beyond the synchronous ABI of WASI 0.2 (async lift/lower, tasks, streams, futures,
    /// threads): runtimes run those only from some release on, or behind a flag.
    pub uses_async_abi: bool,
}

/// The entry point a runtime calls, when a component exports one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// `wasi:cli/run`, called by `wasmtime run`.
    CliRun,
    /// `wasi:http/incoming-handler`, called by `wasmtime serve`.
    HttpHandler,
}

/// An error reading a component.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The bytes do not start with the WebAssembly magic number.
    #[error("not a WebAssembly file (it does not start with `\\0asm`)")]
    NotWasm,
    /// The file is a core module rather than a component.
    #[error(
        "this is a core WebAssembly module, not a component; build for `wasm32-wasip2` \
         or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    /// The bytes are a component but do not validate.
    #[error("invalid WebAssembly component")]
    Invalid(#[source] wasmparser::BinaryReaderError),
}

impl ComponentInfo {
    /// Whether the component imports the interface `name` (exact, versioned).
    pub fn imports(&self, name: &str) -> bool {
        self.imports.iter().any(|i| i == name)
    }

    /// Whether the component exports the interface `name` (exact, versioned).
    pub fn exports(&self, name: &str) -> bool {
        self.exports.iter().any(|e| e == name)
    }

    /// Whether the component exports `wasi:messaging/incoming-handler@0.2.0-draft`.
    pub fn exports_handler(&self) -> bool {
        self.exports(names::INCOMING_HANDLER)
    }

    /// The first `wasi:messaging` import or export whose version is not the one msgplug
    /// implements, if any.
    pub fn foreign_messaging_version(&self) -> Option<&str> {
        self.imports
            .iter()
            .chain(&self.exports)
            .filter(|n| is_messaging(n))
            .find(|n| version_of(n) != Some(MESSAGING_VERSION))
            .map(String::as_str)
    }

    /// Whether the component touches `wasi:messaging` at all (imports or exports it).
    pub fn uses_messaging(&self) -> bool {
        self.imports
            .iter()
            .chain(&self.exports)
            .any(|n| is_messaging(n))
    }

    /// The entry points it exports, with their exact export names.
    pub fn entry_points(&self) -> Vec<(EntryPoint, &str)> {
        self.exports
            .iter()
            .filter_map(|e| {
                if e.starts_with(names::CLI_RUN_PREFIX) {
                    Some((EntryPoint::CliRun, e.as_str()))
                } else if e.starts_with(names::HTTP_HANDLER_PREFIX) {
                    Some((EntryPoint::HttpHandler, e.as_str()))
                } else {
                    None
                }
            })
            .collect()
    }
}

#[cfg(test)]
impl ComponentInfo {
    /// A world with these import and export names, for unit tests.
    pub(crate) fn with_names(imports: &[&str], exports: &[&str]) -> ComponentInfo {
        ComponentInfo {
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: exports.iter().map(|s| s.to_string()).collect(),
            manifest: None,
            uses_async_abi: false,
        }
    }
}

/// Whether `name` is a `wasi:messaging` interface, of any version.
pub fn is_messaging(name: &str) -> bool {
    name.starts_with(names::MESSAGING_PREFIX)
}

/// The `@version` part of an interface name, if it has one.
pub fn version_of(name: &str) -> Option<&str> {
    name.rsplit_once('@').map(|(_, v)| v)
}

/// Validates `bytes` as a component and reads its top-level imports and exports.
pub fn analyze(bytes: &[u8]) -> Result<ComponentInfo, AnalyzeError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(AnalyzeError::NotWasm);
    }
    if Parser::is_core_wasm(bytes) {
        return Err(AnalyzeError::CoreModule);
    }
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .map_err(AnalyzeError::Invalid)?;
    read_world(bytes)
}

/// Reads the top-level imports and exports of a component that is already known to be
/// valid (an embedded adapter, or a composition `wac-graph` validated), without validating
/// it again: for an 18 MB app that second pass is most of a compose.
pub fn read_world(bytes: &[u8]) -> Result<ComponentInfo, AnalyzeError> {
    let mut info = ComponentInfo {
        imports: Vec::new(),
        exports: Vec::new(),
        manifest: None,
        uses_async_abi: false,
    };
    // Nested modules and components are reported inline; only depth 1 is the component itself.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(AnalyzeError::Invalid)? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(AnalyzeError::CoreModule);
                }
                depth += 1;
            }
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(AnalyzeError::Invalid)?;
                    info.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(AnalyzeError::Invalid)?;
                    info.exports.push(export.name.name.to_string());
                }
            }
            Payload::ComponentCanonicalSection(reader) if !info.uses_async_abi => {
                for function in reader {
                    let function = function.map_err(AnalyzeError::Invalid)?;
                    info.uses_async_abi |= beyond_sync_abi(&function);
                }
            }
            Payload::CustomSection(section)
                if depth == 1 && section.name() == crate::config_component::CUSTOM_SECTION =>
            {
                info.manifest = Some(section.data().to_vec());
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Whether a canonical function needs more than the synchronous canonical ABI of WASI 0.2.
fn beyond_sync_abi(function: &CanonicalFunction) -> bool {
    let async_option = |options: &[CanonicalOption]| {
        options
            .iter()
            .any(|o| matches!(o, CanonicalOption::Async | CanonicalOption::Callback(_)))
    };
    match function {
        CanonicalFunction::Lift { options, .. } | CanonicalFunction::Lower { options, .. } => {
            async_option(options)
        }
        CanonicalFunction::ResourceNew { .. }
        | CanonicalFunction::ResourceDrop { .. }
        | CanonicalFunction::ResourceRep { .. } => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_wasm_and_core_modules() {
        assert!(matches!(analyze(b"hello"), Err(AnalyzeError::NotWasm)));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(analyze(core), Err(AnalyzeError::CoreModule)));
        let truncated = b"\0asm\x0d\0\x01\0\x07";
        assert!(matches!(analyze(truncated), Err(AnalyzeError::Invalid(_))));
    }

    #[test]
    fn version_of_takes_the_part_after_the_last_at() {
        assert_eq!(
            version_of("wasi:messaging/types@0.2.0-draft"),
            Some("0.2.0-draft")
        );
        assert_eq!(version_of("plain"), None);
    }
}
