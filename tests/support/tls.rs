//! Certificates the TLS tests make themselves (rcgen): a test CA, server certificates
//! (good, expired, for another host, from another CA) and a client certificate for mutual
//! TLS, written as PEM files into a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The common name of [`Pki::client`]; nats-server's `verify_and_map` maps it to the user
/// `CN=msgplug-client`.
pub const CLIENT_CN: &str = "msgplug-client";

/// A certificate and its private key, as PEM files.
pub struct Pem {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Pem {
    /// The certificate's PEM text.
    pub fn cert_text(&self) -> String {
        std::fs::read_to_string(&self.cert).expect("read certificate")
    }

    /// The key's PEM text.
    pub fn key_text(&self) -> String {
        std::fs::read_to_string(&self.key).expect("read key")
    }
}

/// Every certificate the tests use, in a temporary directory removed on drop.
pub struct Pki {
    /// The test CA's certificate (what `--tls-ca` gets).
    pub ca: PathBuf,
    /// A server certificate for `localhost` and `127.0.0.1`, signed by the test CA.
    pub server: Pem,
    /// Like `server`, but it expired in 2001.
    pub expired: Pem,
    /// Signed by the test CA, for `other.example` only.
    pub other_host: Pem,
    /// Signed by the test CA, for `127.0.0.1` only (not `localhost`).
    pub ip_only: Pem,
    /// For `localhost` and `127.0.0.1`, signed by a CA nobody trusts.
    pub untrusted: Pem,
    /// A client certificate (common name [`CLIENT_CN`]) signed by the test CA.
    pub client: Pem,
    /// The directory.
    dir: tempfile::TempDir,
}

/// A CA's certificate and key.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Ca { cert, key }
    }

    /// Signs a leaf certificate for `names` (DNS names or IP addresses).
    fn sign(
        &self,
        names: &[&str],
        common_name: &str,
        purpose: ExtendedKeyUsagePurpose,
    ) -> (Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed leaf");
        (cert, key)
    }
}

impl Pki {
    /// Makes every certificate.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("msgplug test CA");
        let rogue = Ca::new("msgplug untrusted CA");
        let local = ["localhost", "127.0.0.1"];
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let write = |name: &str, (cert, key): (Certificate, KeyPair)| -> Pem {
            let pem = Pem {
                cert: dir.path().join(format!("{name}.pem")),
                key: dir.path().join(format!("{name}-key.pem")),
            };
            std::fs::write(&pem.cert, cert.pem()).expect("write certificate");
            std::fs::write(&pem.key, key.serialize_pem()).expect("write key");
            pem
        };
        let expired = {
            let mut params =
                CertificateParams::new(local.map(String::from).to_vec()).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, "expired");
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            params.extended_key_usages = vec![server.clone()];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("signed");
            (cert, key)
        };
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert.pem()).expect("write CA");
        Pki {
            ca: ca_path,
            server: write("server", ca.sign(&local, "localhost", server.clone())),
            expired: write("expired", expired),
            other_host: write(
                "other-host",
                ca.sign(&["other.example"], "other.example", server.clone()),
            ),
            ip_only: write(
                "ip-only",
                ca.sign(&["127.0.0.1"], "127.0.0.1", server.clone()),
            ),
            untrusted: write("untrusted", rogue.sign(&local, "localhost", server)),
            client: write(
                "client",
                ca.sign(&[], CLIENT_CN, ExtendedKeyUsagePurpose::ClientAuth),
            ),
            dir,
        }
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A nats-server config file (for `-c`) serving TLS with `server`; with `mutual`, it
    /// also requires a client certificate from the test CA and maps [`CLIENT_CN`] to a
    /// user (`verify_and_map`).
    pub fn nats_config(&self, server: &Pem, mutual: bool) -> PathBuf {
        let mut config = format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n",
            server.cert.display(),
            server.key.display()
        );
        if mutual {
            config += &format!(
                "  ca_file: \"{}\"\n  verify_and_map: true\n}}\nauthorization {{\n  users = [ {{ user: \"CN={CLIENT_CN}\" }} ]\n}}\n",
                self.ca.display()
            );
        } else {
            config += "}\n";
        }
        let path = self.dir.path().join(format!(
            "nats-{}{}.conf",
            server.cert.file_stem().unwrap().to_string_lossy(),
            if mutual { "-mutual" } else { "" }
        ));
        std::fs::write(&path, config).expect("write nats-server config");
        path
    }
}

/// Composes the example publisher for `broker` with extra `args` into its own directory in `dir`.
pub fn publisher(dir: &Path, broker: &str, args: &[&str]) -> PathBuf {
    let dir = dir.join(super::unique("publisher"));
    std::fs::create_dir(&dir).expect("make dir");
    let mut all = vec!["--broker", broker];
    all.extend_from_slice(args);
    super::compose(&dir, "publisher", &all)
}

/// Runs `component` expecting it to fail; returns its stderr.
pub async fn failure(component: &Path, env: &[(&str, &str)]) -> String {
    let mut all = vec![("TOPIC", "tls.failure"), ("COUNT", "1")];
    all.extend_from_slice(env);
    let (status, stderr) = super::app::run(component, &all).await;
    assert!(
        !status.success(),
        "the publisher should have failed:\n{stderr}"
    );
    stderr
}

/// Asserts that `stderr` has exactly one line with `send failed: connection: ` and that it
/// contains `cause`.
pub fn assert_one_connection_error(stderr: &str, cause: &str) {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("send failed: connection: "))
        .collect();
    assert!(
        errors.len() == 1 && errors[0].contains(cause),
        "expected one `connection` error containing `{cause}`:\n{stderr}"
    );
}

/// Asserts that `msgplug inspect` shows `component` uses `adapter` and trusts only the
/// `--tls-ca` CA (one certificate).
pub fn assert_inspect_shows_the_tls_ca(component: &Path, adapter: &str) {
    let inspect = super::msgplug()
        .arg("inspect")
        .arg(component)
        .output()
        .expect("run msgplug inspect");
    let text = super::text(&inspect.stdout);
    assert!(text.contains(adapter), "{text}");
    assert!(
        text.contains("TLS trusts:        only the `--tls-ca` CA (1 PEM certificate(s)"),
        "{text}"
    );
}
