//! End to end: compose the example apps with the `local` backend and run the output on the
//! real `wasmtime` CLI, feeding NDJSON on stdin and asserting on stdout, stderr and the exit
//! status — what a user of the local backend relies on.
//!
//! The examples are built once (`examples/build.sh`); every test composes into its own temp
//! directory. No test sleeps: processes are synchronised through their pipes, and a watchdog
//! only bounds how long a hung run may take before the test fails.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Output, Stdio};

use support::{compose, compose_app, finish, spawn, text, wasmtime_run};

/// Runs `component` with `stdin` as its whole input.
fn run(component: &Path, stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = wasmtime_run(component, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmtime");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    finish(child)
}

fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    text(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line {l:?}: {e}")))
        .collect()
}

#[test]
fn a_handler_republishes_with_content_type_and_metadata_in_the_documented_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "transform", &[]);
    let input = concat!(
        r#"{"topic":"orders","data":"hello","content_type":"text/plain","metadata":{"id":"7","b":"x"}}"#,
        "\n\n",
        r#"{"topic":"orders.eu","data_base64":"aGkgdGhlcmU="}"#,
        "\n",
    );
    let output = run(&out, input, &[]);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        concat!(
            r#"{"topic":"orders.upper","data":"HELLO","content_type":"text/plain","metadata":{"id":"7","b":"x","transformed-by":"transform"}}"#,
            "\n",
            r#"{"topic":"orders.eu.upper","data":"HI THERE","metadata":{"transformed-by":"transform"}}"#,
            "\n",
        )
    );
    assert_eq!(text(&output.stderr), "");
}

#[test]
fn handler_errors_are_reported_with_the_topic_and_the_run_goes_on_to_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "transform", &[]);
    let input = concat!(
        r#"{"topic":"a","data":"one"}"#,
        "\n",
        r#"{"topic":"bin","data_base64":"//79"}"#,
        "\n",
        r#"{"topic":"b","data":"two"}"#,
        "\n",
    );
    let output = run(&out, input, &[]);
    assert_eq!(output.status.code(), Some(1));
    let topics: Vec<_> = json_lines(&output.stdout)
        .iter()
        .map(|m| m["topic"].clone())
        .collect();
    assert_eq!(topics, ["a.upper", "b.upper"]);
    assert_eq!(
        text(&output.stderr),
        "msgplug: message on `bin` failed: payload is not UTF-8 text\nmsgplug: 1 of 3 messages failed\n"
    );
}

#[test]
fn malformed_lines_are_rejected_with_their_line_number_and_counted_as_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "transform", &[]);
    let input = concat!(
        "not json\n",
        r#"{"data":"no topic"}"#,
        "\n",
        r#"{"topic":"t","data":"x","data_base64":"eA=="}"#,
        "\n",
        r#"{"topic":"t","dat":"typo"}"#,
        "\n",
        r#"{"topic":"ok","data":"fine"}"#,
        "\n",
    );
    let output = run(&out, input, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        json_lines(&output.stdout).len(),
        1,
        "the valid line is still handled"
    );
    let stderr = text(&output.stderr);
    for line in 1..=4 {
        assert!(
            stderr.contains(&format!("msgplug: stdin line {line}")),
            "line {line} not reported:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("`dat`"),
        "the unknown key is named:\n{stderr}"
    );
    assert!(
        stderr.ends_with("msgplug: 4 of 5 messages failed\n"),
        "{stderr}"
    );
}

#[test]
fn subscriptions_filter_topics_and_the_environment_overrides_them_at_run_time() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "transform", &["--subscribe", "orders.*"]);
    let input = concat!(
        r#"{"topic":"orders.new","data":"a"}"#,
        "\n",
        r#"{"topic":"audit.x","data":"b"}"#,
        "\n",
        r#"{"topic":"orders.a.b","data":"c"}"#,
        "\n",
    );
    let baked = run(&out, input, &[]);
    assert!(baked.status.success(), "{}", text(&baked.stderr));
    let topics: Vec<_> = json_lines(&baked.stdout)
        .iter()
        .map(|m| m["topic"].clone())
        .collect();
    assert_eq!(topics, ["orders.new.upper"]);
    assert!(text(&baked.stderr)
        .contains("stdin line 2: topic `audit.x` matches no subscription; skipped"));

    let overridden = run(&out, input, &[("MSGPLUG_SUBSCRIBE", "audit.>,orders.a.>")]);
    assert!(overridden.status.success(), "{}", text(&overridden.stderr));
    let topics: Vec<_> = json_lines(&overridden.stdout)
        .iter()
        .map(|m| m["topic"].clone())
        .collect();
    assert_eq!(topics, ["audit.x.upper", "orders.a.b.upper"]);
}

