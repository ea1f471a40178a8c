//! Opening a connection: TCP, TLS, start-up, and authentication that a
//! server (or someone in the middle) cannot downgrade.
//!
//! The client answers only the methods `options.requireAuth` names
//! ([`AuthMethod`]; SCRAM-SHA-256 by default), sends a cleartext password
//! only over TLS that verified the server, takes `AuthenticationOk` only
//! once the method it chose has completed (for SCRAM: after the server's
//! signature in SASLFinal checked out), and binds SCRAM to the TLS channel
//! (SCRAM-SHA-256-PLUS, `tls-server-end-point`) when TLS is on.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use postgres_protocol::message::{backend::Message, frontend};

use super::read::INITIAL_BUFFER;
use super::{CancelKey, Connection, WireError};

/// An authentication method the client may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ScramSha256,
    Md5,
    /// Cleartext: only over TLS that verifies the server.
    Password,
    /// No authentication at all (`trust`).
    None,
}

impl AuthMethod {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "scram-sha-256" => AuthMethod::ScramSha256,
            "md5" => AuthMethod::Md5,
            "password" => AuthMethod::Password,
            "none" => AuthMethod::None,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Password => "password",
            AuthMethod::None => "none",
        }
    }
}

/// TLS for a connection: the rustls config and whether it verifies the
/// server's certificate (`verify-ca`, `verify-full`).
#[derive(Clone)]
pub struct TlsSettings {
    pub config: Arc<rustls::ClientConfig>,
    pub verifies_server: bool,
}

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
    /// `None` = plain TCP.
    pub tls: Option<TlsSettings>,
    /// The methods the client answers (`options.requireAuth`).
    pub require_auth: Vec<AuthMethod>,
    /// `options.channelBinding: "require"`: SCRAM-SHA-256-PLUS over TLS
    /// or no login.
    pub require_channel_binding: bool,
    /// Whether this connection is a session of its own or a client of a
    /// transaction-mode pooler.
    pub pooling: Pooling,
}

/// What a connection is to the server behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// A session of our own: named statements and session defaults set at
    /// start-up last as long as the connection.
    #[default]
    Session,
    /// A client of PgBouncer with `pool_mode = transaction`: each
    /// transaction may run on another server session, so nothing may
    /// outlive one. Start-up carries only the parameters PgBouncer
    /// accepts; the session defaults are set per transaction, statements
    /// are unnamed, and every batch cleans the server session up when it
    /// begins and resets it when it ends (see `crate::execute`).
    Transaction,
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

impl Stream {
    /// The `tls-server-end-point` channel binding data: a hash of the
    /// server's certificate (RFC 5929).
    fn server_end_point(&self) -> Option<Vec<u8>> {
        let Stream::Tls(tls) = self else {
            return None;
        };
        let certificate = tls.conn.peer_certificates()?.first()?;
        super::tls::server_end_point(certificate.as_ref())
    }
}

/// SSLRequest, then the TLS handshake.
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

fn open_tcp(params: &ConnectParams) -> io::Result<(TcpStream, SocketAddr)> {
    let addresses = (params.host.as_str(), params.port).to_socket_addrs()?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "host has no address");
    for address in addresses {
        let attempt = match params.connect_timeout {
            Some(timeout) => TcpStream::connect_timeout(&address, timeout),
            None => TcpStream::connect(address),
        };
        match attempt {
            Ok(stream) => return Ok((stream, address)),
            Err(err) => last_error = err,
        }
    }
    Err(last_error)
}

/// Where authentication stands during start-up.
enum AuthState {
    /// Nothing asked yet.
    Start,
    /// A password (cleartext or MD5) was sent.
    PasswordSent,
    /// SCRAM under way.
    Scram(Box<ScramSha256>),
    /// SCRAM completed and the server proved it knows the password.
    ScramVerified,
    /// AuthenticationOk received.
    Done,
}

