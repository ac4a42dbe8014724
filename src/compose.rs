//! Composing an app with a backend, a driver and the generated config into one component.
//!
//! Composition happens in two steps. [`Plan`] decides which instance feeds which import,
//! by name, from the components' own worlds: every `wasi:messaging/*` and `msgplug:*`
//! import is satisfied by the first earlier instance that exports it, and every other
//! import is left for the host. Because the backend is the only exporter of
//! `wasi:messaging/types`, the app and the driver are wired to **one** instance of it, so a
//! `message` the backend makes is the same resource type everywhere. The plan is then
//! encoded with `wac-graph` (and can be printed as WAC, see [`crate::wac_text`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeError, EncodeOptions, NodeId, Processor};

use crate::adapters::{self, Adapter, Subscriptions};
use crate::analyze::{analyze, read_world, AnalyzeError, ComponentInfo};
use crate::config::{self, Manifest, Settings, SettingsError};
use crate::config_component::{self, ConfigComponentError};
use crate::host::{self, RunHints};
use crate::wit::{names, MESSAGING_VERSION};

/// How the composed component is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Pick from the app's exports: `run` for a handler, `none` for an app with its own entry point.
    Auto,
    /// Add the `run` driver: `wasmtime run` pulls deliveries and calls the app's handler.
    Run,
    /// Add the `http` driver: `wasmtime serve` turns each request into a message.
    Http,
    /// Add no driver: the output exports the app's own entry point.
    None,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Auto => "auto",
            Trigger::Run => "run",
            Trigger::Http => "http",
            Trigger::None => "none",
        })
    }
}

/// What to compose, besides the app itself.
#[derive(Debug, Clone)]
pub struct ComposeOptions {
    /// Broker URL; `None` means the embedded `local` backend.
    pub broker: Option<String>,
    /// Topic patterns to subscribe to.
    pub subscribe: Vec<String>,
    /// Queue group shared by competing instances.
    pub queue_group: Option<String>,
    /// Backend- or driver-specific settings (see [`Adapter::options`]).
    pub options: BTreeMap<String, String>,
    /// How the output is started.
    pub trigger: Trigger,
}

impl Default for ComposeOptions {
    fn default() -> Self {
        ComposeOptions {
            broker: None,
            subscribe: Vec::new(),
            queue_group: None,
            options: BTreeMap::new(),
            trigger: Trigger::Auto,
        }
    }
}

/// Something the user should know about a composition that still succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// `--trigger none` on an app that exports `incoming-handler`: nothing will call it.
    HandlerNeverCalled,
    /// A driver was added, so the app's own entry point is not exported.
    AppEntryPointHidden {
        /// The app's export that is dropped.
        export: String,
    },
    /// The broker URL carries a secret that is now baked into the output.
    SecretBaked {
        /// The URL with the secret masked.
        redacted_url: String,
        /// The variables the backend reads credentials from at run time (empty: none).
        run_env: &'static [&'static str],
    },
    /// Subscriptions are given but no driver will consume them.
    SubscriptionsUnused,
    /// Subscriptions are given but the backend receives from elsewhere.
    SubscriptionsIgnored {
        /// The backend's name.
        backend: &'static str,
        /// Where it receives from instead.
        why: &'static str,
    },
    /// A queue group is given but the backend has no use for it.
    QueueGroupIgnored {
        /// The backend's name.
        backend: &'static str,
        /// Why it makes no difference.
        why: &'static str,
    },
    /// The output imports something stock wasmtime does not provide.
    NonWasiImport {
        /// The import name.
        import: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::HandlerNeverCalled => write!(
                f,
                "the app exports `incoming-handler`, but with `--trigger none` nothing will call it"
            ),
            Warning::AppEntryPointHidden { export } => write!(
                f,
                "the app's own `{export}` is not exported: the driver is the entry point \
                 (pass `--trigger none` to keep the app's)"
            ),
            Warning::SecretBaked {
                redacted_url,
                run_env,
            } => {
                write!(
                    f,
                    "the broker URL `{redacted_url}` carries a secret, which is baked into the \
                     output: anyone with the file can read it; "
                )?;
                if run_env.is_empty() {
                    write!(
                        f,
                        "pass the URL at run time instead with `wasmtime run --env MSGPLUG_BROKER=...`"
                    )
                } else {
                    write!(
                        f,
                        "leave the secret out and set {} at run time instead",
                        run_env.join(" / ")
                    )
                }
            }
            Warning::SubscriptionsUnused => write!(
                f,
                "`--subscribe` has no effect without a driver; the app only sends"
            ),
            Warning::SubscriptionsIgnored { backend, why } => write!(
                f,
                "`--subscribe` has no effect with the `{backend}` backend: {why}"
            ),
            Warning::QueueGroupIgnored { backend, why } => write!(
                f,
                "`--queue-group` has no effect with the `{backend}` backend: {why}"
            ),
            Warning::NonWasiImport { import } => write!(
                f,
                "the output imports `{import}`, which stock wasmtime does not provide"
            ),
        }
    }
}

