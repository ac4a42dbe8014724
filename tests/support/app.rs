//! A composed component run on the real `wasmtime` CLI from an async test, with its stderr
//! read line by line, and the bounded waits of the broker tests (`tests/nats.rs`,
//! `tests/kafka.rs` include it with `#[path]`).

use std::future::Future;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long any single wait may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Awaits `future`, failing the test with `what` if it takes longer than [`LIMIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}"))
}

/// A name no other test (or test run) uses: `prefix_<pid>_<nanos>_<n>`. Valid as a
/// subject token and as a stream name.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{nanos}_{n}", std::process::id())
}

/// A composed component running on `wasmtime run -S inherit-network`, killed when dropped.
pub struct App {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Vec<String>,
}

impl App {
    /// Starts `component` with `--env` pairs, stdin closed and stderr read line by line.
    pub fn start(component: &Path, env: &[(&str, &str)]) -> App {
        App::start_with(&["-S", "inherit-network"], component, env)
    }

    /// Like [`App::start`], with `flags` (such as `-S inherit-network`) after `wasmtime run`.
    pub fn start_with(flags: &[&str], component: &Path, env: &[(&str, &str)]) -> App {
        let mut command = crate::support::wasmtime();
        command.arg("run").args(flags);
        for (key, value) in env {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        command
            .arg(component)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn wasmtime");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        App {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// Starts `component` and waits until it logs `subscribed to`.
    pub async fn subscribed(component: &Path, env: &[(&str, &str)]) -> App {
        let mut app = App::start(component, env);
        app.wait_for("subscribed to", 1).await;
        app
    }

    /// Waits until `count` stderr lines (counted since the start) contain `needle`.
    pub async fn wait_for(&mut self, needle: &str, count: usize) {
        let seen = |stderr: &[String]| stderr.iter().filter(|l| l.contains(needle)).count();
        let found = tokio::time::timeout(LIMIT, async {
            while seen(&self.stderr) < count {
                match self.lines.recv().await {
                    Some(line) => self.stderr.push(line),
                    None => return false,
                }
            }
            true
        })
        .await;
        match found {
            Ok(true) => {}
            Ok(false) => panic!(
                "the app exited before logging `{needle}` {count} time(s); stderr:\n{}",
                self.stderr.join("\n")
            ),
            Err(_) => panic!(
                "the app did not log `{needle}` {count} time(s) within {LIMIT:?}; stderr:\n{}",
                self.stderr_so_far()
            ),
        }
    }

    /// Every stderr line read so far, for failure messages.
    pub fn stderr_so_far(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.stderr.push(line);
        }
        self.stderr.join("\n")
    }

    /// Waits (at most `limit`) for the app to exit; returns its status and whole stderr.
    pub async fn finish_within(mut self, limit: Duration) -> (ExitStatus, String) {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for wasmtime"),
            Err(_) => panic!(
                "the app ran longer than {limit:?}; stderr:\n{}",
                self.stderr_so_far()
            ),
        };
        while let Some(line) = within("end of stderr", self.lines.recv()).await {
            self.stderr.push(line);
        }
        (status, self.stderr.join("\n"))
    }
}

/// Runs `component` to its end (at most [`LIMIT`]); returns its status and stderr.
pub async fn run(component: &Path, env: &[(&str, &str)]) -> (ExitStatus, String) {
    App::start(component, env).finish_within(LIMIT).await
}
