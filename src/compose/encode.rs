//! Encoding a [`Plan`] with `wac-graph`, validating the result.

use std::collections::HashMap;

use wac_graph::types::Package;
use wac_graph::{
    AliasError, CompositionGraph, EncodeError, EncodeOptions, ExportError,
    InstantiationArgumentError, NodeId, Processor, RegisterPackageError,
};
use wasmparser::{BinaryReaderError, Parser, Validator, WasmFeatures};

use super::Plan;
use crate::wit::names;

/// An error encoding a [`Plan`] ([`Plan::encode`]); wac-graph's own error is the source.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A component's bytes are not a package the graph can load.
    #[error("failed to add `{package}` to the composition graph")]
    Package {
        /// The package being added.
        package: String,
        /// What went wrong (wac-types reports it untyped).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The graph refused to register a package.
    #[error("failed to add `{package}` to the composition graph")]
    Register {
        /// The package being added.
        package: String,
        /// What went wrong.
        #[source]
        source: RegisterPackageError,
    },
    /// An instance has no export of a wired name.
    #[error("failed to add `{package}` to the composition graph")]
    Alias {
        /// The package whose export was aliased.
        package: String,
        /// What went wrong.
        #[source]
        source: AliasError,
    },
    /// An export does not fit the import it is wired to.
    #[error("failed to add `{package}` to the composition graph")]
    Argument {
        /// The package being instantiated.
        package: String,
        /// What went wrong.
        #[source]
        source: InstantiationArgumentError,
    },
    /// An export of the composition could not be added.
    #[error("failed to add `{package}` to the composition graph")]
    Export {
        /// The package whose export is re-exported.
        package: String,
        /// What went wrong.
        #[source]
        source: ExportError,
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
}

impl Plan {
    /// Encodes the plan with `wac-graph`; `components[i]` is the binary of instance `i`.
    pub fn encode(&self, components: &[&[u8]]) -> Result<Vec<u8>, GraphError> {
        let mut graph = CompositionGraph::new();
        let mut nodes: Vec<NodeId> = Vec::with_capacity(self.instances.len());
        // One alias node per (instance, export): every consumer of `wasi:messaging/types`
        // gets the very same node.
        let mut aliases: HashMap<(usize, &str), NodeId> = HashMap::new();
        for (instance, bytes) in self.instances.iter().zip(components) {
            let package = || instance.package.clone();
            let loaded =
                Package::from_bytes(&instance.package, None, bytes.to_vec(), graph.types_mut())
                    .map_err(|source| GraphError::Package {
                        package: package(),
                        source: source.into(),
                    })?;
            let id = graph
                .register_package(loaded)
                .map_err(|source| GraphError::Register {
                    package: package(),
                    source,
                })?;
            let node = graph.instantiate(id);
            for argument in &instance.arguments {
                let key = (argument.provider, argument.export.as_str());
                let alias = match aliases.get(&key) {
                    Some(alias) => *alias,
                    None => {
                        let alias = graph
                            .alias_instance_export(nodes[argument.provider], &argument.export)
                            .map_err(|source| GraphError::Alias {
                                package: package(),
                                source,
                            })?;
                        aliases.insert(key, alias);
                        alias
                    }
                };
                graph
                    .set_instantiation_argument(node, &argument.import, alias)
                    .map_err(|source| GraphError::Argument {
                        package: package(),
                        source,
                    })?;
            }
            nodes.push(node);
        }
        for (index, name) in &self.exports {
            let package = || self.instances[*index].package.clone();
            let alias = graph
                .alias_instance_export(nodes[*index], name)
                .map_err(|source| GraphError::Alias {
                    package: package(),
                    source,
                })?;
            graph
                .export(alias, name.clone())
                .map_err(|source| GraphError::Export {
                    package: package(),
                    source,
                })?;
        }
        let encoded = graph
            .encode(EncodeOptions {
                define_components: true,
                // `validate_wiring` below, without the function bodies.
                validate: false,
                processor: Some(Processor {
                    name: env!("CARGO_PKG_NAME"),
                    version: env!("CARGO_PKG_VERSION"),
                }),
            })
            .map_err(GraphError::Encode)?;
        validate_wiring(&encoded).map_err(|source| {
            let e = EncodeError::ValidationFailure { source };
            match &e {
                EncodeError::ValidationFailure { source }
                    if source.message().contains("type mismatch") =>
                {
                    GraphError::MisWiredTypes(e)
                }
                _ => GraphError::Encode(e),
            }
        })?;
        Ok(encoded)
    }
}

/// Validates a composition except the bodies of its core functions: everything the
/// composition itself made (types, imports, instantiations, aliases, exports) is checked,
/// while the functions are the parts' own, already validated: the app's when `compose`
/// read it ([`crate::analyze::analyze`]), the adapters' and the config component's by
/// their tests. Validating those bodies a second time was over a quarter of the CPU time of
/// composing an 18 MB componentize-py app (`wac compose` validates them once, as `analyze`
/// does here).
fn validate_wiring(component: &[u8]) -> Result<(), BinaryReaderError> {
    let features = WasmFeatures::all();
    let mut validator = Validator::new_with_features(features);
    let mut parser = Parser::new(0);
    parser.set_features(features);
    for payload in parser.parse_all(component) {
        // A `ValidPayload::Func` is a function body to validate: skipped on purpose.
        validator.payload(&payload?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters;
    use crate::compose::{Argument, PlannedInstance, APP_PACKAGE, CONFIG_PACKAGE};
    use crate::config_component;

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
    fn encode_with_driver_types_from(types_from: usize) -> Result<Vec<u8>, GraphError> {
        let config = config_component::generate("{}").unwrap();
        let app = dummy_app();
        let backend = adapters::by_name("backend-local").unwrap();
        let driver = adapters::by_name("driver-run").unwrap();
        let instance = |name, package: &str, arguments: &[(&str, usize)]| PlannedInstance {
            name,
            package: package.to_string(),
            arguments: arguments
                .iter()
                .map(|(i, p)| Argument::same_name(i, *p))
                .collect(),
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
        assert!(matches!(err, GraphError::MisWiredTypes(_)), "{err:?}");
        assert!(err
            .to_string()
            .contains("mis-wired `wasi:messaging/types@0.2.0-draft`"));
    }
}
