//! Opening a connection: TCP, startup, authentication (trust, cleartext,
//! MD5, SCRAM-SHA-256).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend::Message, frontend};

use super::{Connection, WireError};

/// Where and as whom to connect.
#[derive(Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub application_name: String,
    /// The session's statement_timeout (ms, 0 = none). A start-up
    /// parameter rather than a SET per call: one statement less per call,
    /// and RESET/DISCARD ALL return to it.
    pub statement_timeout_ms: u64,
    pub connect_timeout: Option<Duration>,
    /// Bounds every wait for the server (beyond statement_timeout).
    pub read_timeout: Option<Duration>,
    /// TLS settings; `None` = plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ConnectParams {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// SSLRequest, then the TLS handshake (rustls drives it on first use).
fn start_tls(
    mut tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    host: &str,
) -> Result<Stream, WireError> {
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)?;
    if answer[0] != b'S' {
        return Err(WireError::Protocol(
            "the server does not accept TLS connections, and options.ssl requires TLS".into(),
        ));
    }
    let name = super::tls::server_name(host).map_err(WireError::Protocol)?;
    let mut connection = rustls::ClientConnection::new(config, name)
        .map_err(|err| WireError::Protocol(format!("TLS: {err}")))?;
    while connection.is_handshaking() {
        connection
            .complete_io(&mut tcp)
            .map_err(|err| WireError::Protocol(format!("TLS handshake failed: {err}")))?;
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(
        connection, tcp,
    ))))
}

fn open_tcp(params: &ConnectParams) -> io::Result<TcpStream> {
    let addresses = (params.host.as_str(), params.port).to_socket_addrs()?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "host has no address");
    for address in addresses {
        let attempt = match params.connect_timeout {
            Some(timeout) => TcpStream::connect_timeout(&address, timeout),
            None => TcpStream::connect(address),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = err,
        }
    }
    Err(last_error)
}

impl Connection {
    pub fn connect(params: &ConnectParams) -> Result<Self, WireError> {
        let tcp = open_tcp(params)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(params.read_timeout)?;
        let stream = match &params.tls {
            Some(config) => start_tls(tcp, config.clone(), &params.host)?,
            None => Stream::Plain(tcp),
        };
        let mut connection = Connection {
            stream,
            read_buf: BytesMut::with_capacity(16 * 1024),
            write_buf: BytesMut::with_capacity(4 * 1024),
            broken: false,
            statements: super::SessionStatements::default(),
            last_used: Instant::now(),
        };
        connection.startup(params)?;
        Ok(connection)
    }

    fn startup(&mut self, params: &ConnectParams) -> Result<(), WireError> {
        // Session defaults that make text results ISO 8601 and stable; they
        // are what RESET/DISCARD ALL return to.
        let statement_timeout = params.statement_timeout_ms.to_string();
        let parameters = [
            ("user", params.user.as_str()),
            ("database", params.database.as_str()),
            ("application_name", params.application_name.as_str()),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, YMD"),
            ("IntervalStyle", "iso_8601"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
            ("statement_timeout", statement_timeout.as_str()),
        ];
        frontend::startup_message(parameters.iter().copied(), &mut self.write_buf)?;
        self.flush()?;
        let deadline = params
            .connect_timeout
            .map(|timeout| Instant::now() + timeout);
        let mut scram: Option<ScramSha256> = None;
        loop {
            if deadline.is_some_and(|deadline| Instant::now() > deadline) {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "startup timed out",
                )));
            }
            match self.read_message()? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let password = params
                        .password
                        .as_deref()
                        .ok_or(WireError::PasswordMissing)?;
                    frontend::password_message(password.as_bytes(), &mut self.write_buf)?;
                    self.flush()?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let password = params
                        .password
                        .as_deref()
                        .ok_or(WireError::PasswordMissing)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        params.user.as_bytes(),
                        password.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                    self.flush()?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut supported = false;
                    while let Some(mechanism) = fallible_next(&mut mechanisms)? {
                        supported |= mechanism == SCRAM_SHA_256;
                    }
                    if !supported {
                        return Err(WireError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                    }
                    let password = params
                        .password
                        .as_deref()
                        .ok_or(WireError::PasswordMissing)?;
                    let client =
                        ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        SCRAM_SHA_256,
                        client.message(),
                        &mut self.write_buf,
                    )?;
                    self.flush()?;
                    scram = Some(client);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let client = scram
                        .as_mut()
                        .ok_or_else(|| WireError::Protocol("unexpected SASL continue".into()))?;
                    client.update(body.data())?;
                    frontend::sasl_response(client.message(), &mut self.write_buf)?;
                    self.flush()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let client = scram
                        .as_mut()
                        .ok_or_else(|| WireError::Protocol("unexpected SASL final".into()))?;
                    client.finish(body.data())?;
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(WireError::UnsupportedAuth("GSS/SSPI/Kerberos"));
                }
                Message::ErrorResponse(body) => {
                    return Err(WireError::Db(super::message::db_error(&body)?))
                }
                Message::ReadyForQuery(_) => return Ok(()),
                // ParameterStatus, BackendKeyData, notices.
                _ => {}
            }
        }
    }

    /// The next backend message, reading from the socket as needed.
    pub(super) fn read_message(&mut self) -> Result<Message, WireError> {
        loop {
            match Message::parse(&mut self.read_buf) {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => {}
                Err(err) => {
                    self.broken = true;
                    return Err(WireError::Protocol(err.to_string()));
                }
            }
            let start = self.read_buf.len();
            self.read_buf.resize(start + 16 * 1024, 0);
            match self.stream.read(&mut self.read_buf[start..]) {
                Ok(0) => {
                    self.read_buf.truncate(start);
                    self.broken = true;
                    return Err(WireError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )));
                }
                Ok(read) => self.read_buf.truncate(start + read),
                Err(err) => {
                    self.read_buf.truncate(start);
                    self.broken = true;
                    return Err(WireError::Io(err));
                }
            }
        }
    }
}

fn fallible_next<I>(iter: &mut I) -> io::Result<Option<I::Item>>
where
    I: fallible_iterator::FallibleIterator<Error = io::Error>,
{
    iter.next()
}