impl Connection {
    pub fn connect(params: &ConnectParams) -> Result<Self, WireError> {
        let (tcp, address) = open_tcp(params)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(params.read_timeout)?;
        let stream = match &params.tls {
            Some(tls) => start_tls(tcp, tls.config.clone(), &params.host)?,
            None => Stream::Plain(tcp),
        };
        let mut connection = Connection {
            stream,
            read_buf: BytesMut::with_capacity(INITIAL_BUFFER),
            buffer_grew: false,
            write_buf: BytesMut::with_capacity(4 * 1024),
            broken: false,
            statements: super::SessionStatements::default(),
            pooling: params.pooling,
            defaults: std::sync::Arc::new(super::SessionDefaults {
                statement_timeout: params.statement_timeout_ms.to_string().into(),
                application_name: params.application_name.as_str().into(),
            }),
            last_used: Instant::now(),
            cancel: None,
            server_major: 0,
        };
        connection.startup(params, address)?;
        Ok(connection)
    }

    fn require(params: &ConnectParams, method: AuthMethod) -> Result<(), WireError> {
        if params.require_auth.contains(&method) {
            Ok(())
        } else {
            Err(WireError::AuthRefused(format!(
                "the server asked for {} authentication",
                method.name()
            )))
        }
    }

    /// The SCRAM mechanism and channel binding, given what the server
    /// offers. Over TLS, never "no binding": PLUS when offered (with the
    /// certificate's hash, or not at all), else "y" (the client could have
    /// bound: a server that supports binding but saw PLUS stripped from
    /// its list refuses the exchange). `channelBinding: "require"` accepts
    /// PLUS only.
    fn choose_scram(
        &self,
        params: &ConnectParams,
        plain: bool,
        plus: bool,
    ) -> Result<(&'static str, ChannelBinding), WireError> {
        let tls = matches!(self.stream, Stream::Tls(_));
        if params.require_channel_binding && !(tls && plus) {
            return Err(WireError::AuthRefused(
                "options.channelBinding is \"require\" but the server offers no \
                 SCRAM-SHA-256-PLUS over TLS"
                    .into(),
            ));
        }
        if tls && plus {
            let hash = self.stream.server_end_point().ok_or_else(|| {
                WireError::AuthRefused(
                    "the server's certificate names no hash for channel binding".into(),
                )
            })?;
            return Ok((
                SCRAM_SHA_256_PLUS,
                ChannelBinding::tls_server_end_point(hash),
            ));
        }
        match (plain, tls) {
            (true, true) => Ok((SCRAM_SHA_256, ChannelBinding::unrequested())),
            (true, false) => Ok((SCRAM_SHA_256, ChannelBinding::unsupported())),
            (false, _) => Err(WireError::UnsupportedAuth("SASL without SCRAM-SHA-256")),
        }
    }

    fn password(params: &ConnectParams) -> Result<&str, WireError> {
        params.password.as_deref().ok_or(WireError::PasswordMissing)
    }

