//! TLS 1.3 identity for Orb: self-signed Ed25519 certificates whose public
//! key *is* the node's identity, checked by custom verifiers instead of a
//! WebPKI chain. Names, validity dates and issuers carry no meaning here: the
//! only thing a peer has to prove is possession of the key its Orb ID hashes.

use std::sync::{Arc, Mutex};

use orb_proto::{Keypair, OrbId, PublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::TransportError;

/// Server name sent in the ClientHello. Peers are identified by key, not by
/// name, so any constant works; it only has to be a valid DNS name.
pub(crate) const SERVER_NAME: &str = "orb";

/// The node's certificate and key, ready to build rustls configs from.
pub(crate) struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl Identity {
    /// Make a self-signed certificate for `keypair`.
    pub(crate) fn new(keypair: &Keypair) -> Result<Self, TransportError> {
        let der = keypair
            .to_pkcs8_der()
            .map_err(|e| TransportError::Tls(format!("cannot export node key: {e}")))?;
        let key = PrivatePkcs8KeyDer::from(der);
        let rc_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)
            .map_err(|e| TransportError::Tls(format!("cannot load node key: {e}")))?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(|e| TransportError::Tls(format!("cannot build certificate: {e}")))?;
        let cert = params
            .self_signed(&rc_key)
            .map_err(|e| TransportError::Tls(format!("cannot sign certificate: {e}")))?;
        Ok(Identity {
            cert: cert.der().clone(),
            key,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// rustls server config: TLS 1.3 only, client certificate required.
    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig, TransportError> {
        let verifier = Arc::new(ClientVerifier {
            provider: self.provider.clone(),
        });
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key_der())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![orb_proto::ALPN.to_vec()];
        Ok(cfg)
    }

    /// rustls client config that accepts only the peer whose ID is
    /// `expected`. The returned verifier remembers the ID the peer actually
    /// presented, so a mismatch can be reported with both IDs.
    pub(crate) fn client_config(
        &self,
        expected: OrbId,
    ) -> Result<(rustls::ClientConfig, Arc<ServerVerifier>), TransportError> {
        let verifier = Arc::new(ServerVerifier {
            provider: self.provider.clone(),
            expected,
            found: Mutex::new(None),
        });
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(vec![self.cert.clone()], self.key_der())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![orb_proto::ALPN.to_vec()];
        Ok((cfg, verifier))
    }
}

fn tls_err(e: rustls::Error) -> TransportError {
    TransportError::Tls(e.to_string())
}

fn app_failure() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// The Orb ID a certificate proves, if its key is Ed25519.
///
/// This does not check the certificate's own signature or dates: the TLS
/// handshake signature (verified separately) is what proves key possession.
pub(crate) fn id_from_cert(der: &CertificateDer<'_>) -> Result<OrbId, rustls::Error> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if !rest.is_empty() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ));
    }
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ED25519 {
        return Err(app_failure());
    }
    let key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    Ok(OrbId::from_public_key(&PublicKey(key)))
}

fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    // Only Ed25519 keys are identities, so only Ed25519 signatures count.
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// Client-side check of the server: its key must hash to the expected ID.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    provider: Arc<CryptoProvider>,
    expected: OrbId,
    found: Mutex<Option<OrbId>>,
}

impl ServerVerifier {
    /// The ID the server presented, once its certificate was seen.
    pub(crate) fn found(&self) -> Option<OrbId> {
        self.found.lock().ok().and_then(|g| *g)
    }
}

/// The signature checks both verifiers share: TLS 1.3 only (the configs
/// enable nothing else; TLS 1.2 is refused outright if ever reached), and
/// Ed25519 only, checked with the verifier's `provider`.
macro_rules! tls13_ed25519_only {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            // The config only enables TLS 1.3; refuse outright if this is reached.
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls13RequiredForQuic,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13(&self.provider, message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = id_from_cert(end_entity)?;
        if let Ok(mut found) = self.found.lock() {
            *found = Some(id);
        }
        if id != self.expected {
            return Err(app_failure());
        }
        Ok(ServerCertVerified::assertion())
    }

    tls13_ed25519_only!();
}

/// Server-side check of the client: any valid Ed25519 certificate, so that
/// the acceptor learns (and can trust) the dialer's Orb ID.
#[derive(Debug)]
struct ClientVerifier {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        id_from_cert(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    tls13_ed25519_only!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_proves_the_node_id() {
        let kp = Keypair::from_seed([5; 32]);
        let ident = Identity::new(&kp).expect("identity");
        assert_eq!(id_from_cert(&ident.cert).expect("ed25519 cert"), kp.id());
        assert!(ident.server_config().is_ok());
        assert!(ident.client_config(kp.id()).is_ok());
    }

    #[test]
    fn non_ed25519_and_garbage_certs_are_refused() {
        let ecdsa = rcgen::generate_simple_self_signed(vec!["orb".into()]).expect("p256 cert");
        assert!(id_from_cert(ecdsa.cert.der()).is_err());
        assert!(id_from_cert(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }
}
