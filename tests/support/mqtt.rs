//! A `mosquitto` of the test's own, for the conformance suite's MQTT backend
//! (`tests/conformance/mqtt.rs`) and any MQTT test that must stop or configure its broker.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

use super::nats::within;
use super::tls::{Pem, Pki};
use super::unique;

/// How long the broker may take to start or to stop.
const LIMIT: Duration = Duration::from_secs(30);

/// A `mosquitto -c CONFIG` on a free port, with the config written by the test and
/// persistence in a temporary directory (sessions and queued messages are saved when it
/// stops gracefully); killed when dropped.
pub struct Mosquitto {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    /// Its log lines (stderr, `log_type all`) since it last started listening.
    log: Option<Receiver<String>>,
}

impl Mosquitto {
    /// Writes the config and starts the broker (anonymous clients allowed).
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(|_| String::new())
    }

    /// Like [`Mosquitto::start`], with config lines that `extra` makes (given the broker's
    /// directory); with a `password_file` among them, anonymous clients are refused.
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> Mosquitto {
        let port = super::free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        // Started as root, mosquitto drops to its own user, which must write the store.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("make the store writable");
        let extra = extra(dir.path());
        let anonymous = !extra.contains("password_file");
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous {anonymous}\npersistence true\n\
             persistence_location {}/\nlog_dest stderr\nlog_type all\n{extra}",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("write the config");
        let mut broker = Mosquitto {
            child: None,
            port,
            dir,
            log: None,
        };
        broker.launch();
        broker
    }

    /// Writes a password file with `user` and `password` into the broker's directory and
    /// returns the config line naming it (for [`Mosquitto::start_with`]).
    pub fn password_file(dir: &Path, user: &str, password: &str) -> String {
        let file = dir.join("passwords");
        let status = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&file)
            .args([user, password])
            .status()
            .expect("run mosquitto_passwd (apt-get install mosquitto)");
        assert!(status.success(), "mosquitto_passwd failed");
        format!("password_file {}\n", file.display())
    }

    /// Starts a broker with two listeners: the plaintext one ([`Mosquitto::port`], for
    /// native clients) and, on the port returned, TLS with the certificate `server` (see
    /// [`Mosquitto::tls_listener`]).
    pub fn start_tls(pki: &Pki, server: &Pem, mutual: bool) -> (Mosquitto, u16) {
        let tls_port = super::free_port();
        let mut broker = Mosquitto::start_with(|dir| {
            Mosquitto::tls_listener(dir, tls_port, pki, server, mutual)
        });
        broker.wait_for_log(&format!("listen socket on port {tls_port}"));
        (broker, tls_port)
    }

    /// The config lines (for [`Mosquitto::start_with`], given the broker's directory `dir`;
    /// last, as they start a listener) of a TLS listener on `port` serving the certificate
    /// `server`, copied into `dir`, which mosquitto's own user can read. With `mutual`, it
    /// requires a client certificate from the test CA and takes the user name from its
    /// common name.
    pub fn tls_listener(dir: &Path, port: u16, pki: &Pki, server: &Pem, mutual: bool) -> String {
        let copy = |from: &Path, name: &str| {
            let to = dir.join(name);
            std::fs::copy(from, &to).expect("copy a certificate for mosquitto");
            to.display().to_string()
        };
        let mut config = format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            copy(&pki.ca, "ca.pem"),
            copy(&server.cert, "server.pem"),
            copy(&server.key, "server-key.pem"),
        );
        if mutual {
            config += "require_certificate true\nuse_identity_as_username true\n";
        }
        config
    }

    /// The broker URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the process (same port, config and store) and waits until it listens.
    pub fn launch(&mut self) {
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mosquitto (apt-get install mosquitto)");
        // Read to the end (in a thread) so that it never blocks on a full pipe.
        let log: Receiver<String> = super::lines(child.stderr.take().expect("piped stderr"));
        self.child = Some(child);
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if line.contains("Opening ipv4 listen socket") => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "mosquitto on port {} did not start:\n{}",
                    self.port,
                    seen.join("\n")
                ),
            }
        }
        self.log = Some(log);
    }

    /// Waits (at most 30 s) for a log line containing `needle` and returns it with the lines
    /// before it (since the last call).
    pub fn wait_for_log(&mut self, needle: &str) -> Vec<String> {
        let log = self.log.as_ref().expect("the broker was started");
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "mosquitto did not log `{needle}` within {LIMIT:?}:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// Stops the broker gracefully (SIGTERM: it saves its sessions) and waits for the exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("the broker is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM mosquitto");
        let deadline = Instant::now() + LIMIT;
        while child.try_wait().expect("wait for mosquitto").is_none() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not exit within {LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A native MQTT 5 client (rumqttc): every packet it receives arrives on `packets`.
pub struct Native {
    /// The client.
    pub client: AsyncClient,
    /// What it received.
    packets: mpsc::UnboundedReceiver<Packet>,
}

impl Native {
    /// Connects with a clean session and a fresh client id.
    pub async fn connect(port: u16) -> Native {
        Native::connect_as(port, &unique("native"), true).await
    }

    /// Connects as `id`; `clean` false resumes (or starts) a persistent session.
    pub async fn connect_as(port: u16, id: &str, clean: bool) -> Native {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(clean);
        if !clean {
            options.set_session_expiry_interval(Some(60));
        }
        let (client, mut events) = AsyncClient::new(options, 1_000);
        let (tx, packets) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(packet).is_err() {
                            break;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(_) => break,
                }
            }
        });
        let mut native = Native { client, packets };
        native
            .expect("CONNACK (is mosquitto listening?)", |p| {
                matches!(p, Packet::ConnAck(_))
            })
            .await;
        native
    }

    /// Waits for a packet `wanted` accepts, dropping the others.
    pub async fn expect(&mut self, what: &str, wanted: impl Fn(&Packet) -> bool) -> Packet {
        within(what, async {
            loop {
                match self.packets.recv().await {
                    Some(packet) if wanted(&packet) => return packet,
                    Some(_) => {}
                    None => panic!("the native client's connection ended waiting for {what}"),
                }
            }
        })
        .await
    }

    /// Subscribes at QoS 1 and waits for the `SUBACK`.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.expect("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await;
    }

    /// Publishes at QoS 1 (not waiting for the `PUBACK`).
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        properties: PublishProperties,
    ) {
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), properties)
            .await
            .unwrap();
    }

    /// Waits for `n` `PUBACK`s: the broker stored the messages published before.
    pub async fn confirmed(&mut self, n: usize) {
        for _ in 0..n {
            self.expect("PUBACK", |p| matches!(p, Packet::PubAck(..)))
                .await;
        }
    }

    /// The next message received.
    pub async fn next(&mut self) -> Publish {
        match self
            .expect("message", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Packet::Publish(publish) => publish,
            _ => unreachable!("only a PUBLISH is expected"),
        }
    }
}
