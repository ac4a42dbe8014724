//! RabbitMQ from the outside for the AMQP tests and bench: a native client (lapin, not the
//! adapter's codec) on the machine's broker (127.0.0.1:5672, user guest), and a [`Node`] of
//! a test's own for the tests that stop the broker.

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nats::within;
use super::tls::Pki;

/// RabbitMQ's default user, passed explicitly (the adapter assumes no credentials).
pub const GUEST: [(&str, &str); 2] = [("AMQP_USERNAME", "guest"), ("AMQP_PASSWORD", "guest")];

/// GUEST plus `extra` environment pairs.
pub fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    GUEST.iter().copied().chain(extra.iter().copied()).collect()
}

/// The machine's shared broker, as lapin's URL.
pub const SHARED: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A native connection to the machine's broker and a channel in confirm mode.
pub async fn native() -> (Connection, Channel) {
    native_at(SHARED).await
}

/// A native connection to `url` (lapin's form, with credentials) and a channel in confirm
/// mode.
pub async fn native_at(url: &str) -> (Connection, Channel) {
    let connection = within(
        "connection to RabbitMQ",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "cannot connect to RabbitMQ at {url}: {e}; start rabbitmq-server (.ci/services does)"
        )
    });
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    (connection, channel)
}

/// An exclusive queue bound to `amq.topic` with `key`, consumed with manual acks.
pub async fn listen(channel: &Channel, key: &str) -> Consumer {
    bind(channel, "amq.topic", key).await
}

/// An exclusive queue bound to `exchange` with `key`, consumed with manual acks.
pub async fn bind(channel: &Channel, exchange: &str, key: &str) -> Consumer {
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    bind_queue(channel, "", options, exchange, key).await
}

/// The durable queue `queue` (declared if missing) bound to `exchange` with `key`, consumed
/// with manual acks: what it holds survives a broker restart, after which this consumes it
/// again.
pub async fn bind_durable(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Consumer {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    bind_queue(channel, queue, options, exchange, key).await
}

/// Declares `queue` with `options` (empty: a server-named one), binds it to `exchange` with
/// `key` and consumes it with manual acks.
async fn bind_queue(
    channel: &Channel,
    queue: &str,
    options: QueueDeclareOptions,
    exchange: &str,
    key: &str,
) -> Consumer {
    let queue = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("declare");
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume")
}

/// Publishes `data` to `exchange` with `routing_key`, mandatory (as the AMQP backend
/// publishes), and waits for the broker's confirm.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    data: &[u8],
    properties: BasicProperties,
) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            data,
            properties,
        )
        .await
        .expect("publish");
    within("publisher confirm", confirm)
        .await
        .expect("confirmed");
}

/// How long a node may take to start or to stop.
const NODE_LIMIT: Duration = Duration::from_secs(60);

/// A RabbitMQ node of the test's own (`rabbitmq-server` with its own node name, AMQP and
/// distribution ports on 127.0.0.1, no plugins, data and logs in a temporary directory), for
/// tests that stop or restart the broker without disturbing the machine's shared one.
/// Started again on the same ports and directory, it keeps its durable queues and
/// persistent messages. Killed (the Erlang VM itself) when dropped.
pub struct Node {
    name: String,
    port: u16,
    dist_port: u16,
    /// The TLS listener's port, for a node made by [`Node::start_tls`].
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
    beam: Option<Child>,
}

impl Node {
    /// Starts a node and waits until it speaks AMQP.
    pub fn start() -> Node {
        Node::start_with_config("")
    }

    /// Starts a node whose `rabbitmq.conf` is `config` and waits until it speaks AMQP.
    pub fn start_with_config(config: &str) -> Node {
        Node::start_with_files(config, "[].", None)
    }

    /// Starts a node that also serves AMQP over TLS, on a port of its own
    /// ([`Node::tls_url`]), at 127.0.0.1 and 127.0.0.2 (the same listener options; the certificates name only 127.0.0.1 and
    /// `localhost`), and waits until both ports accept connections. It serves
    /// `pki.server`, or `pki.expired` to a client that asks for `localhost` by SNI (so one
    /// node shows both; a client connecting to an IP address sends no SNI). With `mutual`,
    /// every TLS client must present a certificate from the test CA
    /// (`verify_peer`, `fail_if_no_peer_cert`); the login is still AMQP PLAIN.
    ///
    /// The TLS settings go into `advanced.config`: `rabbitmq.conf` has no `sni_hosts`.
    pub fn start_tls(pki: &Pki, mutual: bool) -> Node {
        let tls_port = super::free_port();
        let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
        let verify = match mutual {
            true => "{verify, verify_peer}, {fail_if_no_peer_cert, true}",
            false => "{verify, verify_none}",
        };
        let advanced = format!(
            "[{{rabbit, [\n\
             {{ssl_listeners, [{{\"127.0.0.1\", {tls_port}}}, {{\"127.0.0.2\", {tls_port}}}]}},\n\
             {{ssl_options, [{{cacertfile, {ca}}}, {{certfile, {cert}}}, {{keyfile, {key}}}, {verify},\n\
             {{sni_hosts, [{{\"localhost\", [{{certfile, {expired}}}, {{keyfile, {expired_key}}}]}}]}}]}}\n\
             ]}}].\n",
            ca = path(&pki.ca),
            cert = path(&pki.server.cert),
            key = path(&pki.server.key),
            expired = path(&pki.expired.cert),
            expired_key = path(&pki.expired.key),
        );
        Node::start_with_files("", &advanced, Some(tls_port))
    }

