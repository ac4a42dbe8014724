//! MQTT, in its three modes: `clean` (MQTT 5, clean session), `durable` (`--durable`: a
//! persistent session, each running instance with its own `MSGPLUG_CLIENT_ID`, or all of
//! them with one when a case asks for successors) and `3.1.1`
//! (`?version=3.1.1`). Every case starts a `mosquitto` of its own on a free port (a written
//! config: user `u` with password `p`, persistence on, so a graceful restart keeps sessions
//! and queued messages; no limit on queued messages), checked with `rumqttc` (MQTT 5), an
//! independent native client.
//!
//! The native clients keep persistent sessions too, so what the apps send while the broker
//! restarts is still observed. Metadata is MQTT 5 user properties; the adapter's own
//! `mqtt-*` metadata on received messages (`mqtt-dup` on a redelivery, relayed by the apps) is
//! the broker's and left out, like NATS's `Nats-*` headers.
//!
//! The TLS variant (`backend-mqtt-tls`) runs every case again with the apps on a TLS
//! listener of the same broker (certificates made by `support::tls`), composed with
//! `mqtts://` and `--tls-ca`; the native clients stay on the plaintext listener.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use msgplug::adapters::Mode;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Event, MqttOptions};

use crate::support::mqtt::Mosquitto;
use crate::support::tls::Pki;
use crate::support::unique;
use crate::{run_with_network, Backend, Broker, Credentials, Input, Msg, LIMIT};

/// The user of every case's broker.
const USER: &str = "u";

/// The MQTT backend: plaintext (`backend-mqtt`) or over TLS (`backend-mqtt-tls`).
pub struct Mqtt {
    /// Whether the apps use a TLS listener and `mqtts://`.
    pub tls: bool,
}

impl Backend for Mqtt {
    fn adapter(&self) -> &'static str {
        match self.tls {
            false => "backend-mqtt",
            true => "backend-mqtt-tls",
        }
    }

    fn start(&self, mode: &Mode) -> Box<dyn Broker> {
        let kind = match mode.name {
            "clean" => Kind::Clean,
            "durable" => Kind::Durable,
            "3.1.1" => Kind::V311,
            other => panic!("no conformance hook for MQTT mode `{other}`"),
        };
        let tls = self.tls.then(|| (Pki::new(), crate::support::free_port()));
        let mut mosquitto = Mosquitto::start_with(|dir| {
            let password = Mosquitto::password_file(dir, USER, Credentials::Right.password());
            let listener = match &tls {
                Some((pki, port)) => Mosquitto::tls_listener(dir, *port, pki, &pki.server, false),
                None => String::new(),
            };
            format!("{password}max_queued_messages 0\nset_tcp_nodelay true\n{listener}")
        });
        if let Some((_, port)) = &tls {
            mosquitto.wait_for_log(&format!("listen socket on port {port}"));
        }
        Box::new(MqttBroker {
            tls,
            native: Native::connect(mosquitto.port),
            mosquitto,
            kind,
            outputs: HashMap::new(),
            session: None,
        })
    }
}

/// How the apps of a case use MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// MQTT 5 with a clean session.
    Clean,
    /// MQTT 5 with a persistent session (`--durable`).
    Durable,
    /// MQTT 3.1.1.
    V311,
}

/// A message received by a native client, with what a reply needs: the response topic and
/// the correlation data.
type Received = (Msg, Option<(String, Option<Bytes>)>);

/// A native client (rumqttc, MQTT 5, persistent session) whose event loop runs in a thread of
/// its own; messages go to the receiver of their topic, acknowledgements to `acks`.
struct Native {
    client: Client,
    routes: Arc<Mutex<HashMap<String, Sender<Received>>>>,
    /// One `()` per `PUBACK` or `SUBACK`.
    acks: Receiver<()>,
}

impl Native {
    /// Connects to the broker on `port` and waits for the `CONNACK`.
    fn connect(port: u16) -> Native {
        let mut options = MqttOptions::new(unique("native"), "127.0.0.1", port);
        options
            .set_credentials(USER, Credentials::Right.password())
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(false)
            .set_session_expiry_interval(Some(600))
            .set_max_packet_size(Some(8 << 20));
        let (client, mut connection) = Client::new(options, 1_000);
        let routes: Arc<Mutex<HashMap<String, Sender<Received>>>> = Arc::default();
        let (ack, acks) = mpsc::channel();
        let (connected, is_connected) = mpsc::channel();
        let table = routes.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = connected.send(());
                    }
                    Ok(Event::Incoming(Packet::PubAck(..) | Packet::SubAck(..))) => {
                        let _ = ack.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                        let properties = publish.properties.unwrap_or_default();
                        let message = Msg {
                            data: publish.payload.to_vec(),
                            content_type: properties.content_type,
                            metadata: properties
                                .user_properties
                                .into_iter()
                                .filter(|(key, _)| !key.starts_with("mqtt-"))
                                .collect(),
                        };
                        let reply = properties
                            .response_topic
                            .map(|topic| (topic, properties.correlation_data));
                        if let Some(route) = table.lock().expect("routes").get(&topic) {
                            let _ = route.send((message, reply));
                        }
                    }
                    Ok(_) => {}
                    // The case dropped the client while the broker was down.
                    Err(_) if Arc::strong_count(&table) == 1 => break,
                    // The broker is down (or restarting): the next poll connects again.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        is_connected
            .recv_timeout(LIMIT)
            .expect("the native client connects to mosquitto");
        Native {
            client,
            routes,
            acks,
        }
    }

    /// Waits for `n` acknowledgements (`PUBACK`s or a `SUBACK`).
    fn acked(&self, n: usize, what: &str) {
        for _ in 0..n {
            self.acks
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("no acknowledgement of {what} within {LIMIT:?}"));
        }
    }

    /// Subscribes to `topic` at QoS 1, live when this returns; its messages go to the
    /// receiver returned.
    fn subscribe(&self, topic: &str) -> Receiver<Received> {
        let (tx, rx) = mpsc::channel();
        self.routes
            .lock()
            .expect("routes")
            .insert(topic.to_string(), tx);
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .expect("subscribe");
        self.acked(1, "a subscription");
        rx
    }

    /// Publishes at QoS 1 without waiting for the `PUBACK`.
    fn publish(&self, topic: &str, data: &[u8], properties: PublishProperties) {
        self.client
            .publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                false,
                Bytes::copy_from_slice(data),
                properties,
            )
            .expect("publish");
    }
}

