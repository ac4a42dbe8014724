//! Where and as whom the backend talks to SQS: the broker URL and the standard AWS
//! environment variables, read at run time.

use std::time::Duration;

use common::{handler_timeout, Error, Settings};

use crate::sigv4::{Credentials, Signer};

/// The settings of one SQS backend.
#[derive(Debug, Clone)]
pub struct Config {
    /// The queue the run driver consumes (the broker URL's path), if any.
    pub queue: Option<String>,
    /// The endpoint every request is sent to (`https://sqs.REGION.amazonaws.com/`).
    pub endpoint: String,
    /// Signs requests for service `sqs` in the region.
    pub signer: Signer,
    /// `handler_timeout_ms`: the visibility timeout asked for at receive time (else the
    /// queue's own applies).
    pub handler_timeout: Option<Duration>,
}

/// The longest visibility timeout SQS allows: 12 hours.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

impl Config {
    /// Reads the broker URL `sqs://REGION[/QUEUE-NAME]` from `settings` and the
    /// environment through `env` (a variable's value, if set; empty counts as unset).
    ///
    /// `AWS_REGION` overrides the URL's region; `AWS_ENDPOINT_URL_SQS`, else
    /// `AWS_ENDPOINT_URL`, overrides the endpoint, as in the AWS SDKs; the
    /// credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// optionally `AWS_SESSION_TOKEN`.
    pub fn from_settings(
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let env = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let broker = settings.broker.as_str();
        let rest = match broker.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sqs") => rest,
            _ => return Err(settings.wrong_backend("sqs")),
        };
        let usage = "use sqs://REGION/QUEUE-NAME, e.g. sqs://us-east-1/orders";
        if rest.contains(['?', '#', '@']) {
            return Err(Error::other(format!(
                "broker `{broker}`: SQS URLs take no query, fragment or credentials; {usage} (credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )));
        }
        let (url_region, queue) = match rest.split_once('/') {
            Some((region, queue)) => (region, queue.trim_end_matches('/')),
            None => (rest, ""),
        };
        if queue.contains('/') {
            return Err(Error::other(format!(
                "broker `{broker}` names more than one path segment; {usage}"
            )));
        }
        let region = env("AWS_REGION").unwrap_or_else(|| url_region.to_string());
        if region.is_empty() {
            return Err(Error::other(format!(
                "broker `{broker}` names no region; {usage}, or set AWS_REGION"
            )));
        }
        if !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Error::other(format!(
                "`{region}` is not an AWS region name (such as `us-east-1`); {usage}"
            )));
        }
        let endpoint = env("AWS_ENDPOINT_URL_SQS")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| default_endpoint(&region));
        http_client::parse_url(&endpoint)?;
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Credentials {
                access_key_id,
                secret_access_key,
                session_token: env("AWS_SESSION_TOKEN"),
            },
            _ => {
                return Err(Error::other(
                    "AWS credentials are missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), e.g. `wasmtime run -S http --env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY ...`",
                ))
            }
        };
        Ok(Self {
            handler_timeout: handler_timeout(&settings.options, MAX_VISIBILITY)?,
            queue: (!queue.is_empty()).then(|| queue.to_string()),
            endpoint,
            signer: Signer {
                credentials,
                region,
                service: "sqs".into(),
            },
        })
    }
}

