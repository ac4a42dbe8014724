//! Azure Service Bus, **against the protocol fake** `tests/fakes/servicebus.rs` (no emulator
//! can be installed here), one fake per case. The composed apps get
//! `--broker servicebus://127.0.0.1:PORT?PlainHttpForTests=true` (plain HTTP) and the
//! SAS key from the environment; an input is a queue named by `--subscribe`, a topic the
//! queue of that name. The "native client" is the fake's own view: publishing puts a
//! message in a queue as another sender would, and what the apps send is read from the
//! queue's log of arrived messages. The fake keeps its state in memory, so it can be
//! stopped (an outage) but not restarted with what it held.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake::{FakeServiceBus, Stored};
use msgplug::adapters::Mode;

use crate::{Backend, Broker, Credentials, Input, Msg};

/// The Service Bus backend.
pub struct ServiceBus;

impl Backend for ServiceBus {
    fn adapter(&self) -> &'static str {
        "backend-servicebus"
    }

    fn start(&self, _mode: &Mode) -> Box<dyn Broker> {
        Box::new(Fake {
            fake: Some(FakeServiceBus::start()),
            read: HashMap::new(),
        })
    }
}

struct Fake {
    /// The fake, until the case stops it.
    fake: Option<FakeServiceBus>,
    /// How many arrived messages of each queue were read.
    read: HashMap<String, usize>,
}

impl Fake {
    fn fake(&self) -> &FakeServiceBus {
        self.fake.as_ref().expect("the fake runs")
    }

    /// Makes queue `name` unless it exists.
    fn queue(&self, name: &str) {
        if !self.fake().inspect(|s| s.queues.contains_key(name)) {
            self.fake().create_queue(name);
        }
    }
}

/// The message the fake stored, as a receiver sees it: custom properties arrive as JSON
/// values (strings quoted), and become the metadata.
fn msg(stored: &Stored) -> Msg {
    let metadata: BTreeMap<String, String> = stored
        .custom
        .iter()
        .map(|(k, v)| {
            let value = match serde_json::from_str::<Value>(v) {
                Ok(Value::String(text)) => text,
                _ => v.clone(),
            };
            (k.clone(), value)
        })
        .collect();
    Msg {
        data: stored.body.clone(),
        content_type: stored.content_type.clone(),
        metadata,
    }
}

impl Broker for Fake {
    fn compose_args(&mut self, input: Option<Input>) -> Vec<String> {
        let broker = format!(
            "servicebus://{}?PlainHttpForTests=true",
            self.fake().authority
        );
        let mut args = vec!["--broker".to_string(), broker];
        if let Some(input) = input {
            self.queue(input.topic);
            args.extend(["--subscribe".into(), input.topic.into()]);
        }
        args
    }

    fn wasmtime_args(&mut self, _receiving: bool) -> Vec<String> {
        vec!["run".into(), "-S".into(), "http".into()]
    }

    fn run_env(&self, credentials: Credentials) -> Vec<(String, String)> {
        let key = match credentials {
            Credentials::Right => FakeServiceBus::KEY,
            Credentials::Wrong => "d3Jvbmcta2V5",
        };
        vec![
            (
                "SERVICEBUS_SAS_KEY_NAME".into(),
                FakeServiceBus::KEY_NAME.into(),
            ),
            ("SERVICEBUS_SAS_KEY".into(), key.into()),
        ]
    }

    fn ready_line(&self) -> Option<&'static str> {
        // Messages wait in the queue until the app takes them: nothing to wait for.
        None
    }

    fn listen(&mut self, topic: &str) {
        self.queue(topic);
    }

    fn publish(&mut self, topic: &str, message: &Msg) {
        self.queue(topic);
        let custom: Vec<(&str, &str)> = message
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.fake().put(
            topic,
            &message.data,
            message.content_type.as_deref(),
            &custom,
            Value::Null,
        );
    }

    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg> {
        let deadline = Instant::now() + limit;
        let read = self.read.get(topic).copied().unwrap_or(0);
        let in_time = || {
            if Instant::now() < deadline {
                Ok(())
            } else {
                Err(format!("nothing new in `{topic}` within {limit:?}"))
            }
        };
        let found = self
            .fake()
            .wait_while(&format!("a message in `{topic}`"), in_time, |s| {
                s.queues.get(topic)?.messages.get(read).map(msg)
            })
            .ok()?;
        self.read.insert(topic.to_string(), read + 1);
        Some(found)
    }

    fn respond(&mut self, topic: &str, _replies: usize) {
        // The backend declares no `request`: a requester gets its clear error first.
        self.queue(topic);
    }

    fn can_stop(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn stop(&mut self) {
        self.fake = None;
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        Err("the fake keeps its state in memory: a restart would lose it")
    }

    fn restart(&mut self) {
        unreachable!("can_restart says no")
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn take_over_unsettled(&mut self) {
        self.fake().set_lock_duration(Duration::from_secs(5));
    }
}
