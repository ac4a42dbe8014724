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

/// Checks a backend's URL parser against every case of the `backend` family: `parse` gets
/// the URL and the case's environment (plus `credentials`) and returns the parser's verdict.
fn assert_agrees_with_broker_url_cases<T: std::fmt::Debug, E: std::fmt::Debug>(
    backend: &str,
    credentials: &[(&str, &str)],
    parse: impl Fn(&str, &dyn Fn(&str) -> Option<String>) -> Result<T, E>,
) {
    let mut cases = 0;
    for case in broker_url_cases(backend) {
        let env = |name: &str| {
            case.env
                .iter()
                .copied()
                .chain(credentials.iter().copied())
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        let verdict = parse(case.url, &env);
        assert_eq!(
            verdict.is_ok(),
            case.accepted,
            "tests/broker-urls.txt: `{}` with {:?}: {verdict:?}",
            case.url,
            case.env
        );
        cases += 1;
    }
    assert!(cases > 0, "tests/broker-urls.txt has no `{backend}` cases");
}
