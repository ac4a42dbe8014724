//! What a component needs from the host, and the `wasmtime` command line that provides it.

use serde::Serialize;

use crate::analyze::{ComponentInfo, EntryPoint};

/// A host capability a component's imports call for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capability {
    /// Short name (`network`, `dns`, `http-client`, ...).
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// The `wasmtime` flag that grants it, if one is needed.
    pub flag: Option<&'static str>,
}

/// (import prefix, capability) pairs, most specific first.
const CAPABILITIES: &[(&str, Capability)] = &[
    (
        "wasi:sockets/ip-name-lookup",
        Capability {
            name: "dns",
            description: "resolve host names",
            flag: Some("-S allow-ip-name-lookup"),
        },
    ),
    (
        "wasi:sockets/",
        Capability {
            name: "network",
            description: "TCP/UDP sockets",
            flag: Some("-S inherit-network"),
        },
    ),
    (
        "wasi:http/outgoing-handler",
        Capability {
            name: "http-client",
            description: "outgoing HTTP requests",
            flag: Some("-S http"),
        },
    ),
    (
        "wasi:filesystem/",
        Capability {
            name: "files",
            description: "preopened directories",
            flag: Some("--dir HOST_DIR::GUEST_DIR"),
        },
    ),
    (
        "wasi:cli/environment",
        Capability {
            name: "environment",
            description: "environment variables",
            flag: Some("--env NAME=VALUE"),
        },
    ),
    (
        "wasi:cli/std",
        Capability {
            name: "stdio",
            description: "standard input, output and error",
            flag: None,
        },
    ),
    (
        "wasi:clocks/",
        Capability {
            name: "clocks",
            description: "wall and monotonic clocks",
            flag: None,
        },
    ),
    (
        "wasi:random/",
        Capability {
            name: "random",
            description: "random numbers",
            flag: None,
        },
    ),
];

/// The capabilities the component's imports call for, without repeats. A component
/// started by `wasmtime serve` gets outgoing HTTP without a flag.
pub fn capabilities(info: &ComponentInfo) -> Vec<Capability> {
    let served = is_served(info);
    let mut found: Vec<Capability> = Vec::new();
    for import in &info.imports {
        if let Some((_, capability)) = CAPABILITIES
            .iter()
            .find(|(prefix, _)| import.starts_with(prefix))
        {
            let mut capability = capability.clone();
            if served && capability.name == "http-client" {
                capability.flag = None;
            }
            if !found.contains(&capability) {
                found.push(capability);
            }
        }
    }
    found
}

/// Whether `wasmtime serve` starts the component (its entry point is an HTTP handler).
fn is_served(info: &ComponentInfo) -> bool {
    info.entry_points()
        .first()
        .is_some_and(|(kind, _)| *kind == EntryPoint::HttpHandler)
}

/// How the output should be started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunHints<'a> {
    /// The broker host, to decide whether DNS lookups are needed.
    pub broker_host: Option<&'a str>,
    /// Whether the component reads messages from standard input (the `local` backend with a driver).
    pub reads_stdin: bool,
    /// Whether the backend opens network connections. `wasi:sockets` imports are linked
    /// either way (network is only denied without `-S inherit-network`), so this grants the
    /// permission the backend needs rather than one an app's language runtime merely links.
    pub network: bool,
    /// Environment variables to forward with `--env NAME`.
    pub env: &'a [String],
}