    /// Starts a node with `rabbitmq.conf` `config` and `advanced.config` `advanced` (Erlang
    /// terms), whose TLS listener (if any) is on `tls_port`, and waits until it speaks AMQP.
    fn start_with_files(config: &str, advanced: &str, tls_port: Option<u16>) -> Node {
        let mut free = std::iter::repeat_with(super::free_port).filter(|&p| Some(p) != tls_port);
        let port = free.next().expect("a free port");
        let dist_port = free.find(|&p| p != port).expect("a second free port");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("rabbitmq.conf"), config)
            .and_then(|()| std::fs::write(dir.path().join("advanced.config"), advanced))
            .and_then(|()| std::fs::write(dir.path().join("enabled_plugins"), "[]."))
            .and_then(|()| std::fs::write(dir.path().join("rabbitmq-env.conf"), ""))
            .expect("write the node's configuration");
        let mut node = Node {
            name: format!("{}@localhost", super::unique("msgplug")),
            port,
            dist_port,
            tls_port,
            dir,
            beam: None,
        };
        node.launch();
        node
    }

    /// The node's URL for `msgplug compose --broker`.
    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    /// The `amqps://` URL of the node's TLS listener at `host` (`127.0.0.1`, `127.0.0.2` or
    /// `localhost`), for a node made by [`Node::start_tls`].
    pub fn tls_url(&self, host: &str) -> String {
        let port = self.tls_port.expect("a node made by Node::start_tls");
        format!("amqps://{host}:{port}")
    }

    /// The node's URL for lapin, with RabbitMQ's default user.
    pub fn native_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the Erlang VM (same name, ports and directory) and waits until the AMQP port
    /// answers a protocol header with `connection.start` (and the TLS port, if any, accepts
    /// connections: it may open after the plaintext one).
    ///
    /// `RUNNING_UNDER_SYSTEMD` makes the start script exec the VM instead of keeping a shell
    /// in front of it, so the child is the VM itself; `HOME` in the temporary directory gives
    /// it an Erlang cookie of its own; the empty `rabbitmq-env.conf` keeps the machine's node
    /// name and listener out.
    pub fn launch(&mut self) {
        assert!(self.beam.is_none(), "the node is already running");
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join("console.log")).expect("console log");
        let started = Instant::now();
        let beam = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", dir)
            .env("RUNNING_UNDER_SYSTEMD", "true")
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("console log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run rabbitmq-server: {e}; install rabbitmq-server (.ci/services does)"
                )
            });
        self.beam = Some(beam);
        let deadline = started + NODE_LIMIT;
        while !self.speaks_amqp() {
            if let Some(status) = self.beam.as_mut().and_then(|b| b.try_wait().ok().flatten()) {
                self.beam = None;
                panic!(
                    "RabbitMQ node {} exited ({status}):\n{}",
                    self.name,
                    self.console()
                );
            }
            assert!(
                Instant::now() < deadline,
                "RabbitMQ node {} did not start within {NODE_LIMIT:?}:\n{}",
                self.name,
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(tls_port) = self.tls_port {
            while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "RabbitMQ node {} has no TLS listener on port {tls_port} after {NODE_LIMIT:?}:\n{}",
                    self.name,
                    self.console()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        println!(
            "RabbitMQ node {} ready on port {} in {:.1?}",
            self.name,
            self.port,
            started.elapsed()
        );
    }

    /// Whether the AMQP port answers a protocol header with a method frame.
    fn speaks_amqp(&self) -> bool {
        let answer = || -> std::io::Result<u8> {
            let address = ([127, 0, 0, 1], self.port).into();
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"AMQP\x00\x00\x09\x01")?;
            let mut frame_type = [0];
            stream.read_exact(&mut frame_type)?;
            Ok(frame_type[0])
        };
        answer().is_ok_and(|frame_type| frame_type == 1)
    }

    /// The VM's console output so far.
    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Stops the node gracefully (SIGTERM: RabbitMQ shuts down in order, every connection
    /// drops) and waits until the VM has exited; SIGKILL if it takes longer than the limit.
    pub fn stop(&mut self) {
        let mut beam = self.beam.take().expect("the node is running");
        let started = Instant::now();
        let terminated = Command::new("kill")
            .args(["-TERM", &beam.id().to_string()])
            .status()
            .expect("run kill");
        assert!(terminated.success(), "kill -TERM {} failed", beam.id());
        while beam.try_wait().expect("wait for the node").is_none() {
            if started.elapsed() > NODE_LIMIT {
                let _ = beam.kill();
                let _ = beam.wait();
                panic!(
                    "RabbitMQ node {} did not stop within {NODE_LIMIT:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "RabbitMQ node {} stopped in {:.1?}",
            self.name,
            started.elapsed()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut beam) = self.beam.take() {
            let _ = beam.kill();
            let _ = beam.wait();
        }
    }
}
