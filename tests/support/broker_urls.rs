// The reader of `tests/broker-urls.txt`, shared with `include!` by the host's unit tests
// (`src/broker.rs`) and each backend adapter's (`adapters-wasm/crates/backend-*`), so that
// every parser of broker URLs is checked against the same cases.

/// One line of `tests/broker-urls.txt`.
struct BrokerUrlCase {
    /// Whether the backend accepts the URL in this environment.
    accepted: bool,
    /// The URL, as msgplug bakes it.
    url: &'static str,
    /// The run-time environment (credentials apart).
    env: Vec<(&'static str, &'static str)>,
}

/// The cases of `tests/broker-urls.txt` for the `backend` family (`nats`, `sqs`, ...).
fn broker_url_cases(backend: &str) -> impl Iterator<Item = BrokerUrlCase> + '_ {
    include_str!("../broker-urls.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(move |line| {
            let mut words = line.split_whitespace();
            let verdict = words.next().expect("a verdict");
            let family = words.next().expect("a backend");
            let url = words.next().expect("a URL");
            let env = words
                .map(|pair| pair.split_once('=').expect("NAME=VALUE"))
                .collect();
            let accepted = match verdict {
                "ok" => true,
                "bad" => false,
                other => panic!("tests/broker-urls.txt: verdict `{other}` is not `ok` or `bad`"),
            };
            (family == backend).then_some(BrokerUrlCase { accepted, url, env })
        })
}
