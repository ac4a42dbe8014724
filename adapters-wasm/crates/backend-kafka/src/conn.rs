//! One broker connection: blocking request / response over `std::net::TcpStream`, plain
//! or TLS ([`Transport`]; for `kafka+ssl://`, TLS starts right after connecting).
//!
//! Requests on a connection are answered in order; the adapter sends one and reads its
//! answer before the next (WASI 0.2 gives an instance no concurrency). Timed reads use
//! `set_read_timeout`, which works on wasm32-wasip2 (see the NATS backend's `conn`).
//! SASL runs over the open connection (`crate::kafka`).

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use common::Error;
use transport::{TlsSettings, Transport};

use crate::protocol::{self, Api};
use common::io_error;

/// How long a blocked write may take before the connection counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection to one broker.
pub struct Conn {
    /// The socket, plain or TLS.
    stream: Transport,
    /// `host:port`, for messages.
    address: String,
    /// The correlation id of the next request.
    next_id: i32,
}

impl Conn {
    /// Connects to `address`; with `tls` (the settings of the URL), speaks TLS to it and
    /// checks that its certificate names `address`'s host, the broker's own (a partition
    /// leader's host is the one the cluster advertises, not the URL's).
    pub fn open(address: &str, tls: Option<&TlsSettings>) -> Result<Self, Error> {
        let broker = format!("Kafka broker {address}");
        let mut stream = Transport::connect(address, &broker, WRITE_TIMEOUT)?;
        if let Some(tls) = tls {
            stream = stream.start_tls(&tls.for_address(address), &broker, TLS_HANDSHAKE_TIMEOUT)?;
        }
        Ok(Self {
            stream,
            address: address.to_string(),
            next_id: 1,
        })
    }

    /// Sends a request and waits up to `timeout` for its response body. Any failure
    /// leaves the connection unusable (the caller drops it).
    pub fn request(
        &mut self,
        api: Api,
        client_id: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let frame = protocol::frame(api, id, client_id, body);
        self.stream
            .write_all(&frame)
            .map_err(|e| failed(&self.address, &e))?;
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| failed(&self.address, &e))?;
        let mut prefix = [0; 4];
        self.read_exact(&mut prefix, api)?;
        let size = protocol::frame_size(prefix)
            .map_err(|e| Error::connection(format!("{} sent {e}", self.address)))?;
        let mut response = vec![0; size];
        self.read_exact(&mut response, api)?;
        let (got, body) = protocol::response(&response, api.flexible)
            .map_err(|e| Error::connection(format!("{} sent {e}", self.address)))?;
        if got != id {
            return Err(Error::connection(format!(
                "{} answered request {got}, expected {id}",
                self.address
            )));
        }
        Ok(body.to_vec())
    }

    /// Fills `buf` from the socket; a timeout is [`Error::Timeout`].
    fn read_exact(&mut self, buf: &mut [u8], api: Api) -> Result<(), Error> {
        self.stream.read_exact(buf).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::connection(format!(
                "{} did not answer {} in time",
                self.address, api.name
            )),
            ErrorKind::UnexpectedEof => {
                Error::connection(format!("{} closed the connection", self.address))
            }
            _ => failed(&self.address, &e),
        })
    }
}

/// A lost connection, as an error.
fn failed(address: &str, e: &std::io::Error) -> Error {
    io_error::failed(&format!("the connection to {address}"), e)
}