/// The broker and the native client.
struct MqttBroker {
    /// Declared before the broker, so it disconnects before the broker goes.
    native: Native,
    mosquitto: Mosquitto,
    /// The certificates and the TLS listener's port, in the TLS variant.
    tls: Option<(Pki, u16)>,
    kind: Kind,
    outputs: HashMap<String, Receiver<Received>>,
    /// The session every durable instance resumes, once [`Broker::take_over_unsettled`]
    /// asked for one (otherwise each instance has its own).
    session: Option<String>,
}

impl Broker for MqttBroker {
    fn compose_args(&mut self, input: Option<Input>) -> Vec<String> {
        let (url, mut args) = match &self.tls {
            None => (self.mosquitto.url(), vec!["--broker".to_string()]),
            Some((pki, port)) => (
                format!("mqtts://127.0.0.1:{port}"),
                vec![
                    "--tls-ca".to_string(),
                    pki.ca.to_str().expect("UTF-8 path").to_string(),
                    "--broker".to_string(),
                ],
            ),
        };
        match self.kind {
            Kind::Clean => args.push(url),
            Kind::Durable => {
                args.push(url);
                // Each run replaces it with its own MSGPLUG_CLIENT_ID (`run_env`).
                args.extend(["--durable".into(), unique("app")]);
            }
            Kind::V311 => args.push(format!("{url}?version=3.1.1")),
        }
        if let Some(input) = input {
            args.extend(["--subscribe".into(), input.topic.into()]);
            if let Some(group) = input.group {
                args.extend(["--queue-group".into(), group.into()]);
            }
        }
        args
    }

    fn wasmtime_args(&mut self, _receiving: bool) -> Vec<String> {
        run_with_network()
    }

    fn run_env(&self, credentials: Credentials) -> Vec<(String, String)> {
        let mut env = vec![
            ("MQTT_USERNAME".into(), USER.into()),
            ("MQTT_PASSWORD".into(), credentials.password().into()),
        ];
        if self.kind == Kind::Durable {
            // Instances in one group need a session each, successors the same one.
            let client_id = self.session.clone().unwrap_or_else(|| unique("app"));
            env.push(("MSGPLUG_CLIENT_ID".into(), client_id));
        }
        env
    }

    fn ready_line(&self) -> Option<&'static str> {
        Some("subscribed to")
    }

    fn listen(&mut self, topic: &str) {
        let output = self.native.subscribe(topic);
        self.outputs.insert(topic.to_string(), output);
    }

    fn publish(&mut self, topic: &str, message: &Msg) {
        self.publish_all(topic, std::slice::from_ref(message));
    }

    fn publish_all(&mut self, topic: &str, messages: &[Msg]) {
        for message in messages {
            let properties = PublishProperties {
                content_type: message.content_type.clone(),
                user_properties: message.metadata.clone().into_iter().collect(),
                ..PublishProperties::default()
            };
            self.native.publish(topic, &message.data, properties);
        }
        // Until the broker stored them all (it may be restarting: rumqttc sends them again).
        self.native.acked(messages.len(), "a publish");
    }

    fn next(&mut self, topic: &str, limit: Duration) -> Option<Msg> {
        let output = self
            .outputs
            .get(topic)
            .unwrap_or_else(|| panic!("listen to `{topic}` first"));
        output.recv_timeout(limit).ok().map(|(message, _)| message)
    }

    fn respond(&mut self, topic: &str, replies: usize) {
        // A client of its own, so that its PUBACKs are not counted as the case's.
        let responder = Native::connect(self.mosquitto.port);
        let requests = responder.subscribe(topic);
        std::thread::spawn(move || {
            let Ok((request, reply)) = requests.recv_timeout(LIMIT) else {
                return;
            };
            let (response_topic, correlation) = reply.expect("a request has a response topic");
            for k in 1..=replies {
                let properties = PublishProperties {
                    correlation_data: correlation.clone(),
                    ..PublishProperties::default()
                };
                let text = format!("hi, {} ({k}/{replies})", request.text());
                responder.publish(&response_topic, text.as_bytes(), properties);
            }
            responder.acked(replies, "a reply");
            // Keep listening (without answering) until the case ends.
            while requests.recv_timeout(LIMIT).is_ok() {}
        });
    }

    fn can_stop(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn stop(&mut self) {
        self.mosquitto.stop();
    }

    fn can_restart(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn restart(&mut self) {
        self.mosquitto.launch();
    }

    fn can_check_credentials(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn take_over_unsettled(&mut self) {
        self.session = Some(unique("app"));
    }
}
