//! Reading stdin line by line, optionally with a deadline (raw WASI: the stdin
//! stream's pollable is polled together with a monotonic-clock pollable).

use common::Error;
use wasip2::cli::stdin::get_stdin;
use wasip2::clocks::monotonic_clock::{self, Instant};
use wasip2::io::poll::poll;
use wasip2::io::streams::{InputStream, StreamError};

/// How many bytes one read asks for.
const CHUNK: u64 = 64 * 1024;

/// What [`Lines::read`] found.
pub enum Read {
    /// A line (without its line break) and its 1-based number.
    Line(usize, Vec<u8>),
    /// Stdin is closed and every line was returned.
    Eof,
    /// The deadline passed before a whole line arrived.
    TimedOut,
}

/// Stdin split into lines; counts every line, blank ones included.
pub struct Lines {
    stream: InputStream,
    buffer: Vec<u8>,
    closed: bool,
    count: usize,
}

impl Lines {
    /// Opens the component's stdin.
    pub fn stdin() -> Self {
        Self {
            stream: get_stdin(),
            buffer: Vec::new(),
            closed: false,
            count: 0,
        }
    }

    /// Returns the next line, waiting for it until `deadline` (a monotonic-clock
    /// instant) if given, else as long as it takes.
    pub fn read(&mut self, deadline: Option<Instant>) -> Result<Read, Error> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                return Ok(self.line(line));
            }
            if self.closed {
                if self.buffer.is_empty() {
                    return Ok(Read::Eof);
                }
                let line = std::mem::take(&mut self.buffer);
                return Ok(self.line(line));
            }
            let chunk = match deadline {
                None => self.stream.blocking_read(CHUNK),
                Some(deadline) => {
                    if monotonic_clock::now() >= deadline {
                        return Ok(Read::TimedOut);
                    }
                    let readable = self.stream.subscribe();
                    let timer = monotonic_clock::subscribe_instant(deadline);
                    poll(&[&readable, &timer]);
                    self.stream.read(CHUNK)
                }
            };
            match chunk {
                Ok(bytes) => self.buffer.extend_from_slice(&bytes),
                Err(StreamError::Closed) => self.closed = true,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error::connection(format!(
                        "reading stdin failed: {}",
                        e.to_debug_string()
                    )))
                }
            }
        }
    }

    /// Numbers a line, dropping a trailing carriage return.
    fn line(&mut self, mut line: Vec<u8>) -> Read {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        self.count += 1;
        Read::Line(self.count, line)
    }
}