/// The public SQS endpoint of `region`.
fn default_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sqs.{region}.{domain}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("../../../../tests/support/broker_urls.rs");

    /// The parser agrees with `msgplug compose` on the cases of `tests/broker-urls.txt`.
    #[test]
    fn agrees_with_compose_on_the_shared_broker_urls() {
        assert_agrees_with_broker_url_cases("sqs", KEYS, |url, env| {
            let settings = Settings {
                msgplug: 1,
                broker: url.into(),
                ..Settings::default()
            };
            Config::from_settings(&settings, env).map(drop)
        });
    }

    const KEYS: &[(&str, &str)] = &[
        ("AWS_ACCESS_KEY_ID", "AKID"),
        ("AWS_SECRET_ACCESS_KEY", "SECRET"),
    ];

    fn config(broker: &str, vars: &[(&str, &str)]) -> Result<Config, Error> {
        let settings = Settings {
            msgplug: 1,
            broker: broker.into(),
            ..Settings::default()
        };
        Config::from_settings(&settings, |name| {
            vars.iter()
                .chain(KEYS)
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn reads_region_and_queue() {
        let c = config("sqs://eu-west-1/orders.fifo", &[]).unwrap();
        assert_eq!(c.queue.as_deref(), Some("orders.fifo"));
        assert_eq!(c.signer.region, "eu-west-1");
        assert_eq!(c.signer.service, "sqs");
        assert_eq!(c.endpoint, "https://sqs.eu-west-1.amazonaws.com/");
        assert_eq!(c.signer.credentials.access_key_id, "AKID");
        assert_eq!(c.signer.credentials.secret_access_key, "SECRET");
        assert_eq!(c.signer.credentials.session_token, None);

        let c = config("sqs://cn-north-1/", &[]).unwrap();
        assert_eq!(c.queue, None);
        assert_eq!(c.endpoint, "https://sqs.cn-north-1.amazonaws.com.cn/");
        assert_eq!(config("SQS://us-east-1", &[]).unwrap().queue, None);
    }

    #[test]
    fn the_environment_overrides_region_and_endpoint() {
        let c = config(
            "sqs://us-east-1/q",
            &[
                ("AWS_REGION", "ap-south-1"),
                ("AWS_ENDPOINT_URL", "http://generic:1"),
                ("AWS_SESSION_TOKEN", "TOKEN"),
            ],
        )
        .unwrap();
        assert_eq!(c.signer.region, "ap-south-1");
        assert_eq!(c.endpoint, "http://generic:1");
        assert_eq!(c.signer.credentials.session_token.as_deref(), Some("TOKEN"));
        let c = config(
            "sqs://us-east-1/q",
            &[
                ("AWS_ENDPOINT_URL", "http://generic:1"),
                ("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4566"),
                ("AWS_REGION", ""),
            ],
        )
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:4566");
        assert_eq!(c.signer.region, "us-east-1");
        let c = config("sqs:///q", &[("AWS_REGION", "us-west-2")]).unwrap();
        assert_eq!(c.signer.region, "us-west-2");
    }

    #[test]
    fn missing_credentials_name_the_variables() {
        let settings = Settings {
            msgplug: 1,
            broker: "sqs://us-east-1/q".into(),
            ..Settings::default()
        };
        let only_id = |name: &str| (name == "AWS_ACCESS_KEY_ID").then(|| "AKID".to_string());
        let e = Config::from_settings(&settings, only_id).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(
                "AWS credentials are missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ),
            "{text}"
        );
    }

    #[test]
    fn rejects_bad_urls() {
        let e = |broker: &str| config(broker, &[]).unwrap_err().to_string();
        assert!(
            e("nats://x").contains("needs the `nats` backend"),
            "{}",
            e("nats://x")
        );
        assert!(e("sqs:///q").contains("names no region"));
        assert!(e("sqs://us-east-1/a/b").contains("more than one path segment"));
        assert!(e("sqs://US_EAST/q").contains("is not an AWS region name"));
        assert!(e("sqs://k:s@us-east-1/q").contains("take no query, fragment or credentials"));
        let bad_endpoint = config(
            "sqs://us-east-1/q",
            &[("AWS_ENDPOINT_URL_SQS", "localhost:4566")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad_endpoint.contains("invalid URL `localhost:4566`"),
            "{bad_endpoint}"
        );
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let c = config("sqs://us-east-1/q", &[("AWS_SESSION_TOKEN", "TOKEN")]).unwrap();
        let text = format!("{c:?}");
        assert!(
            !text.contains("SECRET") && !text.contains("TOKEN"),
            "{text}"
        );
    }
}
