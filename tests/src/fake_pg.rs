//! Attacker stand-ins for the database authentication tests.
//!
//! [`FakePg`] speaks the PostgreSQL v3 wire protocol on 127.0.0.1 (TLS too,
//! when given a certificate), plays one scripted authentication per
//! connection, as a hostile server or a downgrading man in the middle
//! would, and records what the client sent. [`Mitm`] is the man in the
//! middle proper: it terminates the client's TLS with a certificate of its
//! choosing and relays the session to a real server over a second TLS
//! connection, so the real server judges the client's channel binding.
//!
//! Backend messages are written by hand (postgres-protocol only encodes
//! frontend messages); frontend messages are only framed and the few
//! fields the tests look at picked out.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::Digest;

pub const SCRAM: &str = "SCRAM-SHA-256";
pub const SCRAM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The salt of the fake's AuthenticationMD5Password.
pub const MD5_SALT: [u8; 4] = [0x5a, 0x17, 0x3c, 0x99];
const SSL_REQUEST: u32 = 80_877_103;
/// How long a session waits for the other side before giving up.
const WAIT: Duration = Duration::from_secs(30);

/// What the fake does after the client's start-up message.
#[derive(Debug, Clone)]
pub enum Script {
    /// AuthenticationCleartextPassword.
    Cleartext,
    /// AuthenticationMD5Password with [`MD5_SALT`].
    Md5,
    /// AuthenticationOk straight away (`trust`).
    Trust,
    /// AuthenticationSASL offering `mechanisms`, then AuthenticationOk
    /// without SASLFinal: right after the client's first message, or after
    /// a server-first message and the client's proof if `after_continue`.
    SaslSkipFinal {
        mechanisms: Vec<&'static str>,
        after_continue: bool,
    },
    /// A whole SCRAM exchange whose SASLFinal carries a server signature
    /// made without knowing the password, then AuthenticationOk.
    SaslWrongSignature { mechanisms: Vec<&'static str> },
}

/// What clients sent the fake, over all connections.
#[derive(Default, Clone)]
pub struct Seen {
    pub connections: usize,
    /// Connections that asked for TLS and got it.
    pub tls_connections: usize,
    /// Every byte received (after TLS), all connections appended.
    pub bytes: Vec<u8>,
    /// PasswordMessages answering a cleartext or MD5 request, without
    /// their NUL.
    pub passwords: Vec<Vec<u8>>,
    /// The mechanism of each SASLInitialResponse.
    pub mechanisms: Vec<String>,
    /// The GS2 header of each client-first message (`n,,`, `y,,`,
    /// `p=tls-server-end-point,,`).
    pub gs2_headers: Vec<String>,
    /// The decoded `c=` of each client-final message: the GS2 header, then
    /// the channel binding data.
    pub channel_bindings: Vec<Vec<u8>>,
    /// Messages sent after the fake's ReadyForQuery: the client took the
    /// login and went on.
    pub after_ready: usize,
}

impl Seen {
    pub fn received(&self, needle: &[u8]) -> bool {
        self.bytes
            .windows(needle.len())
            .any(|window| window == needle)
    }
}

impl std::fmt::Debug for Seen {
    /// Everything but the raw bytes, which only their count stands for.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |items: &[Vec<u8>]| -> Vec<String> {
            items
                .iter()
                .map(|item| String::from_utf8_lossy(item).into_owned())
                .collect()
        };
        f.debug_struct("Seen")
            .field("connections", &self.connections)
            .field("tls_connections", &self.tls_connections)
            .field("bytes", &self.bytes.len())
            .field("passwords", &text(&self.passwords))
            .field("mechanisms", &self.mechanisms)
            .field("gs2_headers", &self.gs2_headers)
            .field("channel_bindings", &self.channel_bindings)
            .field("after_ready", &self.after_ready)
            .finish()
    }
}

/// A fake server; it stops listening when dropped.
pub struct FakePg {
    pub port: u16,
    seen: Arc<Mutex<Seen>>,
    /// The DER certificate it presents over TLS.
    pub certificate: Option<Vec<u8>>,
    _listener: Listener,
}

impl FakePg {
    /// Plain TCP: an SSLRequest is answered 'N'.
    pub fn start(script: Script) -> Self {
        Self::launch(script, None)
    }

    /// Accepts TLS with `cert_pem`/`key_pem` (plain start-ups as well).
    pub fn start_tls(script: Script, cert_pem: &str, key_pem: &str) -> Self {
        Self::launch(script, Some((cert_pem, key_pem)))
    }

