//! TLS to the database with rustls (no OpenSSL). `options.ssl` is the
//! seed's: `false`, `true` (verify against the Mozilla roots), or
//! `{mode, rejectUnauthorized, ca, cert, key}` with PEM text or file paths;
//! `mode` is libpq's `disable`, `require`, `verify-ca` or `verify-full`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;

/// PEM text, or the path of a file holding it.
fn pem_bytes(value: &Value, field: &str) -> Result<Vec<u8>, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("options.ssl.{field} must be a string (PEM or a file path)"))?;
    if text.contains("-----BEGIN") {
        return Ok(text.as_bytes().to_vec());
    }
    std::fs::read(text).map_err(|err| format!("options.ssl.{field}: cannot read {text}: {err}"))
}

fn certificates(value: &Value, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = pem_bytes(value, field)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|err| format!("options.ssl.{field}: not a PEM certificate: {err}"))?;
    if certs.is_empty() {
        return Err(format!("options.ssl.{field}: no certificate found"));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `options.ssl.mode`, as libpq names the modes we support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// Encrypted, the server not authenticated.
    Require,
    /// The certificate chains to a trusted CA; any host name.
    VerifyCa,
    /// The certificate chains to a trusted CA and names the host.
    VerifyFull,
}

impl SslMode {
    pub fn verifies_server(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// The mode `options.ssl` asks for: `false` disables, `true` is
/// `verify-full` (as the seed's `ssl: true` verified against public CAs),
/// an object says `mode`, or `rejectUnauthorized: false` (`require`), else
/// `verify-full`.
pub fn mode_of(ssl: Option<&Value>) -> Result<SslMode, String> {
    let options = match ssl {
        None | Some(Value::Bool(false)) | Some(Value::Null) => return Ok(SslMode::Disable),
        Some(Value::Bool(true)) => return Ok(SslMode::VerifyFull),
        Some(object @ Value::Object(_)) => object,
        Some(_) => return Err("options.ssl must be false, true or an object".into()),
    };
    let reject = options.get("rejectUnauthorized").and_then(Value::as_bool);
    let mode = match options.get("mode") {
        None => {
            if reject == Some(false) {
                SslMode::Require
            } else {
                SslMode::VerifyFull
            }
        }
        Some(Value::String(mode)) => match mode.as_str() {
            "disable" => SslMode::Disable,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "options.ssl.mode '{other}' is not one of disable, require, verify-ca, \
                     verify-full"
                ))
            }
        },
        Some(_) => return Err("options.ssl.mode must be a string".into()),
    };
    match (reject, mode) {
        (Some(false), mode) if mode.verifies_server() => Err(format!(
            "options.ssl.rejectUnauthorized false contradicts options.ssl.mode {mode:?}"
        )),
        (Some(true), SslMode::Require) => Err(
            "options.ssl.rejectUnauthorized true contradicts options.ssl.mode \"require\" \
             (which does not verify the server): use verify-ca or verify-full"
                .into(),
        ),
        // As libpq: a trusted CA given to `require` verifies the chain.
        (_, SslMode::Require) if options.get("ca").is_some() => Ok(SslMode::VerifyCa),
        // Any name under any public CA would pass: anyone with a free
        // certificate could sit in the middle.
        (_, SslMode::VerifyCa) if options.get("ca").is_none() => Err(
            "options.ssl.mode \"verify-ca\" needs options.ssl.ca (without it any \
             publicly issued certificate for any name would pass)"
                .into(),
        ),
        _ => Ok(mode),
    }
}

