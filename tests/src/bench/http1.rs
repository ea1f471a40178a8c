//! A minimal blocking HTTP/1.1 keep-alive client for the load generator.
//!
//! Why not reqwest: its blocking client runs a tokio runtime thread per
//! client and hands every request to it and back, which on a 2-core
//! machine costs the load generator more CPU per call than some of the
//! servers it measures, and that CPU is taken from them. This client is one
//! thread, one socket, one write and as few reads as the response needs. It
//! speaks what the measured servers answer: `Content-Length` or chunked
//! bodies, keep-alive, and reconnects when the server closes.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One keep-alive connection to one `http://host:port`.
pub struct Http1Client {
    authority: String,
    connection: Option<BufReader<TcpStream>>,
    timeout: Duration,
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// `http://host:port/path` → (`host:port`, `/path`).
pub fn split_url(url: &str) -> io::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs"))?;
    Ok(match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    })
}

impl Http1Client {
    pub fn new(authority: &str, timeout: Duration) -> Self {
        Self {
            authority: authority.to_owned(),
            connection: None,
            timeout,
        }
    }

    fn connect(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        if self.connection.is_none() {
            let stream = TcpStream::connect(&self.authority)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(self.timeout))?;
            self.connection = Some(BufReader::with_capacity(64 * 1024, stream));
        }
        self.connection
            .as_mut()
            .ok_or_else(|| invalid("no connection"))
    }

    /// POSTs `body` to `path`: (status, response body). Retries once on a
    /// fresh connection when a kept-alive one turns out closed.
    pub fn post(
        &mut self,
        path: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> io::Result<(u16, String)> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n",
            self.authority,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.push_str(body);
        let reused = self.connection.is_some();
        match self.exchange(request.as_bytes()) {
            Err(_) if reused => {
                self.connection = None;
                self.exchange(request.as_bytes())
            }
            other => other,
        }
    }

    fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, String)> {
        let outcome = (|| {
            let connection = self.connect()?;
            connection.get_mut().write_all(request)?;
            read_response(connection)
        })();
        match outcome {
            Ok((status, body, keep_alive)) => {
                if !keep_alive {
                    self.connection = None;
                }
                Ok((status, body))
            }
            Err(err) => {
                self.connection = None;
                Err(err)
            }
        }
    }
}

fn read_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<()> {
    line.clear();
    if reader.read_line(line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(())
}

/// (status, body, keep-alive).
fn read_response(reader: &mut impl BufRead) -> io::Result<(u16, String, bool)> {
    let mut line = String::new();
    read_line(reader, &mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut keep_alive = line.starts_with("HTTP/1.1");
    loop {
        read_line(reader, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(reader, &mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    read_line(reader, &mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader, &mut line)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        // No length: the body runs to the end of the connection.
        reader.read_to_end(&mut body)?;
        keep_alive = false;
    }
    let body = String::from_utf8(body).map_err(|_| invalid("body is not UTF-8"))?;
    Ok((status, body, keep_alive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_length_and_chunked_bodies() {
        let mut plain =
            io::Cursor::new(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec());
        assert_eq!(
            read_response(&mut plain).unwrap(),
            (200, "hello".into(), true)
        );
        let mut chunked = io::Cursor::new(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
                .to_vec(),
        );
        assert_eq!(
            read_response(&mut chunked).unwrap(),
            (200, "abcde".into(), false)
        );
        assert_eq!(
            split_url("http://127.0.0.1:80/mcp").unwrap(),
            ("127.0.0.1:80", "/mcp")
        );
    }
}
