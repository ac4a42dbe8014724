//! TLS with rustls: the client configuration, the handshake, and errors that name their
//! cause.

use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::io_error::failed;
use common::Error;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, RootCertStore};

use crate::{TlsSettings, CA_OPTION, CLIENT_CERT_ENV, CLIENT_KEY_ENV};

/// A TLS stream over TCP.
pub type Stream = rustls::StreamOwned<ClientConnection, TcpStream>;

/// Runs the handshake over `socket` within `timeout`; see [`crate::Transport::start_tls`].
pub fn handshake(
    mut socket: TcpStream,
    settings: &TlsSettings,
    url: &str,
    timeout: Duration,
) -> Result<Stream, Error> {
    let config = client_config(settings)?;
    let name = ServerName::try_from(settings.server_name.clone()).map_err(|_| {
        Error::other(format!(
            "{url}: `{}` is not a host name or IP address TLS can check",
            settings.server_name
        ))
    })?;
    let mut conn = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| Error::other(format!("{url}: cannot start TLS: {e}")))?;
    let failed_because = |why: String| Error::connection(format!("TLS with {url} failed: {why}"));
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() || conn.wants_write() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(failed_because(format!(
                "no TLS handshake within {} s (does the server speak TLS on this port?)",
                timeout.as_secs()
            )));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| failed("setting a read timeout", &e))?;
        match conn.complete_io(&mut socket) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(failed_because(describe_io(&e, settings))),
        }
    }
    // The deadline's read timeout must not outlive the handshake.
    socket
        .set_read_timeout(None)
        .map_err(|e| failed("setting a read timeout", &e))?;
    Ok(Stream::new(conn, socket))
}

/// Reads from a TLS stream: a close without TLS's `close_notify` (which brokers often
/// do) is an end of stream like any other, and a TLS error reads as its cause.
pub fn read(stream: &mut Stream, buf: &mut [u8]) -> io::Result<usize> {
    match stream.read(buf) {
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => match rustls_error(&e) {
            Some(tls) => Err(io::Error::new(e.kind(), describe(tls, None))),
            None => Err(e),
        },
        ok => ok,
    }
}

/// The client configuration: the trusted roots, and the client certificate if any.
fn client_config(settings: &TlsSettings) -> Result<ClientConfig, Error> {
    let mut roots = RootCertStore::empty();
    match &settings.ca_pem {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(pem) => {
            for cert in certificates(pem, &format!("option `{CA_OPTION}` (--tls-ca)"))? {
                roots.add(cert).map_err(|e| {
                    Error::other(format!(
                        "option `{CA_OPTION}` (--tls-ca): not a usable CA certificate: {e}"
                    ))
                })?;
            }
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::other(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots);
    match &settings.client_identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates(cert, CLIENT_CERT_ENV)?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| {
                Error::other(format!(
                    "{CLIENT_KEY_ENV} holds no PEM private key ({e}); set it to the client key's PEM text"
                ))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::other(format!(
                    "{CLIENT_CERT_ENV} / {CLIENT_KEY_ENV}: unusable client certificate and key: {e}"
                ))
            })
        }
    }
}

/// The certificates of PEM text `pem`; `source` names where it came from in errors.
fn certificates(pem: &str, source: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::other(format!("{source}: unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::other(format!(
            "{source}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        )));
    }
    Ok(certs)
}

/// The rustls error inside an I/O error, if any.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Why the handshake failed with `e`, in words.
fn describe_io(e: &io::Error, settings: &TlsSettings) -> String {
    match rustls_error(e) {
        Some(tls) => describe(tls, Some(settings)),
        None if matches!(
            e.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ) =>
        {
            "the server closed the connection during the TLS handshake (does it speak TLS on this port? does it want a client certificate?)".to_string()
        }
        // wasi:sockets reports some resets as a bare I/O error: name the likely cause too.
        None => format!(
            "{} during the TLS handshake (does the server speak TLS on this port?)",
            common::io_error::text(e)
        ),
    }
}

/// What a rustls error means for the user; `settings` (during the handshake) makes the
/// advice precise.
fn describe(e: &rustls::Error, settings: Option<&TlsSettings>) -> String {
    let own_ca = settings.is_some_and(|s| s.ca_pem.is_some());
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature if own_ca => {
                "the server's certificate is not signed by the `--tls-ca` authority (untrusted certificate)".to_string()
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the server's certificate is not signed by a trusted authority (untrusted certificate); for a private CA compose with `--tls-ca FILE`".to_string()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let name = settings.map_or(String::new(), |s| format!(" `{}`", s.server_name));
                format!("the server's certificate is not valid for the host name{name} of the URL (host-name mismatch)")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (check the clocks)".to_string()
            }
            other => format!("the server's certificate is invalid: {other:?}"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server did not answer in TLS (is this a TLS port? for a plaintext server use the plaintext scheme)".to_string()
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied),
        ) => format!(
            "the server refused the client certificate (TLS alert {alert:?}): set {CLIENT_CERT_ENV} and {CLIENT_KEY_ENV} to a certificate it trusts"
        ),
        rustls::Error::AlertReceived(alert) => {
            format!("the server ended TLS with the alert {alert:?}")
        }
        other => format!("TLS error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ca: bool) -> TlsSettings {
        TlsSettings {
            server_name: "nats.example".to_string(),
            ca_pem: ca.then(|| "PEM".to_string()),
            client_identity: None,
        }
    }

    #[test]
    fn certificate_errors_name_their_cause() {
        let bad = |e: CertificateError, ca| {
            describe(&rustls::Error::InvalidCertificate(e), Some(&settings(ca)))
        };
        assert!(bad(CertificateError::UnknownIssuer, false).contains("--tls-ca FILE"));
        assert!(bad(CertificateError::UnknownIssuer, true).contains("not signed by the `--tls-ca`"));
        let mismatch = bad(CertificateError::NotValidForName, false);
        assert!(mismatch.contains("host-name mismatch") && mismatch.contains("`nats.example`"));
        assert!(bad(CertificateError::Expired, false).contains("expired"));
    }

    #[test]
    fn a_server_without_tls_or_refusing_the_client_is_named() {
        let plaintext = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(describe(&plaintext, None).contains("did not answer in TLS"));
        let refused = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(describe(&refused, None).contains("MSGPLUG_TLS_CERT"));
        let eof = io::Error::from(ErrorKind::UnexpectedEof);
        assert!(describe_io(&eof, &settings(false))
            .contains("closed the connection during the TLS handshake"));
    }

    #[test]
    fn bad_pem_is_refused_with_its_source() {
        let e = certificates("not pem", "option `tls_ca` (--tls-ca)").unwrap_err();
        assert!(
            e.to_string().starts_with("option `tls_ca` (--tls-ca): "),
            "{e}"
        );
        let mut broken = settings(false);
        broken.client_identity = Some(("x".to_string(), "y".to_string()));
        let e = client_config(&broken).unwrap_err();
        assert!(e.to_string().contains("MSGPLUG_TLS_CERT"), "{e}");
    }
}
