//! A `nats-server` of the test's own, and native-client helpers shared by `tests/nats.rs`
//! and the conformance suite's NATS backend (`tests/conformance/nats.rs`).

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use async_nats::Client;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long any single wait may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Awaits `future`, failing the test with `what` if it takes longer than [`LIMIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}"))
}

/// Connects a native client with `options`.
pub async fn connect_with(url: &str, options: async_nats::ConnectOptions) -> Client {
    within("connection to nats-server", options.connect(url))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to {url}: {e}; start a server with \
                 `nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server` (.ci/run does)"
            )
        })
}

use super::unique;

/// Returns once the server has processed everything `client` sent before, so the
/// subscriptions made before are live: a message to itself makes a round trip.
pub async fn round_trip(client: &Client) {
    let subject = unique("sync");
    let mut echo = client.subscribe(subject.clone()).await.expect("subscribe");
    client.publish(subject, "".into()).await.expect("publish");
    within("round trip through the server", echo.next()).await;
}

/// A `nats-server` of the test's own on a free port, with JetStream in a temporary store;
/// killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
}

impl Server {
    /// Starts a server with `extra` arguments and waits until it is ready.
    pub async fn start(extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Server {
            child: None,
            port,
            store: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch().await;
        server
    }

    /// The URL of the server.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process (on the same port and store) and waits for `Server is ready`.
    pub async fn launch(&mut self) {
        let program = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let mut child = Command::new(&program)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{program}`: {e}; install nats-server (`apt-get install \
                     nats-server`) or point $NATS_SERVER at it"
                )
            });
        let mut log = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(LIMIT, async {
            while let Ok(Some(line)) = log.next_line().await {
                let ready = line.contains("Server is ready");
                seen.push(line);
                if ready {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            ready == Ok(true),
            "nats-server on port {} did not start:\n{}",
            self.port,
            seen.join("\n")
        );
        // Keep reading its log so the pipe never fills up.
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        self.child = Some(child);
    }

    /// Stops the server with SIGTERM and waits until it has exited.
    ///
    /// SIGTERM rather than SIGKILL: nats-server 2.9 acknowledges a JetStream publish before
    /// its file store has written it out, so SIGKILL may lose messages the server itself
    /// had accepted; that would test the server, not the app. A SIGTERM still drops every
    /// connection at once, which is the outage the app has to survive.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        let pid = child.id().expect("the server has a pid");
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(killed.success(), "kill -TERM {pid} failed");
        within("exit of nats-server", child.wait())
            .await
            .expect("wait for nats-server");
    }
}
