//! A `redis-server` of the test's own and the native client's connection, shared by
//! `tests/redis.rs`, `tests/redis_tls.rs` and the conformance suite's Redis backend
//! (`tests/conformance/redis.rs`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::{Pem, Pki};

/// How long the server may take to listen, or a connection to open.
const LIMIT: Duration = Duration::from_secs(30);

/// Connects a native client, failing with advice when no server listens at `url`.
pub fn connect(url: &str) -> ::redis::Connection {
    ::redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| {
            panic!("cannot connect to {url}: {e}; start `redis-server` on 127.0.0.1:6379 (.ci/run does)")
        })
}

/// A `redis-server` of the test's own on a free port, with AOF (fsync always) in a
/// temporary directory, so an entry Redis accepted survives `kill -9`; killed when dropped.
pub struct Server {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// The port serving TLS besides the plaintext one ([`Server::start_tls`]).
    tls_port: Option<u16>,
}

impl Server {
    /// Starts a server with `extra` arguments and waits until it answers.
    pub fn start(extra: &[&str]) -> Server {
        Self::launched(extra.iter().map(|s| s.to_string()).collect(), None)
    }

    /// Starts a server with `extra` arguments that also serves TLS with `cert` (from the
    /// test CA of `pki`) on a second free port; `mutual` requires client certificates
    /// signed by the test CA there. The plaintext port stays for the native client.
    pub fn start_tls(pki: &Pki, cert: &Pem, mutual: bool, extra: &[&str]) -> Server {
        let tls_port = super::free_port();
        let path = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_string();
        let mut all = vec![
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".to_string(),
            path(&cert.cert),
            "--tls-key-file".to_string(),
            path(&cert.key),
            "--tls-ca-cert-file".to_string(),
            path(&pki.ca),
            "--tls-auth-clients".to_string(),
            if mutual { "yes" } else { "no" }.to_string(),
        ];
        all.extend(extra.iter().map(|s| s.to_string()));
        Self::launched(all, Some(tls_port))
    }

    /// Starts a server on a free port with `extra` arguments (and `tls_port` among them).
    fn launched(extra: Vec<String>, tls_port: Option<u16>) -> Server {
        let mut server = Server {
            child: None,
            port: super::free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra,
            tls_port,
        };
        server.launch();
        server
    }

    /// The URL of the server's plaintext port.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The `rediss://` URL of the TLS port at 127.0.0.1 (the test certificates name it).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a server started with start_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    /// The `redis://` URL of the TLS port: the plaintext scheme to a TLS port.
    pub fn plaintext_url_of_tls_port(&self) -> String {
        self.tls_url().replacen("rediss://", "redis://", 1)
    }

    /// Starts the process (same port and directory) and waits until it accepts connections.
    pub fn launch(&mut self) {
        let program = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&program)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `{program}`: {e}; install redis-server or point $REDIS_SERVER at it")
            });
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + LIMIT;
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server is not listening on {address} within {LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits until it has exited.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().expect("kill redis-server");
        child.wait().expect("wait for redis-server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
