//! A `mosquitto` of the test's own, for the conformance suite's MQTT backend
//! (`tests/conformance/mqtt.rs`) and any MQTT test that must stop or configure its broker.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

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
