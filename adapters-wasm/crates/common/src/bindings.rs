//! Bindings of world `msgplug:adapter/backend`, generated from the top-level `wit/`.
#![allow(missing_docs)]

wit_bindgen::generate!({
    world: "msgplug:adapter/backend",
    path: "../../../wit",
    generate_all,
    pub_export_macro: true,
    default_bindings_module: "common::bindings",
});