#[test]
fn empty_input_is_a_clean_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "transform", &[]);
    let output = run(&out, "", &[]);
    assert!(output.status.success());
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
}

#[test]
fn a_publish_only_app_keeps_its_own_entry_point_and_sends() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "publisher", &[]);
    let output = run(&out, "", &[("COUNT", "2")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        concat!(
            r#"{"topic":"greetings","data":"hello #1","content_type":"text/plain","metadata":{"seq":"1"}}"#,
            "\n",
            r#"{"topic":"greetings","data":"hello #2","content_type":"text/plain","metadata":{"seq":"2"}}"#,
            "\n",
        )
    );
}

#[test]
fn a_responder_replies_to_the_reply_address_and_ignores_messages_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "responder", &[]);
    let input = concat!(
        r#"{"topic":"greet","data":"ann","reply_to":"_INBOX.abc"}"#,
        "\n",
        r#"{"topic":"greet","data":"bob"}"#,
        "\n",
    );
    let output = run(&out, input, &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "{\"topic\":\"_INBOX.abc\",\"data\":\"hello, ann\",\"content_type\":\"text/plain\"}\n"
    );
}

/// Copies `from` into `to` until `from` ends, then drops `to` (closing that pipe).
fn pipe(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
    })
}

#[test]
fn request_reply_works_between_two_composed_components_wired_stdout_to_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let responder = compose(tmp.path(), "responder", &[]);
    let requester = compose(tmp.path(), "requester", &[]);
    let mut server = spawn(&responder, &[("REPLIES", "2")]);
    let mut client = spawn(
        &requester,
        &[("NAME", "world"), ("EXPECT", "2"), ("TIMEOUT_MS", "30000")],
    );
    let to_server = pipe(client.stdout.take().unwrap(), server.stdin.take().unwrap());
    let to_client = pipe(server.stdout.take().unwrap(), client.stdin.take().unwrap());

    let client = finish(client);
    to_server.join().unwrap(); // the client exited: the server's stdin is now closed
    let server = finish(server);
    to_client.join().unwrap();
    assert!(
        client.status.success(),
        "requester: {}",
        text(&client.stderr)
    );
    assert_eq!(
        text(&client.stderr),
        "reply: hello, world (1/2)\nreply: hello, world (2/2)\n"
    );
    assert!(
        server.status.success(),
        "responder: {}",
        text(&server.stderr)
    );
}

#[test]
fn a_request_sends_a_fresh_inbox_and_times_out_when_no_reply_comes() {
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(tmp.path(), "requester", &[]);
    let mut client = spawn(&requester, &[("TIMEOUT_MS", "300")]);
    // Keep stdin open and silent: only the timeout can end the request.
    let stdin = client.stdin.take().unwrap();
    let output = finish(client);
    drop(stdin);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stderr), "requester: request failed: timeout\n");
    let sent = json_lines(&output.stdout);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["topic"], "greet");
    assert_eq!(sent[0]["data"], "world");
    let inbox = sent[0]["reply_to"].as_str().expect("reply_to is set");
    assert!(
        inbox.starts_with("_INBOX.") && inbox.len() > "_INBOX.".len() + 8,
        "{inbox}"
    );
}

#[test]
fn a_request_fails_with_a_connection_error_when_stdin_ends_before_a_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let requester = compose(tmp.path(), "requester", &[]);
    let output = run(&requester, r#"{"topic":"unrelated","data":"x"}"#, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "requester: request failed: connection: stdin ended before a reply on `_INBOX."
        ),
        "{stderr}"
    );
}

#[test]
fn composed_outputs_import_only_standard_wasi_0_2() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["transform", "publisher", "responder", "requester"] {
        let out = compose(tmp.path(), name, &[]);
        let info = msgplug::analyze::analyze(&std::fs::read(&out).unwrap()).unwrap();
        for import in &info.imports {
            let version = msgplug::analyze::version_of(import).unwrap_or("");
            assert!(
                import.starts_with("wasi:") && version.starts_with("0.2."),
                "{name}: `{import}` is not a WASI 0.2.x import"
            );
        }
        assert!(
            !info.entry_points().is_empty(),
            "{name} exports no entry point"
        );
    }
}

