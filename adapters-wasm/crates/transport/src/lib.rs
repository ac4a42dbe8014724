//! The byte stream a TCP backend adapter speaks to its broker over: [`Transport`], plain
//! TCP or TLS, with the read and write timeouts every backend relies on.
//!
//! TLS lives behind the cargo feature `tls` (rustls with the `ring` provider, the Mozilla
//! roots of `webpki-roots`), so the plaintext adapters carry none of it: `build.sh` builds
//! each TCP backend twice, and msgplug picks the TLS build (`backend-NAME-tls`) by the
//! broker URL's scheme. A build without the feature refuses a TLS URL with a clear error.
//!
//! A backend opens its connection with [`Transport::connect`] and, for a TLS URL, calls
//! [`Transport::start_tls`] right away (or, like NATS, after a plaintext greeting); from
//! then on it reads and writes the [`Transport`] as it did the socket.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::io_error::{connect_error, failed};
use common::{Error, Settings};

#[cfg(feature = "tls")]
mod tls;

/// The `--option` key (set by `msgplug compose --tls-ca FILE`) whose value is the PEM of
/// the only certificate authority to trust.
pub const CA_OPTION: &str = "tls_ca";

/// The environment variable with the client certificate chain (PEM) for mutual TLS.
pub const CLIENT_CERT_ENV: &str = "MSGPLUG_TLS_CERT";

/// The environment variable with the client certificate's private key (PEM).
pub const CLIENT_KEY_ENV: &str = "MSGPLUG_TLS_KEY";

/// What a TLS connection to one broker needs; plain data, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The host name (or IP address) from the URL: sent as SNI, and the one the server's
    /// certificate must name.
    pub server_name: String,
    /// The PEM of the only certificate authority to trust (`--tls-ca`); `None` trusts the
    /// Mozilla roots baked into the adapter.
    pub ca_pem: Option<String>,
    /// The client certificate chain and its private key (PEM), for mutual TLS.
    pub client_identity: Option<(String, String)>,
}

impl TlsSettings {
    /// Reads the TLS settings for the broker at `address` (`host:port`, an IPv6 host in
    /// brackets): the [`CA_OPTION`] of `settings`, and the client certificate from
    /// [`CLIENT_CERT_ENV`] and [`CLIENT_KEY_ENV`] through `env` (both or neither).
    pub fn new(
        address: &str,
        settings: &Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let client_identity = match (var(CLIENT_CERT_ENV), var(CLIENT_KEY_ENV)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::other(format!(
                    "{CLIENT_CERT_ENV} is set but {CLIENT_KEY_ENV} is not: mutual TLS needs the client certificate's private key too"
                )))
            }
            (None, Some(_)) => {
                return Err(Error::other(format!(
                    "{CLIENT_KEY_ENV} is set but {CLIENT_CERT_ENV} is not: mutual TLS needs the client certificate too"
                )))
            }
        };
        Ok(Self {
            server_name: host_of(address).to_string(),
            ca_pem: settings
                .options
                .get(CA_OPTION)
                .filter(|pem| !pem.trim().is_empty())
                .cloned(),
            client_identity,
        })
    }
}

impl TlsSettings {
    /// The same settings for another broker at `address` (`host:port`): its host becomes
    /// the server name, as for a Kafka partition leader the cluster advertises.
    pub fn for_address(&self, address: &str) -> Self {
        Self {
            server_name: host_of(address).to_string(),
            ..self.clone()
        }
    }
}

/// The host of `address` (`host:port`, an IPv6 host in brackets), without brackets.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A connection's byte stream: plain TCP, or TLS over TCP.
pub struct Transport {
    /// The stream itself.
    inner: Inner,
}

/// The two kinds of [`Transport`].
enum Inner {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP; the handshake is complete.
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    /// Connects plain TCP to `address` (`url` names the broker in errors), with writes that
    /// fail after `write_timeout` and no read timeout.
    pub fn connect(address: &str, url: &str, write_timeout: Duration) -> Result<Self, Error> {
        let socket = TcpStream::connect(address).map_err(|e| connect_error(url, &e))?;
        socket
            .set_write_timeout(Some(write_timeout))
            .map_err(|e| failed("setting a write timeout", &e))?;
        Ok(Self {
            inner: Inner::Plain(socket),
        })
    }

    /// The TCP socket under the stream.
    fn socket(&self) -> &TcpStream {
        match &self.inner {
            Inner::Plain(socket) => socket,
            #[cfg(feature = "tls")]
            Inner::Tls(stream) => &stream.sock,
        }
    }

    /// Sets how long a read waits for data before it fails with `WouldBlock` or
    /// `TimedOut` (the stream stays usable; TLS keeps any partial record it read).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }

