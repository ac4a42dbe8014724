//! Composed apps as processes for the broker tests (`tests/nats.rs`, `tests/mqtt.rs`,
//! `tests/amqp.rs`): `wasmtime run -S inherit-network` with its
//! stderr read line by line (waiting for `subscribed to` and other log lines), every wait
//! bounded, every process killed when its guard drops.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::nats::{within, LIMIT};

/// How long an app may take to log that it subscribed: `wasmtime run` compiles the whole
/// component first, and the 18 MB componentize-py app took 28 to 47 s of that on a loaded
/// 2-core machine (more than [`LIMIT`]).
const START_LIMIT: Duration = Duration::from_secs(120);

/// A composed component running on `wasmtime run -S inherit-network`, killed when dropped.
pub struct App {
    /// The `wasmtime` process.
    child: Child,
    /// Its stderr lines not read yet.
    lines: mpsc::UnboundedReceiver<String>,
    /// Its stderr lines read so far.
    pub stderr: Vec<String>,
}

impl App {
    /// Starts `component` with `--env` pairs, stdin closed and stderr read line by line.
    pub fn start(component: &Path, env: &[(&str, &str)]) -> App {
        App::start_with(&["-S", "inherit-network"], component, env)
    }

    /// Like [`App::start`], with `flags` (such as `-S inherit-network`) after `wasmtime run`.
    pub fn start_with(flags: &[&str], component: &Path, env: &[(&str, &str)]) -> App {
        let mut command = super::wasmtime();
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

    /// The process id of the `wasmtime` process (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the app has not been waited for")
    }

    /// Starts `component` and waits (at most [`START_LIMIT`]) until it logs `subscribed to`.
    pub async fn subscribed(component: &Path, env: &[(&str, &str)]) -> App {
        let mut app = App::start(component, env);
        app.wait_for_within("subscribed to", 1, START_LIMIT).await;
        app
    }

    /// Like [`App::subscribed`], with `flags` after `wasmtime run` (as in [`App::start_with`]).
    pub async fn subscribed_with(flags: &[&str], component: &Path, env: &[(&str, &str)]) -> App {
        let mut app = App::start_with(flags, component, env);
        app.wait_for_within("subscribed to", 1, START_LIMIT).await;
        app
    }

    /// Waits (at most [`LIMIT`]) until `count` stderr lines (counted since the start)
    /// contain `needle`.
    pub async fn wait_for(&mut self, needle: &str, count: usize) {
        self.wait_for_within(needle, count, LIMIT).await
    }

    /// Waits at most `limit` until `count` stderr lines (counted since the start) contain
    /// `needle`.
    pub async fn wait_for_within(&mut self, needle: &str, count: usize, limit: Duration) {
        let seen = |stderr: &[String]| stderr.iter().filter(|l| l.contains(needle)).count();
        let found = tokio::time::timeout(limit, async {
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
                "the app did not log `{needle}` {count} time(s) within {limit:?}; stderr:\n{}",
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

/// The lines of `stderr` that the example app wrote (`reply: ...`, `requester: ...`),
/// leaving out what the adapter logs.
pub fn app_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("msgplug"))
        .collect()
}
