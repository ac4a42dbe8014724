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
    /// The `nats-server` binary it runs.
    program: String,
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    store: tempfile::TempDir,
    extra: Vec<String>,
}

impl Server {
    /// Starts a server (`$NATS_SERVER`, or `nats-server` on the PATH) with `extra`
    /// arguments and waits until it is ready.
    pub async fn start(extra: &[&str]) -> Server {
        let program = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        Server::start_program(&program, extra).await
    }

    /// Starts the `nats-server` binary `program` with `extra` arguments and waits until it
    /// is ready.
    pub async fn start_program(program: &str, extra: &[&str]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Server {
            program: program.to_string(),
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
        let program = &self.program;
        let mut child = Command::new(program)
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

/// An operator, an account and a user of that account, as `nsc` would make them, for a
/// server in operator (JWT) mode: [`Operator::server_config`] and the user's `.creds`.
/// (The system account is there because JetStream needs one in operator mode.)
pub struct Operator {
    operator: nkeys::KeyPair,
    system: nkeys::KeyPair,
    account: nkeys::KeyPair,
}

impl Operator {
    /// A new operator with one account.
    pub fn generate() -> Operator {
        Operator {
            operator: nkeys::KeyPair::new_operator(),
            system: nkeys::KeyPair::new_account(),
            account: nkeys::KeyPair::new_account(),
        }
    }

    /// The nats-server configuration that trusts the operator and knows the account
    /// (`resolver: MEMORY`, the account JWT preloaded).
    pub fn server_config(&self) -> String {
        let operator = jwt(
            &self.operator,
            &self.operator.public_key(),
            serde_json::json!({
                "system_account": self.system.public_key(), "type": "operator", "version": 2,
            }),
        );
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        let account = |key: &nkeys::KeyPair| {
            let claims =
                serde_json::json!({ "limits": unlimited, "type": "account", "version": 2 });
            format!(
                "{}: {}",
                key.public_key(),
                jwt(&self.operator, &key.public_key(), claims)
            )
        };
        format!(
            "operator: {operator}\nsystem_account: {}\nresolver: MEMORY\n\
             resolver_preload: {{\n{}\n{}\n}}\n",
            self.system.public_key(),
            account(&self.system),
            account(&self.account),
        )
    }

    /// The `.creds` file content of a new user of the account, signed by `signer`
    /// (the account's key for a good user).
    pub fn creds_signed_by(&self, signer: &nkeys::KeyPair) -> String {
        let user = nkeys::KeyPair::new_user();
        let claims = serde_json::json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        });
        let token = jwt(signer, &user.public_key(), claims);
        let seed = user.seed().expect("a user seed");
        format!(
            "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }

    /// The `.creds` of a new user of the account.
    pub fn creds(&self) -> String {
        self.creds_signed_by(&self.account)
    }
}

/// A NATS JWT: `claims` (the `nats` part) about `subject`, issued and signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, claims: serde_json::Value) -> String {
    use base64::Engine;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let payload = serde_json::json!({
        "jti": unique("jti"),
        "iat": now,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": subject,
        "nats": claims,
    });
    let signed = format!("{header}.{}", encode(payload.to_string().as_bytes()));
    let signature = issuer.sign(signed.as_bytes()).expect("signing a JWT");
    format!("{signed}.{}", encode(&signature))
}
