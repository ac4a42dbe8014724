//! msgplug plugs `wasi:messaging@0.2.0-draft` into a WebAssembly component, so that it runs on
//! a stock `wasmtime run` / `wasmtime serve` against a real broker, with no custom host.
//!
//! [`compose()`] wires the app with a prebuilt backend adapter (chosen by the broker URL's
//! scheme), a driver (the trigger loop, chosen by [`Trigger`]) and a generated config
//! component into one self-contained component.
//!
//! ```no_run
//! use msgplug::{compose, ComposeOptions, Trigger};
//!
//! # fn main() -> anyhow::Result<()> {
//! let app = std::fs::read("transform.wasm")?;
//! let composed = compose(&app, &ComposeOptions {
//!     broker: Some("nats://127.0.0.1:4222".into()), // None: the embedded `local` backend
//!     subscribe: vec!["orders.>".into()],
//!     queue_group: Some("workers".into()),
//!     trigger: Trigger::Auto,
//!     ..ComposeOptions::default()
//! })?;
//! std::fs::write("transform.composed.wasm", &composed.component)?;
//! println!("{}", msgplug::wac_text::print(&composed.plan, "msgplug:composed"));
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod adapters;
pub mod analyze;
pub mod broker;
pub mod compose;
pub mod config;
pub mod config_component;
pub mod host;
pub mod inspect;
pub mod wac_text;
pub mod wasmtime_range;
pub mod wit;

pub use compose::{compose, ComposeError, ComposeOptions, Composed, Trigger, Warning};
pub use inspect::{inspect, Inspection, Role};