/// The `wasmtime` command that runs `path`, with the flags its imports need.
pub fn wasmtime_command(info: &ComponentInfo, path: &str, hints: RunHints<'_>) -> String {
    let serve = is_served(info);
    let mut words: Vec<&str> = vec!["wasmtime", if serve { "serve" } else { "run" }];
    let imports = |prefix: &str| info.imports.iter().any(|i| i.starts_with(prefix));
    if serve && imports("wasi:cli/") {
        words.push("-S cli");
    }
    if hints.network {
        words.push("-S inherit-network");
        let needs_dns = hints.broker_host.is_some_and(|host| {
            host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[')
        });
        if needs_dns && imports("wasi:sockets/ip-name-lookup") {
            words.push("-S allow-ip-name-lookup");
        }
    }
    if !serve && imports("wasi:http/outgoing-handler") {
        words.push("-S http");
    }
    if serve {
        words.push("--addr 127.0.0.1:8080");
    }
    let forwarded: Vec<String> = hints
        .env
        .iter()
        .map(|name| format!("--env {name}"))
        .collect();
    words.extend(forwarded.iter().map(String::as_str));
    let quoted = shell_quote(path);
    words.push(&quoted);
    let mut command = words.join(" ");
    if hints.reads_stdin {
        command.push_str(" < messages.ndjson");
    }
    command
}

/// The `wasmtime serve` flag that hands one instance many requests (wasmtime 49.0.3 has it,
/// 36.0.9 does not), with the count the note suggests.
pub const INSTANCE_REUSE: &str = "--max-instance-reuse-count 1000";

/// A note for an output whose http driver (`http_trigger`) sends through a broker connection
/// (`network`): `wasmtime serve` makes a fresh instance for every request, so the backend
/// connects anew each time, unless told to reuse instances. Reusing them is safe for the
/// http driver: the backend keeps its connection and subscriptions in the instance, and
/// replies are kept per injected message. `None` for any other output (an app's own HTTP
/// handler may rely on a fresh instance per request).
pub fn instance_reuse_note(http_trigger: bool, network: bool) -> Option<String> {
    (http_trigger && network).then(|| {
        format!(
            "`wasmtime serve` makes a fresh instance, so a new broker connection, for every \
             request; where `wasmtime serve --help` lists `--max-instance-reuse-count` (49.0.3 \
             does, 36.0.9 does not), add `{INSTANCE_REUSE}` to serve up to 1000 requests with \
             one instance and its connection"
        )
    })
}

/// Quotes `word` for a POSIX shell when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(imports: &[&str], exports: &[&str]) -> ComponentInfo {
        ComponentInfo::with_names(imports, exports)
    }

    #[test]
    fn only_http_driver_outputs_with_a_broker_connection_are_told_to_reuse_instances() {
        let note = instance_reuse_note(true, true).expect("http trigger, TCP backend");
        assert!(
            note.contains("add `--max-instance-reuse-count 1000`"),
            "{note}"
        );
        assert_eq!(instance_reuse_note(true, false), None, "local backend");
        assert_eq!(
            instance_reuse_note(false, true),
            None,
            "run driver or app's own entry"
        );
    }

    #[test]
    fn run_commands_carry_the_flags_the_imports_need() {
        let local = info(&["wasi:cli/stdin@0.2.6"], &["wasi:cli/run@0.2.0"]);
        let stdin = RunHints {
            reads_stdin: true,
            ..RunHints::default()
        };
        assert_eq!(
            wasmtime_command(&local, "out.wasm", stdin),
            "wasmtime run out.wasm < messages.ndjson"
        );

        let tcp = info(
            &[
                "wasi:sockets/tcp@0.2.6",
                "wasi:sockets/ip-name-lookup@0.2.6",
            ],
            &["wasi:cli/run@0.2.0"],
        );
        let by_ip = RunHints {
            broker_host: Some("127.0.0.1"),
            network: true,
            ..RunHints::default()
        };
        assert_eq!(
            wasmtime_command(&tcp, "a b.wasm", by_ip),
            "wasmtime run -S inherit-network 'a b.wasm'"
        );
        let by_name = RunHints {
            broker_host: Some("nats.internal"),
            network: true,
            ..RunHints::default()
        };
        assert_eq!(
            wasmtime_command(&tcp, "o.wasm", by_name),
            "wasmtime run -S inherit-network -S allow-ip-name-lookup o.wasm"
        );
        assert_eq!(
            wasmtime_command(&tcp, "o.wasm", RunHints::default()),
            "wasmtime run o.wasm",
            "an app runtime that merely links wasi:sockets is granted no network"
        );

        let served = info(
            &["wasi:cli/environment@0.2.6"],
            &["wasi:http/incoming-handler@0.2.6"],
        );
        assert_eq!(
            wasmtime_command(&served, "o.wasm", RunHints::default()),
            "wasmtime serve -S cli --addr 127.0.0.1:8080 o.wasm"
        );

        let https = info(
            &["wasi:http/outgoing-handler@0.2.6"],
            &["wasi:cli/run@0.2.0"],
        );
        let credentials = [
            "AWS_ACCESS_KEY_ID".to_string(),
            "AWS_SECRET_ACCESS_KEY".to_string(),
        ];
        let hints = RunHints {
            env: &credentials,
            ..RunHints::default()
        };
        assert_eq!(
            wasmtime_command(&https, "o.wasm", hints),
            "wasmtime run -S http --env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY o.wasm"
        );
    }

    #[test]
    fn capabilities_are_listed_once_each() {
        let i = info(
            &[
                "wasi:sockets/tcp@0.2.6",
                "wasi:sockets/network@0.2.6",
                "wasi:cli/stdout@0.2.6",
                "wasi:cli/stderr@0.2.6",
            ],
            &[],
        );
        let names: Vec<_> = capabilities(&i).iter().map(|c| c.name).collect();
        assert_eq!(names, vec!["network", "stdio"]);

        let http = ["wasi:http/outgoing-handler@0.2.6"];
        let run = capabilities(&info(&http, &["wasi:cli/run@0.2.0"]));
        assert_eq!(run[0].flag, Some("-S http"));
        let served = capabilities(&info(&http, &["wasi:http/incoming-handler@0.2.6"]));
        assert_eq!(served[0].flag, None, "wasmtime serve grants outgoing HTTP");
    }
}
