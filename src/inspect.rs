//! Describing a component for `msgplug inspect`: its role, messaging surface, host needs
//! and, for a composed artifact, the baked settings with secrets masked.

use serde::Serialize;

use crate::analyze::{analyze, is_messaging, AnalyzeError, ComponentInfo};
use crate::config::Manifest;
use crate::host::{self, Capability, RunHints};
use crate::wit::names;

/// What a component is, from msgplug's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Composed by msgplug: carries a `msgplug-config` section, no messaging imports left.
    Composed,
    /// A msgplug adapter (imports or exports `msgplug:adapter` interfaces).
    Adapter,
    /// An app that uses `wasi:messaging` and can be given to `msgplug compose`.
    App,
    /// A component that does not use `wasi:messaging`.
    Other,
}

/// The description `msgplug inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The role.
    pub role: Role,
    /// `wasi:messaging` imports.
    pub messaging_imports: Vec<String>,
    /// `wasi:messaging` exports.
    pub messaging_exports: Vec<String>,
    /// Entry-point exports (`wasi:cli/run`, `wasi:http/incoming-handler`).
    pub entry_points: Vec<String>,
    /// Host capabilities the imports call for.
    pub capabilities: Vec<Capability>,
    /// Every import.
    pub imports: Vec<String>,
    /// Every export.
    pub exports: Vec<String>,
    /// For composed artifacts: what it was composed from, settings included, secrets masked.
    pub manifest: Option<Manifest>,
    /// For composed artifacts and runnable components: the `wasmtime` command that runs it.
    pub run_command: Option<String>,
}

/// An error inspecting a component.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file is not a readable component.
    #[error(transparent)]
    Analyze(#[from] AnalyzeError),
    /// The `msgplug-config` section is not a manifest this version understands.
    #[error("the `msgplug-config` section is not a manifest this version of msgplug understands")]
    BadConfigSection(#[source] serde_json::Error),
}

/// Describes the component in `bytes`; `path` is used in the suggested command line.
pub fn inspect(bytes: &[u8], path: &str) -> Result<Inspection, InspectError> {
    let info = analyze(bytes)?;
    let manifest = match &info.manifest {
        Some(raw) => Some(
            serde_json::from_slice::<Manifest>(raw)
                .map_err(InspectError::BadConfigSection)?
                .redacted(),
        ),
        None => None,
    };
    let role = role_of(&info);
    let run_command = (!info.entry_points().is_empty()).then(|| match &manifest {
        Some(manifest) => crate::compose::run_command(&info, manifest, path),
        None => host::wasmtime_command(&info, path, RunHints::default()),
    });
    let messaging = |list: &[String]| -> Vec<String> {
        list.iter().filter(|n| is_messaging(n)).cloned().collect()
    };
    Ok(Inspection {
        role,
        messaging_imports: messaging(&info.imports),
        messaging_exports: messaging(&info.exports),
        entry_points: info
            .entry_points()
            .iter()
            .map(|(_, n)| n.to_string())
            .collect(),
        capabilities: host::capabilities(&info),
        manifest,
        run_command,
        imports: info.imports,
        exports: info.exports,
    })
}

fn role_of(info: &ComponentInfo) -> Role {
    let internal = |n: &String| n.starts_with(names::ADAPTER_PREFIX);
    if info.manifest.is_some() && !info.imports.iter().any(internal) {
        Role::Composed
    } else if info.imports.iter().chain(&info.exports).any(internal) {
        Role::Adapter
    } else if info.uses_messaging() {
        Role::App
    } else {
        Role::Other
    }
}
