//! TLS to the database with rustls (no OpenSSL). `options.ssl` is the
//! seed's: `false`, `true` (verify against the Mozilla roots), or
//! `{rejectUnauthorized, ca, cert, key}` with PEM text or file paths.

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

/// The client config for `options.ssl`, or `None` for plain TCP.
pub fn client_config(ssl: Option<&Value>) -> Result<Option<Arc<ClientConfig>>, String> {
    let options = match ssl {
        None | Some(Value::Bool(false)) | Some(Value::Null) => return Ok(None),
        Some(Value::Bool(true)) => &Value::Object(Default::default()),
        Some(object @ Value::Object(_)) => object,
        Some(_) => return Err("options.ssl must be false, true or an object".into()),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?;
    let verify = options
        .get("rejectUnauthorized")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let builder = if verify {
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
        builder.with_root_certificates(roots)
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
    Ok(Some(Arc::new(config)))
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned())
        .map_err(|err| format!("'{host}' is not a valid TLS server name: {err}"))
}

/// `rejectUnauthorized: false`: encryption without authentication of the
/// server, as node-postgres does. Documented as unsafe.
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
