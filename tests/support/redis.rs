//! A `redis-server` of the test's own and the native client's connection, shared by
//! `tests/redis.rs` and the conformance suite's Redis backend (`tests/conformance/redis.rs`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

impl Server {
    /// Starts a server with `extra` arguments and waits until it answers.
    pub fn start(extra: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            port: super::free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.launch();
        server
    }

    /// The URL of the server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
