//! Trigger resolution: DESIGN's rules applied to the app's exports and the backend.

use super::{Driver, Trigger};
use crate::adapters::Adapter;
use crate::analyze::{ComponentInfo, EntryPoint};
use crate::wit::names;

/// An error resolving `--trigger` against the app and the backend.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
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
}

/// The driver `asked` means for `app` with `backend` (`None`: the app's own entry point,
/// exported as it is). An app's own `wasi:cli/run` gets the run wrapper, which flushes the
/// backend's outbox after it; a `wasi:http/incoming-handler` is exported unwrapped.
pub fn resolve(
    app: &ComponentInfo,
    asked: Trigger,
    backend: &Adapter,
) -> Result<Option<Driver>, TriggerError> {
    let handler = app.exports_handler();
    let entry = app.entry_points().first().map(|(_, name)| name.to_string());
    let own_entry = || {
        let wrapped = matches!(app.entry_points().first(), Some((EntryPoint::CliRun, _)));
        Ok(wrapped.then_some(Driver::Wrap))
    };
    match asked {
        Trigger::Auto => match (handler, entry) {
            (true, None) if backend.pulls => Ok(Some(Driver::Run)),
            (true, None) => Ok(Some(Driver::Http)),
            (false, Some(_)) => own_entry(),
            (true, Some(entry)) => Err(TriggerError::AmbiguousTrigger { entry }),
            (false, None) => Err(TriggerError::NothingToRun),
        },
        Trigger::Run | Trigger::Http if !handler => Err(TriggerError::NoHandler { trigger: asked }),
        Trigger::Run if !backend.pulls => Err(TriggerError::BackendCannotPull {
            backend: backend.name,
        }),
        Trigger::Run => Ok(Some(Driver::Run)),
        Trigger::Http => Ok(Some(Driver::Http)),
        Trigger::None if entry.is_none() => Err(TriggerError::NothingToRun),
        Trigger::None => own_entry(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters;

    fn info(imports: &[&str], exports: &[&str]) -> ComponentInfo {
        ComponentInfo::with_names(imports, exports)
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
            resolve(&handler, Trigger::Auto, http).unwrap(),
            Some(Driver::Http),
            "a backend that cannot pull is driven by http requests"
        );
        assert!(matches!(
            resolve(&handler, Trigger::Run, http),
            Err(TriggerError::BackendCannotPull { .. })
        ));
        assert_eq!(
            resolve(&handler, Trigger::Auto, local).unwrap(),
            Some(Driver::Run)
        );
        assert_eq!(
            resolve(&runner, Trigger::Auto, local).unwrap(),
            Some(Driver::Wrap),
            "an app's own run is wrapped, so the outbox is flushed after it"
        );
        let server = info(&[], &["wasi:http/incoming-handler@0.2.0"]);
        assert_eq!(resolve(&server, Trigger::Auto, local).unwrap(), None);
        assert!(matches!(
            resolve(&both, Trigger::Auto, local),
            Err(TriggerError::AmbiguousTrigger { .. })
        ));
        assert_eq!(
            resolve(&both, Trigger::Run, local).unwrap(),
            Some(Driver::Run)
        );
        assert_eq!(
            resolve(&both, Trigger::None, local).unwrap(),
            Some(Driver::Wrap)
        );
        assert!(matches!(
            resolve(&neither, Trigger::Auto, local),
            Err(TriggerError::NothingToRun)
        ));
        assert!(matches!(
            resolve(&runner, Trigger::Run, local),
            Err(TriggerError::NoHandler { .. })
        ));
        assert_eq!(
            resolve(&both, Trigger::Http, local).unwrap(),
            Some(Driver::Http)
        );
        assert!(matches!(
            resolve(&runner, Trigger::Http, local),
            Err(TriggerError::NoHandler { .. })
        ));
        assert!(matches!(
            resolve(&handler, Trigger::None, local),
            Err(TriggerError::NothingToRun)
        ));
    }
}