    fn launch(script: Script, tls: Option<(&str, &str)>) -> Self {
        let certificate = tls.map(|(cert, _)| certificates(cert)[0].to_vec());
        let tls = tls.map(|(cert, key)| server_config(cert, key));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        let listener = listen(move |tcp| {
            let _ = fake_session(tcp, &script, tls.as_ref(), &record);
        });
        Self {
            port: listener.port,
            seen,
            certificate,
            _listener: listener,
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The channel binding data a client bound to this fake's certificate
    /// sends (RFC 5929 `tls-server-end-point`; the test certificates are
    /// signed with SHA-256).
    pub fn end_point(&self) -> Vec<u8> {
        sha2::Sha256::digest(self.certificate.as_ref().expect("a TLS fake")).to_vec()
    }
}

fn fake_session(
    tcp: TcpStream,
    script: &Script,
    tls: Option<&Arc<rustls::ServerConfig>>,
    seen: &Mutex<Seen>,
) -> io::Result<()> {
    let (mut io, tls_used, startup) = accept(tcp, tls)?;
    let record = |update: &dyn Fn(&mut Seen)| update(&mut seen.lock().expect("seen lock"));
    record(&|s| {
        s.connections += 1;
        s.tls_connections += usize::from(tls_used);
        s.bytes.extend_from_slice(&startup);
    });
    let next = |io: &mut dyn Io| {
        let (kind, body) = read_message(io)?;
        record(&|s| s.bytes.extend_from_slice(&message(kind, &body)));
        Ok::<_, io::Error>((kind, body))
    };
    let logged_in = match script {
        Script::Cleartext | Script::Md5 => {
            let request = match script {
                Script::Cleartext => auth(3, &[]),
                _ => auth(5, &MD5_SALT),
            };
            send(&mut io, &request)?;
            let (kind, body) = next(&mut io)?;
            if kind == b'p' {
                let password = body.strip_suffix(&[0]).unwrap_or(&body).to_vec();
                record(&|s| s.passwords.push(password.clone()));
            }
            send(&mut io, &error("password authentication failed"))?;
            false
        }
        Script::Trust => true,
        Script::SaslSkipFinal { mechanisms, .. } | Script::SaslWrongSignature { mechanisms } => {
            send(&mut io, &auth(10, &mechanism_list(mechanisms)))?;
            let (_, body) = next(&mut io)?;
            let (mechanism, first) = initial_response(&body)?;
            let (header, bare) = split_gs2(&first);
            record(&|s| {
                s.mechanisms.push(mechanism.clone());
                s.gs2_headers.push(header.to_owned());
            });
            let at_once = matches!(
                script,
                Script::SaslSkipFinal {
                    after_continue: false,
                    ..
                }
            );
            if !at_once {
                let nonce = attribute(bare, "r=").unwrap_or_default();
                let salt = B64.encode(b"fake-salt-16byte");
                let server_first = format!("r={nonce}fakeservernonce,s={salt},i=4096");
                send(&mut io, &auth(11, server_first.as_bytes()))?;
                let (_, body) = next(&mut io)?;
                let client_final = String::from_utf8_lossy(&body).into_owned();
                let binding = attribute(&client_final, "c=").unwrap_or_default();
                let binding = B64.decode(binding).unwrap_or_default();
                record(&|s| s.channel_bindings.push(binding.clone()));
                if let Script::SaslWrongSignature { .. } = script {
                    let signature = format!("v={}", B64.encode([7u8; 32]));
                    send(&mut io, &auth(12, signature.as_bytes()))?;
                }
            }
            true
        }
    };
    if logged_in {
        // What a server sends once the client is in.
        let mut welcome = auth(0, &[]);
        welcome.extend(message(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
        welcome.extend(message(b'S', b"server_version\x0015.0\x00"));
        welcome.extend(message(b'Z', b"I"));
        send(&mut io, &welcome)?;
        // A client that took the login goes on (a query); one that
        // refused it hangs up.
        if next(&mut io).is_ok() {
            record(&|s| s.after_ready += 1);
            send(&mut io, &error("the fake server ends here"))?;
        }
    }
    Ok(())
}

/// What went through a [`Mitm`], over all connections.
#[derive(Debug, Default, Clone)]
pub struct MitmSeen {
    pub connections: usize,
    /// The SASL mechanisms the real server offered.
    pub offered: Vec<String>,
    /// The mechanism and GS2 header of each client-first message.
    pub mechanisms: Vec<String>,
    pub gs2_headers: Vec<String>,
    /// AuthenticationOk messages from the real server: logins that worked
    /// through the man in the middle.
    pub logins: usize,
    /// The messages of the real server's ErrorResponses.
    pub server_errors: Vec<String>,
}

/// A TLS-terminating man in the middle; it stops listening when dropped.
pub struct Mitm {
    pub port: u16,
    seen: Arc<Mutex<MitmSeen>>,
    _listener: Listener,
}

impl Mitm {
    /// Presents `cert_pem`/`key_pem` to clients and relays each session to
    /// the real server on 127.0.0.1:`upstream_port` over TLS verified with
    /// `upstream_ca_pem`. With `strip_plus` it removes SCRAM-SHA-256-PLUS
    /// from the server's offer, as a downgrading attacker would.
    pub fn start(
        upstream_port: u16,
        upstream_ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
        strip_plus: bool,
    ) -> Self {
        let server_tls = server_config(cert_pem, key_pem);
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates(upstream_ca_pem) {
            roots.add(certificate).expect("upstream CA");
        }
        let client_tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let seen = Arc::new(Mutex::new(MitmSeen::default()));
        let record = seen.clone();
        let listener = listen(move |tcp| {
            let upstream = (upstream_port, client_tls.clone(), strip_plus);
            let _ = relay(tcp, &server_tls, upstream, &record);
        });
        Self {
            port: listener.port,
            seen,
            _listener: listener,
        }
    }

    pub fn seen(&self) -> MitmSeen {
        self.seen.lock().expect("seen lock").clone()
    }
}

fn relay(
    tcp: TcpStream,
    server_tls: &Arc<rustls::ServerConfig>,
    (port, client_tls, strip_plus): (u16, Arc<rustls::ClientConfig>, bool),
    seen: &Mutex<MitmSeen>,
) -> io::Result<()> {
    let record = |update: &dyn Fn(&mut MitmSeen)| update(&mut seen.lock().expect("seen lock"));
    let (mut client, _, startup) = accept(tcp, Some(server_tls))?;
    record(&|s| s.connections += 1);
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(WAIT))?;
    tcp.write_all(&[0, 0, 0, 8])?;
    tcp.write_all(&SSL_REQUEST.to_be_bytes())?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)?;
    if answer != *b"S" {
        return Err(io::Error::other("the real server refused TLS"));
    }
    let name = ServerName::try_from("127.0.0.1").map_err(io::Error::other)?;
    let connection = rustls::ClientConnection::new(client_tls, name).map_err(io::Error::other)?;
    let mut server = rustls::StreamOwned::new(connection, tcp);
    send(&mut server, &startup)?;
    // Authentication: the server speaks until it needs the client's answer.
    loop {
        let (kind, mut body) = read_message(&mut server)?;
        let code = body
            .get(..4)
            .map_or(u32::MAX, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        if kind == b'R' && code == 10 {
            let offered: Vec<String> = body[4..]
                .split(|&b| b == 0)
                .filter(|name| !name.is_empty())
                .map(|name| String::from_utf8_lossy(name).into_owned())
                .collect();
            record(&|s| s.offered.extend(offered.iter().cloned()));
            if strip_plus {
                body = auth(10, &mechanism_list(&[SCRAM]))[5..].to_vec();
            }
        }
        send(&mut client, &message(kind, &body))?;
        match (kind, code) {
            (b'R', 0) => record(&|s| s.logins += 1),
            (b'R', 10 | 11) => {
                let (kind, body) = read_message(&mut client)?;
                if code == 10 {
                    let (mechanism, first) = initial_response(&body)?;
                    let (header, _) = split_gs2(&first);
                    record(&|s| {
                        s.mechanisms.push(mechanism.clone());
                        s.gs2_headers.push(header.to_owned());
                    });
                }
                send(&mut server, &message(kind, &body))?;
            }
            (b'E', _) => {
                let text = error_text(&body);
                record(&|s| s.server_errors.push(text.clone()));
                return Ok(());
            }
            (b'Z', _) => break,
            _ => {}
        }
    }
    // Logged in: relay each group the client ends with Sync or Query, then
    // the server's answers up to ReadyForQuery.
    loop {
        let (kind, body) = read_message(&mut client)?;
        send(&mut server, &message(kind, &body))?;
        match kind {
            b'X' => return Ok(()),
            b'S' | b'Q' => loop {
                let (kind, body) = read_message(&mut server)?;
                send(&mut client, &message(kind, &body))?;
                if kind == b'Z' {
                    break;
                }
            },
            _ => {}
        }
    }
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// Reads the start-up message, answering an SSLRequest with 'S' and a TLS
/// handshake when `tls` is set, else 'N': the stream, whether it is TLS,
/// and the start-up message as sent (length included).
fn accept(
    mut tcp: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> io::Result<(Box<dyn Io>, bool, Vec<u8>)> {
    tcp.set_read_timeout(Some(WAIT))?;
    let packet = read_startup(&mut tcp)?;
    if packet[4..8] != SSL_REQUEST.to_be_bytes() {
        return Ok((Box::new(tcp), false, packet));
    }
    let Some(config) = tls else {
        tcp.write_all(b"N")?;
        let packet = read_startup(&mut tcp)?;
        return Ok((Box::new(tcp), false, packet));
    };
    tcp.write_all(b"S")?;
    let connection = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let packet = read_startup(&mut stream)?;
    Ok((Box::new(stream), true, packet))
}

/// A start-up packet (no type byte), length included.
fn read_startup(io: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut packet = vec![0u8; 4];
    io.read_exact(&mut packet)?;
    let length = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]) as usize;
    if !(8..=10_000).contains(&length) {
        return Err(io::Error::other("bad start-up length"));
    }
    packet.resize(length, 0);
    io.read_exact(&mut packet[4..])?;
    Ok(packet)
}

/// One framed message: (type, body).
fn read_message(io: &mut (impl Read + ?Sized)) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    io.read_exact(&mut head)?;
    let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(4..=1 << 24).contains(&length) {
        return Err(io::Error::other("bad message length"));
    }
    let mut body = vec![0u8; length - 4];
    io.read_exact(&mut body)?;
    Ok((head[0], body))
}

fn send(io: &mut (impl Write + ?Sized), bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes)?;
    io.flush()
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An authentication request ('R') with its code and data.
fn auth(code: u32, data: &[u8]) -> Vec<u8> {
    message(b'R', &[&code.to_be_bytes()[..], data].concat())
}

fn mechanism_list(mechanisms: &[&str]) -> Vec<u8> {
    let mut list = Vec::new();
    for mechanism in mechanisms {
        list.extend_from_slice(mechanism.as_bytes());
        list.push(0);
    }
    list.push(0);
    list
}

/// A FATAL ErrorResponse.
fn error(text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28P01"),
        (b'M', text),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// The 'M' field of an ErrorResponse body.
fn error_text(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map(|text| String::from_utf8_lossy(text).into_owned())
        .unwrap_or_default()
}

/// SASLInitialResponse: (mechanism, client-first message).
fn initial_response(body: &[u8]) -> io::Result<(String, String)> {
    let nul = body
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| io::Error::other("no mechanism"))?;
    let data = body.get(nul + 5..).unwrap_or_default();
    Ok((
        String::from_utf8_lossy(&body[..nul]).into_owned(),
        String::from_utf8_lossy(data).into_owned(),
    ))
}

/// A client-first message split after its GS2 header, which ends at the
/// second comma: (`n,,`/`y,,`/`p=tls-server-end-point,,`, the rest).
fn split_gs2(first: &str) -> (&str, &str) {
    let end = first
        .match_indices(',')
        .nth(1)
        .map_or(first.len(), |(i, _)| i + 1);
    first.split_at(end)
}

/// The value of a SCRAM attribute (`r=`, `c=`) in a comma-separated message.
fn attribute<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message
        .split(',')
        .find_map(|part| part.strip_prefix(prefix))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certificate PEM")
}

fn server_config(cert_pem: &str, key_pem: &str) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certificates(cert_pem), key)
            .expect("server certificate"),
    )
}

/// A loopback listener handing each connection to `handler` on its own
/// thread, until dropped.
struct Listener {
    port: u16,
    stop: Arc<AtomicBool>,
}

fn listen(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local address").port();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            if stopped.load(Ordering::SeqCst) {
                break;
            }
            let Ok(tcp) = tcp else { continue };
            let handler = handler.clone();
            std::thread::spawn(move || handler(tcp));
        }
    });
    Listener { port, stop }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
