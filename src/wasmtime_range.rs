//! The stock `wasmtime` releases composed output is promised to run on, and what in a
//! component would need more than the oldest of them.
//!
//! Every backend and both drivers are tested on both ends of the range (`.ci/test`). Imports of
//! WASI 0.2.x interfaces run on the oldest release whatever their patch version (wasmtime
//! matches 0.2.x imports by semver: an app importing `wasi:cli/environment@0.2.9` ran on
//! 36.0.9), so only what lies beyond WASI 0.2 is reported.

use std::fmt;

use crate::analyze::{version_of, ComponentInfo};

/// The oldest `wasmtime` release composed output is tested on: the 36 long-term-support release.
pub const OLDEST_WASMTIME: &str = "36.0.9";

/// The newest `wasmtime` release composed output is tested on.
pub const NEWEST_TESTED_WASMTIME: &str = "49.0.3";

/// Something in a component that [`OLDEST_WASMTIME`] does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeedsNewerWasmtime {
    /// An import of a WASI interface beyond 0.2.x (for example `wasi:cli/environment@0.3.0`):
    /// the oldest release links none of them.
    Import(String),
    /// The component model's async or thread built-ins (async lift/lower, tasks, streams,
    /// futures): the oldest release does not run them by default.
    AsyncAbi,
}

impl fmt::Display for NeedsNewerWasmtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Import(name) => write!(
                f,
                "the output imports `{name}`, which wasmtime {OLDEST_WASMTIME} (the oldest \
                 release msgplug supports) does not provide; run it on a newer wasmtime \
                 (tested up to {NEWEST_TESTED_WASMTIME})"
            ),
            Self::AsyncAbi => write!(
                f,
                "the output uses the component model's async or thread built-ins, which wasmtime \
                 {OLDEST_WASMTIME} (the oldest release msgplug supports) does not run by \
                 default; run it on a newer wasmtime (tested up to {NEWEST_TESTED_WASMTIME}) \
                 and check `wasmtime run -W help` for the flags it needs"
            ),
        }
    }
}

/// What in the component `info` describes needs a wasmtime newer than [`OLDEST_WASMTIME`];
/// empty when the oldest supported release runs it.
pub fn needs_newer_wasmtime(info: &ComponentInfo) -> Vec<NeedsNewerWasmtime> {
    let mut needs: Vec<_> = info
        .imports
        .iter()
        .filter(|name| name.starts_with("wasi:") && !is_wasi_0_2(name))
        .map(|name| NeedsNewerWasmtime::Import(name.clone()))
        .collect();
    if info.uses_async_abi {
        needs.push(NeedsNewerWasmtime::AsyncAbi);
    }
    needs
}

/// Whether `name` is versioned `0.2.x` (prereleases such as `0.2.0-draft` included) or not
/// versioned at all.
fn is_wasi_0_2(name: &str) -> bool {
    version_of(name).is_none_or(|version| version.starts_with("0.2."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wasi_beyond_0_2_and_the_async_abi_need_a_newer_wasmtime() {
        let mut info = ComponentInfo::with_names(
            &[
                "wasi:cli/environment@0.2.9",
                "wasi:http/outgoing-handler@0.2.6",
                "wasi:clocks/monotonic-clock@0.3.0-rc-2025-09-16",
                "wasi:cli/stdin@1.0.0",
                "other:pkg/iface@0.3.0",
            ],
            &["wasi:cli/run@0.2.0"],
        );
        assert_eq!(
            needs_newer_wasmtime(&info),
            [
                NeedsNewerWasmtime::Import(
                    "wasi:clocks/monotonic-clock@0.3.0-rc-2025-09-16".into()
                ),
                NeedsNewerWasmtime::Import("wasi:cli/stdin@1.0.0".into()),
            ]
        );
        info.imports.truncate(2);
        assert!(needs_newer_wasmtime(&info).is_empty());
        info.uses_async_abi = true;
        assert_eq!(needs_newer_wasmtime(&info), [NeedsNewerWasmtime::AsyncAbi]);
    }

    #[test]
    fn async_lifts_are_found_in_a_real_component() {
        use wit_component::{ComponentEncoder, StringEncoding};
        use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

        let mut resolve = Resolve::default();
        let package = resolve
            .push_str(
                "app.wit",
                "package test:app; world app { export run: func() -> u32; }",
            )
            .expect("valid WIT");
        let world = resolve.select_world(&[package], None).expect("one world");
        let component = |abi| {
            let mut module = wit_component::dummy_module(&resolve, world, abi);
            wit_component::embed_component_metadata(
                &mut module,
                &resolve,
                world,
                StringEncoding::UTF8,
            )
            .expect("embed metadata");
            ComponentEncoder::default()
                .module(&module)
                .and_then(|e| e.validate(true).encode())
                .expect("encode")
        };
        let sync = component(ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
        let async_ = component(ManglingAndAbi::Legacy(LiftLowerAbi::AsyncCallback));
        let uses_async = |bytes: &[u8]| crate::analyze::analyze(bytes).unwrap().uses_async_abi;
        assert!(!uses_async(&sync));
        assert!(uses_async(&async_));
    }
}