    fn startup(&mut self, params: &ConnectParams, address: SocketAddr) -> Result<(), WireError> {
        // Session defaults that make text results ISO 8601 and stable; they
        // are what RESET/DISCARD ALL return to.
        let statement_timeout = params.statement_timeout_ms.to_string();
        let mut parameters = vec![
            ("user", params.user.as_str()),
            ("database", params.database.as_str()),
            ("application_name", params.application_name.as_str()),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, YMD"),
            ("IntervalStyle", "iso_8601"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
            ("statement_timeout", statement_timeout.as_str()),
            // The SQL policy lexes with pg_query, which reads backslashes
            // in '…' literally: so must the server, whatever a role or
            // database default says (a client value takes precedence).
            ("standard_conforming_strings", "on"),
        ];
        if params.pooling == Pooling::Transaction {
            // A transaction-mode pooler refuses start-up parameters it
            // does not track (PgBouncer: "unsupported startup parameter"),
            // and could not keep them per client anyway: these three are
            // set in every transaction instead (crate::sql::SET_ROLE_POOLED).
            parameters.retain(|(name, _)| {
                !matches!(
                    *name,
                    "IntervalStyle" | "extra_float_digits" | "statement_timeout"
                )
            });
        }
        frontend::startup_message(parameters.iter().copied(), &mut self.write_buf)?;
        self.flush()?;
        let deadline = params
            .connect_timeout
            .map(|timeout| Instant::now() + timeout);
        let mut state = AuthState::Start;
        loop {
            if deadline.is_some_and(|deadline| Instant::now() > deadline) {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "startup timed out",
                )));
            }
            match self.read_message()? {
                Message::AuthenticationOk => {
                    match state {
                        AuthState::Start => Self::require(params, AuthMethod::None)?,
                        AuthState::PasswordSent | AuthState::ScramVerified => {}
                        AuthState::Scram(_) => {
                            return Err(WireError::AuthRefused(
                                "the server ended SCRAM without proving it knows the password \
                                 (no SASLFinal)"
                                    .into(),
                            ))
                        }
                        AuthState::Done => {
                            return Err(WireError::Protocol("a second AuthenticationOk".into()))
                        }
                    }
                    state = AuthState::Done;
                }
                Message::AuthenticationCleartextPassword => {
                    Self::require(params, AuthMethod::Password)?;
                    if !params.tls.as_ref().is_some_and(|tls| tls.verifies_server) {
                        return Err(WireError::AuthRefused(
                            "a cleartext password is sent only over TLS that verifies the \
                             server (options.ssl.mode verify-ca or verify-full)"
                                .into(),
                        ));
                    }
                    let password = Self::password(params)?;
                    frontend::password_message(password.as_bytes(), &mut self.write_buf)?;
                    self.flush()?;
                    state = AuthState::PasswordSent;
                }
                Message::AuthenticationMd5Password(body) => {
                    Self::require(params, AuthMethod::Md5)?;
                    let password = Self::password(params)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        params.user.as_bytes(),
                        password.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                    self.flush()?;
                    state = AuthState::PasswordSent;
                }
                Message::AuthenticationSasl(body) => {
                    Self::require(params, AuthMethod::ScramSha256)?;
                    if !matches!(state, AuthState::Start) {
                        return Err(WireError::Protocol("unexpected SASL start".into()));
                    }
                    let mut mechanisms = body.mechanisms();
                    let (mut plain, mut plus) = (false, false);
                    while let Some(mechanism) = fallible_next(&mut mechanisms)? {
                        plain |= mechanism == SCRAM_SHA_256;
                        plus |= mechanism == SCRAM_SHA_256_PLUS;
                    }
                    let (mechanism, binding) = self.choose_scram(params, plain, plus)?;
                    let password = Self::password(params)?;
                    let client = ScramSha256::new(password.as_bytes(), binding);
                    frontend::sasl_initial_response(
                        mechanism,
                        client.message(),
                        &mut self.write_buf,
                    )?;
                    self.flush()?;
                    state = AuthState::Scram(Box::new(client));
                }
                Message::AuthenticationSaslContinue(body) => {
                    let AuthState::Scram(client) = &mut state else {
                        return Err(WireError::Protocol("unexpected SASL continue".into()));
                    };
                    client.update(body.data())?;
                    frontend::sasl_response(client.message(), &mut self.write_buf)?;
                    self.flush()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let AuthState::Scram(client) = &mut state else {
                        return Err(WireError::Protocol("unexpected SASL final".into()));
                    };
                    client.finish(body.data()).map_err(|err| {
                        WireError::AuthRefused(format!(
                            "the server's SCRAM signature did not verify: {err}"
                        ))
                    })?;
                    state = AuthState::ScramVerified;
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
                Message::BackendKeyData(body) => {
                    self.cancel = Some(CancelKey {
                        address,
                        process_id: body.process_id(),
                        secret_key: body.secret_key(),
                    });
                }
                Message::ParameterStatus(body) if !super::message::parameter_is_safe(&body)? => {
                    return Err(WireError::Protocol(
                        "the server runs with a setting the SQL policy cannot trust \
                         (standard_conforming_strings or client_encoding)"
                            .into(),
                    ));
                }
                Message::ParameterStatus(body)
                    if body.name().map_err(WireError::Io)? == "server_version" =>
                {
                    let version = body.value().map_err(WireError::Io)?;
                    self.server_major = version
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|major| major.parse().ok())
                        .unwrap_or(0);
                }
                Message::ReadyForQuery(_) => {
                    if !matches!(state, AuthState::Done) {
                        return Err(WireError::Protocol(
                            "ready for query before authentication completed".into(),
                        ));
                    }
                    return Ok(());
                }
                // Notices.
                _ => {}
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
