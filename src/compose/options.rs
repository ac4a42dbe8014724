//! What the caller asks for ([`ComposeOptions`], [`Trigger`]) and the driver a trigger
//! becomes ([`Driver`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::adapters::{self, Adapter};

/// How the composed component is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The driver a resolved trigger adds: the loop that calls the app's `incoming-handler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    /// `driver-run`: `wasmtime run` pulls each delivery and calls the handler.
    #[serde(rename = "driver-run")]
    Run,
    /// `driver-http`: `wasmtime serve` turns each request into a message.
    #[serde(rename = "driver-http")]
    Http,
    /// `driver-wrap`: the app's own `wasi:cli/run`, followed by a flush of the backend's
    /// outbox (trigger `none`).
    #[serde(rename = "driver-wrap")]
    Wrap,
}

impl Driver {
    /// Every driver.
    pub const ALL: [Driver; 3] = [Driver::Run, Driver::Http, Driver::Wrap];

    /// The embedded adapter component.
    pub fn adapter(self) -> &'static Adapter {
        match self {
            Driver::Run => &adapters::DRIVER_RUN,
            Driver::Http => &adapters::DRIVER_HTTP,
            Driver::Wrap => &adapters::DRIVER_WRAP,
        }
    }

    /// The trigger that adds this driver.
    pub fn trigger(self) -> Trigger {
        match self {
            Driver::Run => Trigger::Run,
            Driver::Http => Trigger::Http,
            Driver::Wrap => Trigger::None,
        }
    }

    /// Whether it calls the app's `incoming-handler` (the wrapper calls the app's own run).
    pub fn calls_handler(self) -> bool {
        self != Driver::Wrap
    }
}

/// The trigger a resolved `driver` choice stands for (`none` without a driver or with the
/// run wrapper).
pub(crate) fn trigger_of(driver: Option<Driver>) -> Trigger {
    driver.map_or(Trigger::None, Driver::trigger)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::{AdapterKind, ADAPTERS};

    #[test]
    fn every_driver_is_embedded_and_every_embedded_driver_is_a_choice() {
        for driver in Driver::ALL {
            let adapter = driver.adapter();
            assert_eq!(adapter.kind, AdapterKind::Driver);
            if driver.calls_handler() {
                assert_eq!(adapter.family(), driver.trigger().to_string());
            }
        }
        let embedded = ADAPTERS
            .iter()
            .filter(|a| a.kind == AdapterKind::Driver)
            .count();
        assert_eq!(embedded, Driver::ALL.len());
    }
}