/// An error composing an app.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The app is not a readable component.
    #[error("failed to read the app component")]
    App(#[source] AnalyzeError),
    /// The app neither imports nor exports `wasi:messaging`.
    #[error(
        "the app does not use `wasi:messaging@{MESSAGING_VERSION}` (it imports and exports no \
         `wasi:messaging` interface); build it against the WIT that `msgplug wit` writes"
    )]
    NotAMessagingApp,
    /// The app uses another version of `wasi:messaging`.
    #[error(
        "the app uses `{name}`, but msgplug implements `wasi:messaging@{MESSAGING_VERSION}`; \
         rebuild the app against the WIT that `msgplug wit` writes"
    )]
    UnsupportedMessagingVersion {
        /// The import or export with the other version.
        name: String,
    },
    /// The broker URL or a subscription is invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// No adapter fits the request.
    #[error(transparent)]
    Adapter(#[from] adapters::AdapterError),
    /// `auto` cannot decide between the app's handler and its own entry point.
    #[error(
        "the app exports both `incoming-handler` and its own entry point `{entry}`; pass \
         `--trigger run` to drive the handler or `--trigger none` to keep the app's entry point"
    )]
    AmbiguousTrigger {
        /// The app's entry point export.
        entry: String,
    },
    /// The chosen trigger needs a handler the app does not export.
    #[error(
        "`--trigger {trigger}` needs an app that exports `{}`, and this app does not",
        names::INCOMING_HANDLER
    )]
    NoHandler {
        /// The trigger asked for.
        trigger: Trigger,
    },
    /// `--trigger run` with a backend that has nothing to pull from.
    #[error(
        "the `{backend}` backend only sends: it has no messages for `--trigger run` to pull; \
         receive them with `--trigger http` (each HTTP request is one message)"
    )]
    BackendCannotPull {
        /// The backend's name.
        backend: &'static str,
    },
    /// Nothing in the output would ever run.
    #[error(
        "the app exports neither `incoming-handler` nor an entry point (`wasi:cli/run` or \
         `wasi:http/incoming-handler`), so the composed component would have nothing to run"
    )]
    NothingToRun,
    /// A subscription has wildcards, but the backend takes names.
    #[error(
        "`--subscribe {topic}`: the `{backend}` backend takes names, not patterns with \
         `*` or `>`: {names}"
    )]
    WildcardSubscription {
        /// The subscription as given.
        topic: String,
        /// The backend's name.
        backend: &'static str,
        /// What its names name.
        names: &'static str,
    },
    /// An option no part of the composition understands.
    #[error("option `{key}` does not apply to {adapters}; {known} (`msgplug adapters` lists each adapter's options)")]
    UnknownOption {
        /// The key as given.
        key: String,
        /// The adapters in the composition, e.g. "backend `backend-local` and driver `driver-run`".
        adapters: String,
        /// The keys that do apply, or a note that there are none.
        known: String,
    },
    /// An internal import has no provider (an adapter and the app do not fit together).
    #[error("`{instance}` imports `{import}`, but no part of the composition exports it")]
    UnsatisfiedImport {
        /// The instance whose import is open.
        instance: String,
        /// The import name.
        import: String,
    },
    /// The config component could not be generated.
    #[error(transparent)]
    ConfigComponent(#[from] ConfigComponentError),
    /// A component was rejected by the composition graph.
    #[error("failed to add `{package}` to the composition graph")]
    Graph {
        /// The package being added.
        package: String,
        /// What went wrong.
        #[source]
        source: anyhow::Error,
    },
    /// Encoding found a resource type mismatch: some part sees another `message` type.
    #[error(
        "the composed component failed validation: mis-wired `{}` (a resource type mismatch \
         between the app, the backend and the driver)",
        names::TYPES
    )]
    MisWiredTypes(#[source] EncodeError),
    /// Encoding or validating the composition failed.
    #[error("failed to encode the composed component")]
    Encode(#[source] EncodeError),
    /// The output still imports an internal interface (a bug in msgplug).
    #[error("the composed component still imports `{import}`; this is a bug in msgplug")]
    LeftoverImport {
        /// The import name.
        import: String,
    },
}

/// One component instance in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedInstance {
    /// Its variable name in WAC (`config`, `backend`, `app`, `driver`).
    pub name: &'static str,
    /// Its package name in the graph and in WAC (e.g. `msgplug:backend-local`).
    pub package: String,
    /// Each wired import, with the index of the earlier instance that exports the same name.
    pub arguments: Vec<(String, usize)>,
    /// Whether some imports are left for the host to provide.
    pub imports_from_host: bool,
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

fn is_internal(name: &str) -> bool {
    crate::analyze::is_messaging(name) || name.starts_with(names::ADAPTER_PREFIX)
}

impl Plan {
    /// Wires `parts` in order; `exports` names (part index, export name) pairs to re-export.
    pub fn wire(parts: &[Part<'_>], exports: Vec<(usize, String)>) -> Result<Plan, ComposeError> {
        let mut instances = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let mut arguments = Vec::new();
            let mut imports_from_host = false;
            for import in &part.info.imports {
                if !is_internal(import) {
                    imports_from_host = true;
                    continue;
                }
                let provider = parts[..index]
                    .iter()
                    .position(|p| p.info.exports(import))
                    .ok_or_else(|| ComposeError::UnsatisfiedImport {
                        instance: part.name.to_string(),
                        import: import.clone(),
                    })?;
                arguments.push((import.clone(), provider));
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

    /// Encodes the plan with `wac-graph`; `components[i]` is the binary of instance `i`.
    pub fn encode(&self, components: &[&[u8]]) -> Result<Vec<u8>, ComposeError> {
        let mut graph = CompositionGraph::new();
        let mut nodes: Vec<NodeId> = Vec::with_capacity(self.instances.len());
        // One alias node per (instance, export): every consumer of `wasi:messaging/types`
        // gets the very same node.
        let mut aliases: HashMap<(usize, &str), NodeId> = HashMap::new();
        let graph_error = |package: &str| {
            let package = package.to_string();
            move |source: anyhow::Error| ComposeError::Graph {
                package: package.clone(),
                source,
            }
        };
        for (instance, bytes) in self.instances.iter().zip(components) {
            let error = graph_error(&instance.package);
            let package =
                Package::from_bytes(&instance.package, None, bytes.to_vec(), graph.types_mut())
                    .map_err(&error)?;
            let package = graph
                .register_package(package)
                .map_err(|e| error(e.into()))?;
            let node = graph.instantiate(package);
            for (import, provider) in &instance.arguments {
                let alias = match aliases.get(&(*provider, import.as_str())) {
                    Some(alias) => *alias,
                    None => {
                        let alias = graph
                            .alias_instance_export(nodes[*provider], import)
                            .map_err(|e| error(e.into()))?;
                        aliases.insert((*provider, import.as_str()), alias);
                        alias
                    }
                };
                graph
                    .set_instantiation_argument(node, import, alias)
                    .map_err(|e| error(e.into()))?;
            }
            nodes.push(node);
        }
        for (index, name) in &self.exports {
            let error = graph_error(&self.instances[*index].package);
            let alias = graph
                .alias_instance_export(nodes[*index], name)
                .map_err(|e| error(e.into()))?;
            graph
                .export(alias, name.clone())
                .map_err(|e| error(e.into()))?;
        }
        graph
            .encode(EncodeOptions {
                define_components: true,
                validate: true,
                processor: Some(Processor {
                    name: env!("CARGO_PKG_NAME"),
                    version: env!("CARGO_PKG_VERSION"),
                }),
            })
            .map_err(|e| match &e {
                EncodeError::ValidationFailure { source }
                    if source.message().contains("type mismatch") =>
                {
                    ComposeError::MisWiredTypes(e)
                }
                _ => ComposeError::Encode(e),
            })
    }
}

/// A composed component and what went into it.
#[derive(Debug)]
pub struct Composed {
    /// The encoded component, with the `msgplug-config` custom section.
    pub component: Vec<u8>,
    /// The generated config component (also inside `component`).
    pub config_component: Vec<u8>,
    /// What the output records about itself (settings included).
    pub manifest: Manifest,
    /// The backend adapter used.
    pub backend: &'static Adapter,
    /// The driver adapter used, if any.
    pub driver: Option<&'static Adapter>,
    /// The trigger `auto` resolved to (never [`Trigger::Auto`]).
    pub trigger: Trigger,
    /// The wiring.
    pub plan: Plan,
    /// The output's world.
    pub world: ComponentInfo,
    /// Things the user should know.
    pub warnings: Vec<Warning>,
}

/// Package name of the app in the graph and in WAC.
pub const APP_PACKAGE: &str = "user:app";
/// Package name of the generated config component in the graph and in WAC.
pub const CONFIG_PACKAGE: &str = "msgplug:config";

/// Composes `app` (a component's bytes) as `options` say.
pub fn compose(app: &[u8], options: &ComposeOptions) -> Result<Composed, ComposeError> {
    let app_info = analyze(app).map_err(ComposeError::App)?;
    if let Some(name) = app_info.foreign_messaging_version() {
        return Err(ComposeError::UnsupportedMessagingVersion {
            name: name.to_string(),
        });
    }
    if !app_info.uses_messaging() {
        return Err(ComposeError::NotAMessagingApp);
    }

    let broker = config::parse_broker(options.broker.as_deref().unwrap_or("local"))?;
    config::check_topics(&options.subscribe)?;
    let backend = adapters::backend_for_scheme(&broker.scheme)?;
    let trigger = resolve_trigger(&app_info, options.trigger, backend)?;

    let mut warnings = check_subscriptions(options, backend, trigger)?;
    if broker.has_secret {
        warnings.push(Warning::SecretBaked {
            redacted_url: config::redact(&broker.url),
            run_env: backend.run_env,
        });
    }
    let driver = match trigger {
        Trigger::Run => Some(adapters::by_name("driver-run")?),
        Trigger::Http => Some(adapters::by_name("driver-http")?),
        _ => None,
    };
    check_options(&options.options, backend, driver)?;
    let mut settings = Settings::new(
        backend.family(),
        &broker,
        options.subscribe.clone(),
        options.queue_group.clone(),
    );
    settings.options = options.options.clone();
    let json = settings.to_json();
    let config_component = config_component::generate(&json)?;
    let config_info =
        read_world(&config_component).expect("the generated config component is valid");
    let backend = Embedded::new(backend);
    let driver = driver.map(Embedded::new);

    let mut parts = vec![
        Part {
            name: "config",
            package: CONFIG_PACKAGE,
            info: &config_info,
        },
        backend.part("backend"),
        Part {
            name: "app",
            package: APP_PACKAGE,
            info: &app_info,
        },
    ];
    let mut components: Vec<&[u8]> = vec![&config_component, backend.adapter.bytes, app];
    let exports = match &driver {
        Some(driver) => {
            for (_, export) in app_info.entry_points() {
                warnings.push(Warning::AppEntryPointHidden {
                    export: export.to_string(),
                });
            }
            parts.push(driver.part("driver"));
            components.push(driver.adapter.bytes);
            let entry = driver
                .info
                .entry_points()
                .first()
                .map(|(_, name)| name.to_string())
                .expect("every driver exports an entry point (tested in adapters.rs)");
            vec![(parts.len() - 1, entry)]
        }
        None => {
            if app_info.exports_handler() {
                warnings.push(Warning::HandlerNeverCalled);
            }
            if !options.subscribe.is_empty() {
                warnings.push(Warning::SubscriptionsUnused);
            }
            app_info
                .entry_points()
                .into_iter()
                .map(|(_, name)| (2, name.to_string()))
                .collect()
        }
    };

    let plan = Plan::wire(&parts, exports)?;
    let mut component = plan.encode(&components)?;
    let manifest = Manifest {
        composed_by: format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        backend: backend.adapter.name.to_string(),
        driver: driver.as_ref().map(|d| d.adapter.name.to_string()),
        trigger: trigger.to_string(),
        reads_stdin: backend.adapter.uses_stdin
            && (trigger == Trigger::Run || app_info.imports(names::REQUEST_REPLY)),
        network: backend
            .info
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:sockets/")),
        run_env: backend
            .adapter
            .run_env
            .iter()
            .chain(driver.iter().flat_map(|d| d.adapter.run_env))
            .map(|name| name.to_string())
            .collect(),
        settings,
    };
    let manifest_json = serde_json::to_string(&manifest).expect("manifests serialise");
    config_component::append_custom_section(&mut component, &manifest_json);

    let world = read_world(&component).expect("wac-graph validated the composition");
    if let Some(import) = world.imports.iter().find(|i| is_internal(i)) {
        return Err(ComposeError::LeftoverImport {
            import: import.clone(),
        });
    }
    for import in world.imports.iter().filter(|i| !i.starts_with("wasi:")) {
        warnings.push(Warning::NonWasiImport {
            import: import.clone(),
        });
    }

    Ok(Composed {
        component,
        config_component,
        manifest,
        backend: backend.adapter,
        driver: driver.map(|d| d.adapter),
        trigger,
        plan,
        world,
        warnings,
    })
}

/// An embedded adapter with its world, ready to place in a [`Plan`].
struct Embedded {
    adapter: &'static Adapter,
    info: ComponentInfo,
    package: String,
}

impl Embedded {
    fn new(adapter: &'static Adapter) -> Self {
        Embedded {
            adapter,
            info: read_world(adapter.bytes)
                .expect("embedded adapters are valid (tested in adapters.rs)"),
            package: format!("msgplug:{}", adapter.name),
        }
    }

    fn part(&self, name: &'static str) -> Part<'_> {
        Part {
            name,
            package: &self.package,
            info: &self.info,
        }
    }
}

/// Checks `--subscribe` and `--queue-group` against what the backend does with them.
fn check_subscriptions(
    options: &ComposeOptions,
    backend: &Adapter,
    trigger: Trigger,
) -> Result<Vec<Warning>, ComposeError> {
    let mut warnings = Vec::new();
    let has_driver = matches!(trigger, Trigger::Run | Trigger::Http);
    match backend.subscriptions {
        Subscriptions::Patterns | Subscriptions::Native(_) => {}
        Subscriptions::Names(names) => {
            if let Some(topic) = options.subscribe.iter().find(|t| t.contains(['*', '>'])) {
                return Err(ComposeError::WildcardSubscription {
                    topic: topic.clone(),
                    backend: backend.name,
                    names,
                });
            }
        }
        Subscriptions::Unused(why) => {
            if has_driver && !options.subscribe.is_empty() {
                warnings.push(Warning::SubscriptionsIgnored {
                    backend: backend.name,
                    why,
                });
            }
        }
    }
    if let (Some(_), Some(why)) = (&options.queue_group, backend.queue_group_ignored) {
        warnings.push(Warning::QueueGroupIgnored {
            backend: backend.name,
            why,
        });
    }
    Ok(warnings)
}

/// Checks that every option applies to the chosen backend or driver.
fn check_options(
    options: &BTreeMap<String, String>,
    backend: &Adapter,
    driver: Option<&Adapter>,
) -> Result<(), ComposeError> {
    let parts: Vec<&Adapter> = std::iter::once(backend).chain(driver).collect();
    let known: Vec<&str> = parts
        .iter()
        .flat_map(|a| a.options.iter().map(|o| o.key))
        .collect();
    match options.keys().find(|key| !known.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(ComposeError::UnknownOption {
            key: key.clone(),
            adapters: parts
                .iter()
                .map(|a| format!("{} `{}`", a.kind, a.name))
                .collect::<Vec<_>>()
                .join(" and "),
            known: if known.is_empty() {
                "they take no options".to_string()
            } else {
                format!(
                    "they understand: {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        }),
    }
}

/// Applies DESIGN's trigger rules to the app's exports and what the backend can do.
fn resolve_trigger(
    app: &ComponentInfo,
    asked: Trigger,
    backend: &Adapter,
) -> Result<Trigger, ComposeError> {
    let handler = app.exports_handler();
    let entry = app.entry_points().first().map(|(_, name)| name.to_string());
    match asked {
        Trigger::Auto => match (handler, entry) {
            (true, None) if backend.pulls => Ok(Trigger::Run),
            (true, None) => Ok(Trigger::Http),
            (false, Some(_)) => Ok(Trigger::None),
            (true, Some(entry)) => Err(ComposeError::AmbiguousTrigger { entry }),
            (false, None) => Err(ComposeError::NothingToRun),
        },
        Trigger::Run | Trigger::Http if !handler => Err(ComposeError::NoHandler { trigger: asked }),
        Trigger::Run if !backend.pulls => Err(ComposeError::BackendCannotPull {
            backend: backend.name,
        }),
        Trigger::Run => Ok(Trigger::Run),
        Trigger::Http => Ok(Trigger::Http),
        Trigger::None if entry.is_none() => Err(ComposeError::NothingToRun),
        Trigger::None => Ok(Trigger::None),
    }
}

impl Composed {
    /// The `wasmtime` command that runs the output when it is written to `path`.
    pub fn run_command(&self, path: &str) -> String {
        run_command(&self.world, &self.manifest, path)
    }
}

/// The `wasmtime` command that runs a composed component described by `world` and `manifest`.
pub fn run_command(world: &ComponentInfo, manifest: &Manifest, path: &str) -> String {
    let broker_host = url::Url::parse(&manifest.settings.broker)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string));
    host::wasmtime_command(
        world,
        path,
        RunHints {
            broker_host: broker_host.as_deref(),
            reads_stdin: manifest.reads_stdin,
            network: manifest.network,
            env: &manifest.run_env,
        },
    )
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
        assert_eq!(args(1), vec![(names::CONFIG.to_string(), 0)]);
        assert_eq!(
            args(2),
            vec![
                (names::TYPES.to_string(), 1),
                (names::PRODUCER.to_string(), 1)
            ]
        );
        assert_eq!(
            args(3),
            vec![
                (names::TYPES.to_string(), 1),
                (names::INCOMING_HANDLER.to_string(), 2)
            ]
        );
        assert!(plan.instances[1].imports_from_host);
        assert!(!plan.instances[2].imports_from_host);
    }

    /// A stand-in app that sends and exports a handler.
    fn dummy_app() -> Vec<u8> {
        use wit_parser::{LiftLowerAbi, ManglingAndAbi};
        let mut wit = crate::wit::bundled();
        let package = wit
            .resolve
            .push_source(
                "app.wit",
                "package test:app;\nworld app {\n  import wasi:messaging/producer@0.2.0-draft;\n  \
                 export wasi:messaging/incoming-handler@0.2.0-draft;\n}\n",
            )
            .unwrap();
        let world = wit.resolve.select_world(&[package], Some("app")).unwrap();
        let mut module = wit_component::dummy_module(
            &wit.resolve,
            world,
            ManglingAndAbi::Legacy(LiftLowerAbi::Sync),
        );
        wit_component::embed_component_metadata(
            &mut module,
            &wit.resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .unwrap();
        wit_component::ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .encode()
            .unwrap()
    }

    /// Encodes config, two backends, an app wired to the first, and a driver that takes
    /// `types` from backend `types_from` (1 or 2) and everything else from the first.
    fn encode_with_driver_types_from(types_from: usize) -> Result<Vec<u8>, ComposeError> {
        let config = config_component::generate("{}").unwrap();
        let app = dummy_app();
        let backend = adapters::by_name("backend-local").unwrap();
        let driver = adapters::by_name("driver-run").unwrap();
        let instance = |name, package: &str, arguments: &[(&str, usize)]| PlannedInstance {
            name,
            package: package.to_string(),
            arguments: arguments.iter().map(|(i, p)| (i.to_string(), *p)).collect(),
            imports_from_host: true,
        };
        let consumer = "msgplug:adapter/consumer@0.1.0";
        let outbox = "msgplug:adapter/outbox@0.1.0";
        let plan = Plan {
            instances: vec![
                instance("config", CONFIG_PACKAGE, &[]),
                instance("backend", "msgplug:backend-local", &[(names::CONFIG, 0)]),
                instance("backend2", "msgplug:backend-local2", &[(names::CONFIG, 0)]),
                instance(
                    "app",
                    APP_PACKAGE,
                    &[(names::TYPES, 1), (names::PRODUCER, 1)],
                ),
                instance(
                    "driver",
                    "msgplug:driver-run",
                    &[
                        (names::TYPES, types_from),
                        (names::INCOMING_HANDLER, 3),
                        (consumer, 1),
                        (outbox, 1),
                    ],
                ),
            ],
            exports: vec![(4, "wasi:cli/run@0.2.0".into())],
        };
        plan.encode(&[&config, backend.bytes, backend.bytes, &app, driver.bytes])
    }

    /// The reason for wiring everything to one `types` instance: a driver given `message`
    /// from a second backend instance sees another resource type, and validation says so.
    #[test]
    fn a_second_types_instance_is_caught_as_mis_wiring() {
        encode_with_driver_types_from(1).expect("one shared `types` instance composes");
        let err = encode_with_driver_types_from(2).unwrap_err();
        assert!(matches!(err, ComposeError::MisWiredTypes(_)), "{err:?}");
        assert!(err
            .to_string()
            .contains("mis-wired `wasi:messaging/types@0.2.0-draft`"));
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

    #[test]
    fn auto_trigger_follows_the_app_exports() {
        let handler = info(&[], &[names::INCOMING_HANDLER]);
        let runner = info(&[], &["wasi:cli/run@0.2.0"]);
        let both = info(&[], &[names::INCOMING_HANDLER, "wasi:cli/run@0.2.0"]);
        let neither = info(&[names::PRODUCER], &[]);
        let local = adapters::by_name("backend-local").unwrap();
        let http = adapters::by_name("backend-http").unwrap();
        assert_eq!(
            resolve_trigger(&handler, Trigger::Auto, http).unwrap(),
            Trigger::Http,
            "a backend that cannot pull is driven by http requests"
        );
        assert!(matches!(
            resolve_trigger(&handler, Trigger::Run, http),
            Err(ComposeError::BackendCannotPull { .. })
        ));
        assert_eq!(
            resolve_trigger(&handler, Trigger::Auto, local).unwrap(),
            Trigger::Run
        );
        assert_eq!(
            resolve_trigger(&runner, Trigger::Auto, local).unwrap(),
            Trigger::None
        );
        assert!(matches!(
            resolve_trigger(&both, Trigger::Auto, local),
            Err(ComposeError::AmbiguousTrigger { .. })
        ));
        assert_eq!(
            resolve_trigger(&both, Trigger::Run, local).unwrap(),
            Trigger::Run
        );
        assert_eq!(
            resolve_trigger(&both, Trigger::None, local).unwrap(),
            Trigger::None
        );
        assert!(matches!(
            resolve_trigger(&neither, Trigger::Auto, local),
            Err(ComposeError::NothingToRun)
        ));
        assert!(matches!(
            resolve_trigger(&runner, Trigger::Run, local),
            Err(ComposeError::NoHandler { .. })
        ));
        assert_eq!(
            resolve_trigger(&both, Trigger::Http, local).unwrap(),
            Trigger::Http
        );
        assert!(matches!(
            resolve_trigger(&runner, Trigger::Http, local),
            Err(ComposeError::NoHandler { .. })
        ));
        assert!(matches!(
            resolve_trigger(&handler, Trigger::None, local),
            Err(ComposeError::NothingToRun)
        ));
    }

    #[test]
    fn options_must_apply_to_the_backend_or_the_driver() {
        let nats = adapters::by_name("backend-nats").unwrap();
        let local = adapters::by_name("backend-local").unwrap();
        let run = adapters::by_name("driver-run").unwrap();
        let http = adapters::by_name("driver-http").unwrap();
        let options = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let jetstream = options(&[("jetstream", "S"), ("durable", "d")]);
        assert!(check_options(&jetstream, nats, Some(run)).is_ok());
        assert!(check_options(&options(&[("max_body_bytes", "10")]), local, Some(http)).is_ok());
        let err = check_options(&jetstream, local, Some(run)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "option `durable` does not apply to backend `backend-local` and driver `driver-run`; \
             they take no options (`msgplug adapters` lists each adapter's options)"
        );
        let err = check_options(&options(&[("qos", "1")]), nats, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "option `qos` does not apply to backend `backend-nats`; they understand: \
             `jetstream`, `durable`, `create_stream`, `ack_wait_ms` (`msgplug adapters` lists each adapter's options)"
        );
    }

    #[test]
    fn subscriptions_and_queue_groups_are_checked_against_the_backend() {
        let by = |name| adapters::by_name(name).unwrap();
        let options = |subscribe: &[&str], queue_group: Option<&str>| ComposeOptions {
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            queue_group: queue_group.map(str::to_string),
            ..ComposeOptions::default()
        };
        let nats = options(&["orders.>"], Some("workers"));
        assert_eq!(
            check_subscriptions(&nats, by("backend-nats"), Trigger::Run).unwrap(),
            []
        );
        let err = check_subscriptions(&nats, by("backend-servicebus"), Trigger::Run).unwrap_err();
        assert!(
            matches!(err, ComposeError::WildcardSubscription { ref topic, .. } if topic == "orders.>"),
            "{err}"
        );
        let names = options(&["orders", "events/subscriptions/audit"], None);
        assert_eq!(
            check_subscriptions(&names, by("backend-servicebus"), Trigger::Run).unwrap(),
            []
        );
        let warnings = check_subscriptions(&nats, by("backend-sqs"), Trigger::Run).unwrap();
        assert!(matches!(
            warnings[..],
            [
                Warning::SubscriptionsIgnored {
                    backend: "backend-sqs",
                    ..
                },
                Warning::QueueGroupIgnored {
                    backend: "backend-sqs",
                    ..
                }
            ]
        ));
        assert_eq!(
            check_subscriptions(&nats, by("backend-sqs"), Trigger::None).unwrap()[..1],
            [Warning::QueueGroupIgnored {
                backend: "backend-sqs",
                why: by("backend-sqs").queue_group_ignored.unwrap()
            }],
            "without a driver, SubscriptionsUnused says it already"
        );
    }
}
