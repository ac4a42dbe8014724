//! The WIT that msgplug bundles: the vendored `wasi:messaging@0.2.0-draft` package and the
//! internal `msgplug:adapter@0.1.0` package, embedded so the binary needs no files at run time.

use wit_parser::{PackageId, Resolve};

/// The `wasi:messaging` version msgplug implements. Prerelease versions match only exactly.
pub const MESSAGING_VERSION: &str = "0.2.0-draft";

/// Fully qualified interface names, exactly as they appear in component imports and exports.
pub mod names {
    /// `wasi:messaging/types`: the `client` and `message` resources and the `error` variant.
    pub const TYPES: &str = "wasi:messaging/types@0.2.0-draft";
    /// `wasi:messaging/producer`: `send`.
    pub const PRODUCER: &str = "wasi:messaging/producer@0.2.0-draft";
    /// `wasi:messaging/request-reply`: `request` and `reply`.
    pub const REQUEST_REPLY: &str = "wasi:messaging/request-reply@0.2.0-draft";
    /// `wasi:messaging/incoming-handler`: the app's `handle` export.
    pub const INCOMING_HANDLER: &str = "wasi:messaging/incoming-handler@0.2.0-draft";
    /// `msgplug:adapter/config`: the baked settings, exported by the generated config component.
    pub const CONFIG: &str = "msgplug:adapter/config@0.1.0";
    /// `msgplug:adapter/app-run`: the app's own `wasi:cli/run`, as the run wrapper imports it.
    pub const APP_RUN: &str = "msgplug:adapter/app-run@0.1.0";
    /// Prefix of every `wasi:messaging` interface name, of any version.
    pub const MESSAGING_PREFIX: &str = "wasi:messaging/";
    /// Prefix of every internal msgplug interface name.
    pub const ADAPTER_PREFIX: &str = "msgplug:";
    /// Prefix of `wasi:cli/run` of any version (the entry point of `wasmtime run`).
    pub const CLI_RUN_PREFIX: &str = "wasi:cli/run@";
    /// Prefix of `wasi:http/incoming-handler` of any version (the entry point of `wasmtime serve`).
    pub const HTTP_HANDLER_PREFIX: &str = "wasi:http/incoming-handler@";
}

/// The files of the vendored `wasi:messaging@0.2.0-draft` package, as (file name, contents).
pub const MESSAGING_FILES: &[(&str, &str)] = &[
    (
        "messaging.wit",
        include_str!("../wit/deps/messaging/messaging.wit"),
    ),
    ("types.wit", include_str!("../wit/deps/messaging/types.wit")),
    (
        "producer.wit",
        include_str!("../wit/deps/messaging/producer.wit"),
    ),
    (
        "request-reply.wit",
        include_str!("../wit/deps/messaging/request-reply.wit"),
    ),
    ("guest.wit", include_str!("../wit/deps/messaging/guest.wit")),
];

/// The `msgplug:adapter@0.1.0` package (one file).
pub const ADAPTER_WIT: &str = include_str!("../wit/adapter.wit");

/// The `wasi:messaging` package as one WIT document: its files in order, each after a
/// `// FILE` comment (only `messaging.wit` declares the package, so they concatenate).
pub fn messaging_document() -> String {
    let mut out = String::new();
    for (file, contents) in MESSAGING_FILES {
        out.push_str(&format!("// {file}\n{contents}"));
        if !contents.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Both bundled packages, resolved.
pub struct BundledWit {
    /// The resolve holding both packages.
    pub resolve: Resolve,
    /// `wasi:messaging@0.2.0-draft`.
    pub messaging: PackageId,
    /// `msgplug:adapter@0.1.0`.
    pub adapter: PackageId,
}

/// Resolves the bundled WIT packages.
///
/// The sources are compiled in and tested, so a failure here is a bug in msgplug itself.
pub fn bundled() -> BundledWit {
    let mut resolve = Resolve::default();
    let mut map = wit_parser::SourceMap::new();
    for (file, contents) in MESSAGING_FILES {
        map.push_str(&format!("wit/deps/messaging/{file}"), *contents);
    }
    let group = map
        .parse()
        .map_err(|(_, e)| e)
        .expect("the vendored wasi:messaging WIT parses");
    let messaging = resolve
        .push_group(group)
        .expect("the vendored wasi:messaging WIT resolves");
    let adapter = resolve
        .push_source("wit/adapter.wit", ADAPTER_WIT)
        .expect("the msgplug:adapter WIT resolves");
    BundledWit {
        resolve,
        messaging,
        adapter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_packages_resolve_with_the_expected_names() {
        let wit = bundled();
        assert_eq!(
            wit.resolve.packages[wit.messaging].name.to_string(),
            format!("wasi:messaging@{MESSAGING_VERSION}")
        );
        assert_eq!(
            wit.resolve.packages[wit.adapter].name.to_string(),
            "msgplug:adapter@0.1.0"
        );
        for world in ["backend", "driver-run", "driver-http", "config-provider"] {
            wit.resolve
                .select_world(&[wit.adapter], Some(world))
                .unwrap_or_else(|e| panic!("world `{world}` missing: {e}"));
        }
    }

    #[test]
    fn the_single_document_resolves_to_the_same_package() {
        let mut resolve = Resolve::default();
        let package = resolve
            .push_source("messaging.wit", &messaging_document())
            .expect("the concatenated document resolves");
        assert_eq!(
            resolve.packages[package].name.to_string(),
            format!("wasi:messaging@{MESSAGING_VERSION}")
        );
        assert_eq!(resolve.worlds.len(), 4);
    }

    #[test]
    fn vendored_files_are_all_embedded() {
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/wit/deps/messaging"))
            .expect("wit/deps/messaging exists")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wit"))
            .count();
        assert_eq!(on_disk, MESSAGING_FILES.len());
    }
}