    /// Turns a plain stream into TLS: a full handshake with the server, which must present
    /// a valid certificate for `tls.server_name` from a trusted authority, within `timeout`.
    /// `url` names the broker in errors. Every failure is one line naming the cause: a
    /// [`Error::Connection`] for what the server did (untrusted, expired or mismatched
    /// certificate, no TLS on the port, refused client certificate), an [`Error::Other`]
    /// for unreadable settings (a bad PEM). The stream comes back with no read timeout.
    pub fn start_tls(self, tls: &TlsSettings, url: &str, timeout: Duration) -> Result<Self, Error> {
        match self.inner {
            Inner::Plain(socket) => start_tls(socket, tls, url, timeout),
            #[cfg(feature = "tls")]
            Inner::Tls(_) => Ok(self),
        }
    }
}

/// The error for a plaintext connection to `url` that broke before the broker's first
/// answer (`answer`, what the protocol expected: the broker closed it, or sent bytes that are
/// no answer, such as a TLS alert): most likely the port speaks TLS, so a
/// [`Error::Connection`] says to use `tls_scheme`. Other errors pass through.
pub fn plaintext_broke_before(answer: &str, url: &str, tls_scheme: &str, error: Error) -> Error {
    match error {
        Error::Connection(why) => Error::connection(format!(
            "{url} broke the connection before {answer} ({why}); if it is a TLS port, use a `{tls_scheme}://` broker URL"
        )),
        error => error,
    }
}

/// [`Transport::start_tls`] of a build with TLS.
#[cfg(feature = "tls")]
fn start_tls(
    socket: TcpStream,
    settings: &TlsSettings,
    url: &str,
    timeout: Duration,
) -> Result<Transport, Error> {
    let stream = tls::handshake(socket, settings, url, timeout)?;
    Ok(Transport {
        inner: Inner::Tls(Box::new(stream)),
    })
}

/// [`Transport::start_tls`] of a build without TLS: a clear refusal.
#[cfg(not(feature = "tls"))]
fn start_tls(
    _socket: TcpStream,
    _settings: &TlsSettings,
    url: &str,
    _timeout: Duration,
) -> Result<Transport, Error> {
    Err(Error::other(format!(
        "{url} needs TLS, which this plaintext adapter was built without; compose with the TLS broker URL (msgplug then embeds the TLS adapter) instead of switching to it with MSGPLUG_BROKER"
    )))
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(socket) => socket.read(buf),
            #[cfg(feature = "tls")]
            Inner::Tls(stream) => tls::read(stream, buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(socket) => socket.write(buf),
            #[cfg(feature = "tls")]
            Inner::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(socket) => socket.flush(),
            #[cfg(feature = "tls")]
            Inner::Tls(stream) => stream.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(options: &[(&str, &str)]) -> Settings {
        Settings {
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Settings::default()
        }
    }

    #[test]
    fn the_server_name_is_the_urls_host() {
        let none = |_: &str| None;
        let name = |address| {
            TlsSettings::new(address, &settings(&[]), none)
                .unwrap()
                .server_name
        };
        assert_eq!(name("nats.example:4222"), "nats.example");
        assert_eq!(name("127.0.0.1:4222"), "127.0.0.1");
        assert_eq!(name("[::1]:4222"), "::1");
        let bootstrap = TlsSettings::new("kafka.example:9093", &settings(&[]), none).unwrap();
        let leader = bootstrap.for_address("broker-2.example:9093");
        assert_eq!(leader.server_name, "broker-2.example");
        assert_eq!(leader.ca_pem, bootstrap.ca_pem);
    }

    #[test]
    fn the_ca_comes_from_the_options_and_the_identity_from_the_environment() {
        let env = |name: &str| match name {
            CLIENT_CERT_ENV => Some("CERT".to_string()),
            CLIENT_KEY_ENV => Some("KEY".to_string()),
            _ => None,
        };
        let tls = TlsSettings::new("h:1", &settings(&[(CA_OPTION, "PEM")]), env).unwrap();
        assert_eq!(tls.ca_pem.as_deref(), Some("PEM"));
        assert_eq!(
            tls.client_identity,
            Some(("CERT".to_string(), "KEY".to_string()))
        );
        let none = TlsSettings::new("h:1", &settings(&[]), |_| None).unwrap();
        assert_eq!((none.ca_pem, none.client_identity), (None, None));
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        let only_cert = |name: &str| (name == CLIENT_CERT_ENV).then(|| "CERT".to_string());
        let e = TlsSettings::new("h:1", &settings(&[]), only_cert).unwrap_err();
        assert!(e.to_string().contains("MSGPLUG_TLS_KEY is not"), "{e}");
        let only_key = |name: &str| (name == CLIENT_KEY_ENV).then(|| "KEY".to_string());
        let e = TlsSettings::new("h:1", &settings(&[]), only_key).unwrap_err();
        assert!(e.to_string().contains("MSGPLUG_TLS_CERT is not"), "{e}");
    }
}
