//! Composing an app with a backend, a driver and the generated config into one component.
//!
//! Composition happens in steps, one module each:
//!
//! 1. [`Setup::new`] turns the [`ComposeOptions`] into a typed decision once: the broker URL
//!    parsed, the backend chosen by its scheme, the [`Trigger`] resolved to a [`Driver`]
//!    (`trigger`), the options checked and the warnings collected (`checks`).
//! 2. [`Plan::wire`] decides which instance feeds which import, by name, from the
//!    components' own worlds (`plan`): every `wasi:messaging/*` and `msgplug:*` import is
//!    satisfied by the first earlier instance that exports it, and every other import is
//!    left for the host. Because the backend is the only exporter of `wasi:messaging/types`,
//!    the app and the driver are wired to **one** instance of it, so a `message` the backend
//!    makes is the same resource type everywhere.
//! 3. [`Plan::encode`] encodes the plan with `wac-graph` (`encode`); the plan can also be
//!    printed as WAC, see [`crate::wac_text`].

mod checks;
mod encode;
mod options;
mod plan;
mod setup;
mod trigger;

pub use checks::{CheckError, Warning, TLS_CA_OPTION};
pub use encode::GraphError;
pub use options::{ComposeOptions, Driver, Trigger};
use plan::is_internal;
pub use plan::{Argument, Part, Plan, PlannedInstance, WireError};
pub use setup::{Setup, SetupError};
pub use trigger::TriggerError;

use crate::adapters::Adapter;
use crate::analyze::{analyze, read_world, AnalyzeError, ComponentInfo};
use crate::broker::FromEnv;
use crate::config::Manifest;
use crate::config_component::{self, ConfigComponentError};
use crate::host::{self, RunHints};
use crate::wasmtime_range::needs_newer_wasmtime;
use crate::wit::{names, MESSAGING_VERSION};

/// An error composing an app ([`compose`]).
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
    /// The options do not fit the app or each other.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The config component could not be generated.
    #[error(transparent)]
    ConfigComponent(#[from] ConfigComponentError),
    /// The parts do not fit together.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The composition graph refused the plan, or the result did not validate.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The output still imports an internal interface (a bug in msgplug).
    #[error("the composed component still imports `{import}`; this is a bug in msgplug")]
    LeftoverImport {
        /// The import name.
        import: String,
    },
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
    /// What the backend can only take from the environment at run time.
    pub from_env: Vec<FromEnv>,
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
    let setup = Setup::new(&app_info, options)?;

    let config_component = config_component::generate(&setup.settings.to_json())?;
    let config_info =
        read_world(&config_component).expect("the generated config component is valid");
    let backend = Embedded::new(setup.backend);
    let driver = setup.driver.map(|driver| Embedded::new(driver.adapter()));

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
        None => app_info
            .entry_points()
            .into_iter()
            .map(|(_, name)| (2, name.to_string()))
            .collect(),
    };

    let plan = Plan::wire(&parts, exports)?;
    let mut component = plan.encode(&components)?;
    let trigger = setup.trigger();
    let manifest = Manifest {
        composed_by: format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        backend: setup.backend,
        driver: setup.driver,
        trigger,
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
        settings: setup.settings.clone(),
    };
    let manifest_json = serde_json::to_string(&manifest).expect("manifests serialise");
    config_component::append_custom_section(&mut component, &manifest_json);

    let world = read_world(&component).expect("wac-graph validated the composition");
    if let Some(import) = world.imports.iter().find(|i| is_internal(i)) {
        return Err(ComposeError::LeftoverImport {
            import: import.clone(),
        });
    }
    let mut warnings = setup.warnings.clone();
    for import in world.imports.iter().filter(|i| !i.starts_with("wasi:")) {
        warnings.push(Warning::NonWasiImport {
            import: import.clone(),
        });
    }
    warnings.extend(
        needs_newer_wasmtime(&world)
            .into_iter()
            .map(Warning::NeedsNewerWasmtime),
    );

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
        from_env: setup.from_env.clone(),
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

impl Composed {
    /// The `wasmtime` command that runs the output when it is written to `path`.
    pub fn run_command(&self, path: &str) -> String {
        run_command(&self.world, &self.manifest, path)
    }

    /// How to keep one broker connection across requests on `wasmtime serve`, if that
    /// applies ([`host::instance_reuse_note`]).
    pub fn instance_reuse_note(&self) -> Option<String> {
        host::instance_reuse_note(self.trigger == Trigger::Http, self.manifest.network)
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
