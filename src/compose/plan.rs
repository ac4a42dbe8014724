//! The pure wiring plan: which instance feeds which import, decided by name from the
//! components' own worlds, with no wac-graph involved (encoding is in [`super::encode`]).

use crate::analyze::{ComponentInfo, EntryPoint};
use crate::wit::names;

/// One component instance in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedInstance {
    /// Its variable name in WAC (`config`, `backend`, `app`, `driver`).
    pub name: &'static str,
    /// Its package name in the graph and in WAC (e.g. `msgplug:backend-local`).
    pub package: String,
    /// Each wired import and the earlier instance's export that satisfies it.
    pub arguments: Vec<Argument>,
    /// Whether some imports are left for the host to provide.
    pub imports_from_host: bool,
}

/// One wired import of a [`PlannedInstance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argument {
    /// The import's name.
    pub import: String,
    /// The index of the earlier instance that provides it.
    pub provider: usize,
    /// The provider's export that is passed: the import's own name, except for the run
    /// wrapper's [`names::APP_RUN`], which takes the app's `wasi:cli/run` export.
    pub export: String,
}

impl Argument {
    /// An import satisfied by the export of the same name of instance `provider`.
    pub fn same_name(import: &str, provider: usize) -> Argument {
        Argument {
            import: import.to_string(),
            provider,
            export: import.to_string(),
        }
    }
}

/// The export of `part` that satisfies an import called `import`, if it has one.
fn export_for(part: &Part<'_>, import: &str) -> Option<String> {
    if import == names::APP_RUN {
        return part
            .info
            .entry_points()
            .into_iter()
            .find(|(entry, _)| *entry == EntryPoint::CliRun)
            .map(|(_, name)| name.to_string());
    }
    part.info.exports(import).then(|| import.to_string())
}

/// Which instances a composition holds, how they are wired, and what it exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The instances, in instantiation order.
    pub instances: Vec<PlannedInstance>,
    /// The output's exports: (instance index, export name).
    pub exports: Vec<(usize, String)>,
}

/// One part to place in a [`Plan`].
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// Variable name.
    pub name: &'static str,
    /// Package name.
    pub package: &'a str,
    /// Its world.
    pub info: &'a ComponentInfo,
}

/// An error wiring the parts of a composition ([`Plan::wire`]).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// An internal import has no provider (an adapter and the app do not fit together).
    #[error("`{instance}` imports `{import}`, but no part of the composition exports it")]
    UnsatisfiedImport {
        /// The instance whose import is open.
        instance: String,
        /// The import name.
        import: String,
    },
}

/// Whether `name` is an interface msgplug wires inside the composition (`wasi:messaging/*`
/// and `msgplug:adapter/*`) rather than one left for the host.
pub(crate) fn is_internal(name: &str) -> bool {
    crate::analyze::is_messaging(name) || name.starts_with(names::ADAPTER_PREFIX)
}

impl Plan {
    /// Wires `parts` in order; `exports` names (part index, export name) pairs to re-export.
    pub fn wire(parts: &[Part<'_>], exports: Vec<(usize, String)>) -> Result<Plan, WireError> {
        let mut instances = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let mut arguments = Vec::new();
            let mut imports_from_host = false;
            for import in &part.info.imports {
                if !is_internal(import) {
                    imports_from_host = true;
                    continue;
                }
                let (provider, export) = parts[..index]
                    .iter()
                    .enumerate()
                    .find_map(|(i, p)| export_for(p, import).map(|export| (i, export)))
                    .ok_or_else(|| WireError::UnsatisfiedImport {
                        instance: part.name.to_string(),
                        import: import.clone(),
                    })?;
                arguments.push(Argument {
                    import: import.clone(),
                    provider,
                    export,
                });
            }
            instances.push(PlannedInstance {
                name: part.name,
                package: part.package.to_string(),
                arguments,
                imports_from_host,
            });
        }
        Ok(Plan { instances, exports })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(imports: &[&str], exports: &[&str]) -> ComponentInfo {
        ComponentInfo::with_names(imports, exports)
    }

    #[test]
    fn every_consumer_of_types_is_wired_to_the_backend() {
        let config = info(&[], &[names::CONFIG]);
        let backend = info(
            &[names::CONFIG, "wasi:cli/stdin@0.2.6"],
            &[names::TYPES, names::PRODUCER, names::REQUEST_REPLY],
        );
        let app = info(&[names::TYPES, names::PRODUCER], &[names::INCOMING_HANDLER]);
        let driver = info(
            &[names::TYPES, names::INCOMING_HANDLER],
            &["wasi:cli/run@0.2.0"],
        );
        let parts = [
            Part {
                name: "config",
                package: "msgplug:config",
                info: &config,
            },
            Part {
                name: "backend",
                package: "msgplug:backend-local",
                info: &backend,
            },
            Part {
                name: "app",
                package: "user:app",
                info: &app,
            },
            Part {
                name: "driver",
                package: "msgplug:driver-run",
                info: &driver,
            },
        ];
        let plan = Plan::wire(&parts, vec![(3, "wasi:cli/run@0.2.0".into())]).unwrap();
        let args = |i: usize| plan.instances[i].arguments.clone();
        assert_eq!(args(1), vec![Argument::same_name(names::CONFIG, 0)]);
        assert_eq!(
            args(2),
            vec![
                Argument::same_name(names::TYPES, 1),
                Argument::same_name(names::PRODUCER, 1)
            ]
        );
        assert_eq!(
            args(3),
            vec![
                Argument::same_name(names::TYPES, 1),
                Argument::same_name(names::INCOMING_HANDLER, 2)
            ]
        );
        assert!(plan.instances[1].imports_from_host);
        assert!(!plan.instances[2].imports_from_host);
    }

    #[test]
    fn the_wrapper_takes_the_apps_own_run_of_any_version() {
        let app = info(&[], &["wasi:cli/run@0.2.6"]);
        let wrapper = info(&[names::APP_RUN], &["wasi:cli/run@0.2.0"]);
        let parts = [
            Part {
                name: "app",
                package: "user:app",
                info: &app,
            },
            Part {
                name: "driver",
                package: "msgplug:driver-wrap",
                info: &wrapper,
            },
        ];
        let plan = Plan::wire(&parts, vec![(1, "wasi:cli/run@0.2.0".into())]).unwrap();
        assert_eq!(
            plan.instances[1].arguments,
            vec![Argument {
                import: names::APP_RUN.to_string(),
                provider: 0,
                export: "wasi:cli/run@0.2.6".to_string(),
            }]
        );
    }

    #[test]
    fn an_internal_import_nobody_exports_is_an_error() {
        let app = info(&["wasi:messaging/producer@0.2.0-draft"], &[]);
        let parts = [Part {
            name: "app",
            package: "user:app",
            info: &app,
        }];
        let err = Plan::wire(&parts, vec![]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`app` imports `wasi:messaging/producer@0.2.0-draft`, but no part of the composition exports it"
        );
    }
}
