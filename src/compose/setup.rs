//! The first step: the options become a typed [`Setup`] once (broker parsed, backend and
//! driver chosen, checks run, warnings collected); the later steps only read it.

use super::checks::{self, CheckError, Warning};
use super::options::trigger_of;
use super::trigger::{self, TriggerError};
use super::{ComposeOptions, Driver, Trigger};
use crate::adapters::{self, Adapter, AdapterError};
use crate::analyze::ComponentInfo;
use crate::broker::{self, BrokerUrlError, FromEnv};
use crate::config::{self, BrokerUrl, Settings, SettingsError};

/// Everything decided about a composition before anything is wired.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The parsed broker URL.
    pub broker: BrokerUrl,
    /// The backend its scheme selects.
    pub backend: &'static Adapter,
    /// The driver the trigger resolved to (`None`: the app's own entry point).
    pub driver: Option<Driver>,
    /// The settings to bake into the config component.
    pub settings: Settings,
    /// What the backend can only take from the environment at run time.
    pub from_env: Vec<FromEnv>,
    /// What the user should know, so far (encoding may add more).
    pub warnings: Vec<Warning>,
}

/// An error deciding a composition from the options ([`Setup::new`]).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The broker URL or a subscription is invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// No backend serves the broker URL's scheme.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// The backend would refuse the broker URL when it starts.
    #[error(transparent)]
    BrokerUrl(#[from] BrokerUrlError),
    /// `--trigger` does not fit the app or the backend.
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    /// An option does not fit the backend or the driver.
    #[error(transparent)]
    Check(#[from] CheckError),
}

impl Setup {
    /// Decides the composition of `app` (its world) as `options` ask.
    pub fn new(app: &ComponentInfo, options: &ComposeOptions) -> Result<Setup, SetupError> {
        let broker = config::parse_broker(options.broker.as_deref().unwrap_or("local"))?;
        config::check_topics(&options.subscribe)?;
        let backend = adapters::backend_for_scheme(&broker.scheme)?;
        let from_env = broker::check(backend.family(), &broker).unwrap_or(Ok(Vec::new()))?;
        let driver = trigger::resolve(app, options.trigger, backend)?;
        let mut warnings = checks::check_subscriptions(options, backend, driver)?;
        if broker.has_secret {
            warnings.push(Warning::SecretBaked {
                redacted_url: config::redact(&broker.url),
                run_env: backend.run_env,
            });
        }
        let option = |key: &str| options.options.contains_key(key);
        if option("handler_timeout_ms") {
            checks::check_handler_timeout(backend, &broker.url, &options.options)?;
        }
        checks::check_options(&options.options, backend, driver.map(Driver::adapter))?;
        checks::check_tls_ca(&options.options)?;
        if backend.family() == "nats" && option("durable") && !option("jetstream") {
            return Err(CheckError::DurableNeedsJetStream.into());
        }
        if backend.family() == "mqtt" {
            warnings.extend(checks::mqtt_warnings(
                &broker.url,
                &options.options,
                driver.is_some_and(Driver::calls_handler),
            ));
        }
        if backend.family() == "redis" {
            warnings.extend(checks::redis_warnings(
                &broker.url,
                &options.options,
                driver.is_some_and(Driver::calls_handler),
            ));
        }
        warnings.extend(checks::app_warnings(app, driver, options));
        warnings.extend(checks::metadata_warning(app, backend));
        let mut settings = Settings::new(
            backend.family(),
            &broker,
            options.subscribe.clone(),
            options.queue_group.clone(),
        );
        settings.options = options.options.clone();
        settings.final_flush = driver == Some(Driver::Wrap);
        Ok(Setup {
            broker,
            backend,
            driver,
            settings,
            from_env,
            warnings,
        })
    }

    /// The trigger `auto` resolved to (never [`Trigger::Auto`]).
    pub fn trigger(&self) -> Trigger {
        trigger_of(self.driver)
    }
}