/// A build pipeline copies or serves the output: it gets the mode a new file gets (as with
/// `cp` or `wac compose -o`), and an overwritten output keeps its mode, as `cp` keeps it.
#[cfg(unix)]
#[test]
fn the_output_gets_the_usual_mode_of_a_new_file_and_an_overwrite_keeps_the_old_mode() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // What this process's umask makes of a new file (0644 under the common umask 022).
    let plain = tmp.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let wac = tmp.path().join("out.wac");
    let out = compose(
        tmp.path(),
        "transform",
        &["--emit-wac", wac.to_str().unwrap()],
    );
    for written in [&out, &wac, &wac.with_extension("config.wasm")] {
        assert_eq!(
            mode(written),
            mode(&plain),
            "{} has mode {:o}",
            written.display(),
            mode(written)
        );
    }

    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(compose(tmp.path(), "transform", &[]), out);
    assert_eq!(mode(&out), 0o640, "an overwritten output keeps its mode");
}

#[test]
fn the_emitted_wac_composes_the_same_component_with_wac_itself() {
    use wac_parser::Document;
    use wac_types::BorrowedPackageKey;

    let tmp = tempfile::tempdir().unwrap();
    let wac_file = tmp.path().join("transform.wac");
    let ours = compose(
        tmp.path(),
        "transform",
        &["--emit-wac", wac_file.to_str().unwrap()],
    );
    let adapters = tmp.path().join("adapters");
    let extracted = support::msgplug()
        .args(["adapters", "--extract"])
        .arg(&adapters)
        .output()
        .unwrap();
    assert!(extracted.status.success());

    // The packages the WAC header lists, from the files msgplug wrote.
    let source = std::fs::read_to_string(&wac_file).unwrap();
    let document = Document::parse(&source).unwrap_or_else(|e| panic!("{e}\n{source}"));
    let mut packages = indexmap::IndexMap::new();
    let files = [
        ("user:app", support::example("transform")),
        ("msgplug:config", wac_file.with_extension("config.wasm")),
        ("msgplug:backend-local", adapters.join("backend-local.wasm")),
        ("msgplug:driver-run", adapters.join("driver-run.wasm")),
    ];
    for (name, path) in &files {
        let key = BorrowedPackageKey {
            name,
            version: None,
        };
        packages.insert(key, std::fs::read(path).unwrap());
    }
    let resolution = document
        .resolve(packages)
        .unwrap_or_else(|e| panic!("the emitted WAC does not resolve: {e}\n{source}"));
    let theirs = tmp.path().join("wac.composed.wasm");
    std::fs::write(&theirs, resolution.encode(Default::default()).unwrap()).unwrap();

    let input = "{\"topic\":\"t\",\"data\":\"same\"}\n{\"topic\":\"x\",\"data_base64\":\"//79\"}\n";
    let (a, b) = (run(&ours, input, &[]), run(&theirs, input, &[]));
    assert_eq!(text(&a.stdout), "{\"topic\":\"t.upper\",\"data\":\"SAME\",\"metadata\":{\"transformed-by\":\"transform\"}}\n");
    assert_eq!(
        (text(&a.stdout), text(&a.stderr), a.status.code()),
        (text(&b.stdout), text(&b.stderr), b.status.code())
    );
}

#[test]
fn a_broker_override_for_another_backend_fails_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose(tmp.path(), "transform", &[]);
    let output = run(&out, "", &[("MSGPLUG_BROKER", "nats://127.0.0.1:4222")]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "msgplug: receiving failed: MSGPLUG_BROKER `nats://127.0.0.1:4222` needs the `nats` backend, \
         but this component was composed with the `local` backend; compose again with --broker nats://127.0.0.1:4222\n"
    );
}

#[test]
fn a_python_app_built_with_componentize_py_composes_and_runs_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compose_app(
        tmp.path(),
        support::python_example(),
        &["--subscribe", "notes.>"],
    );
    let input = concat!(
        r#"{"topic":"notes.a","data":"three little words","metadata":{"id":"1"}}"#,
        "\n",
        r#"{"topic":"notes.b","data_base64":"//79"}"#,
        "\n",
        r#"{"topic":"other","data":"skipped"}"#,
        "\n",
    );
    let output = run(&out, input, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        concat!(
            r#"{"topic":"notes.a.counted","data":"{\"topic\": \"notes.a\", \"words\": 3}","content_type":"application/json","metadata":{"id":"1"}}"#,
            "\n"
        )
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("msgplug: message on `notes.b` failed: payload is not UTF-8 text\n"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("msgplug: 1 of 2 messages failed\n"),
        "{stderr}"
    );
}