/// The TLS settings for `options.ssl`, or `None` for plain TCP.
pub fn client_config(ssl: Option<&Value>) -> Result<Option<super::connect::TlsSettings>, String> {
    let mode = mode_of(ssl)?;
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let empty = Value::Object(Default::default());
    let options = match ssl {
        Some(object @ Value::Object(_)) => object,
        _ => &empty,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?;
    let builder = if mode.verifies_server() {
        let mut roots = RootCertStore::empty();
        match options.get("ca") {
            Some(ca) => {
                for cert in certificates(ca, "ca")? {
                    roots
                        .add(cert)
                        .map_err(|err| format!("options.ssl.ca: {err}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        if mode == SslMode::VerifyCa {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|err| format!("options.ssl.ca: {err}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyHostName(inner)))
        } else {
            builder.with_root_certificates(roots)
        }
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
    };
    let config = match (options.get("cert"), options.get("key")) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "cert")?;
            let key = PrivateKeyDer::from_pem_slice(&pem_bytes(key, "key")?)
                .map_err(|err| format!("options.ssl.key: not a PEM private key: {err}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| format!("options.ssl.cert/key: {err}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("options.ssl.cert and options.ssl.key go together".into()),
    };
    Ok(Some(super::connect::TlsSettings {
        config: Arc::new(config),
        verifies_server: mode.verifies_server(),
    }))
}

/// `verify-ca`: the chain must verify, the name in it may be any.
#[derive(Debug)]
struct AnyHostName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// One DER element at the start of `input`: (tag, content, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// The hash `tls-server-end-point` uses for a certificate signed with the
/// algorithm `oid` (RFC 5929: the signature's own hash; SHA-256 for MD5
/// and SHA-1). `None` for an algorithm without one (Ed25519, unknown).
fn end_point_hash(oid: &[u8], parameters: &[u8]) -> Option<EndPointHash> {
    const RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04];
    if let Some(last) = oid.strip_prefix(RSA) {
        return match last {
            // md5, sha1, sha256 with RSA.
            [0x04 | 0x05 | 0x0B] => Some(EndPointHash::Sha256),
            [0x0C] => Some(EndPointHash::Sha384),
            [0x0D] => Some(EndPointHash::Sha512),
            [0x0E] => Some(EndPointHash::Sha224),
            // RSASSA-PSS: the hash is in the parameters (default SHA-1).
            [0x0A] => Some(pss_hash(parameters)),
            _ => None,
        };
    }
    match oid.strip_prefix(ECDSA)? {
        // ecdsa-with-SHA1, -SHA224/256/384/512.
        [0x01] | [0x03, 0x02] => Some(EndPointHash::Sha256),
        [0x03, 0x01] => Some(EndPointHash::Sha224),
        [0x03, 0x03] => Some(EndPointHash::Sha384),
        [0x03, 0x04] => Some(EndPointHash::Sha512),
        _ => None,
    }
}

/// The hash named in RSASSA-PSS parameters: `SEQUENCE { [0] AlgorithmIdentifier … }`.
fn pss_hash(parameters: &[u8]) -> EndPointHash {
    const HASH: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02];
    let hash_oid = der_element(parameters)
        .filter(|(tag, _, _)| *tag == 0x30)
        .and_then(|(_, fields, _)| der_element(fields))
        .filter(|(tag, _, _)| *tag == 0xA0)
        .and_then(|(_, explicit, _)| der_element(explicit))
        .and_then(|(_, algorithm, _)| der_element(algorithm))
        .map(|(_, oid, _)| oid);
    match hash_oid.and_then(|oid| oid.strip_prefix(HASH)) {
        Some([0x02]) => EndPointHash::Sha384,
        Some([0x03]) => EndPointHash::Sha512,
        Some([0x04]) => EndPointHash::Sha224,
        _ => EndPointHash::Sha256,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its
/// signature's hash. `None` when the certificate says no usable hash.
pub fn server_end_point(certificate: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    const SEQUENCE: u8 = 0x30;
    let (tag, certificate_body, _) = der_element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _tbs, rest) = der_element(certificate_body)?;
    let (tag, algorithm, _) = der_element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, oid, parameters) = der_element(algorithm)?;
    Some(match end_point_hash(oid, parameters)? {
        EndPointHash::Sha224 => sha2::Sha224::digest(certificate).to_vec(),
        EndPointHash::Sha256 => sha2::Sha256::digest(certificate).to_vec(),
        EndPointHash::Sha384 => sha2::Sha384::digest(certificate).to_vec(),
        EndPointHash::Sha512 => sha2::Sha512::digest(certificate).to_vec(),
    })
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|err| format!("'{host}' is not a valid TLS server name: {err}"))
}

/// `require` (`rejectUnauthorized: false`): encryption without
/// authentication of the server, as node-postgres does. SCRAM's channel
/// binding stops a man in the middle from logging in when the server takes
/// only TLS, or when `options.channelBinding` is `"require"`; documented as
/// unsafe otherwise.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
