//! The handshake-signature half of a certificate verifier that wraps another.

/// Implements `verify_tls12_signature` and `verify_tls13_signature` of a rustls
/// `ServerCertVerifier` or `ClientCertVerifier` by calling the verifier in field `$inner`.
/// The wrappers in this workspace add checks on the certificate (mesh identity, accept
/// lists, counting); the signatures over the handshake are the wrapped verifier's job.
#[macro_export]
macro_rules! delegate_signature_checks {
    ($inner:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &$crate::rustls::pki_types::CertificateDer<'_>,
            dss: &$crate::rustls::DigitallySignedStruct,
        ) -> Result<$crate::rustls::client::danger::HandshakeSignatureValid, $crate::rustls::Error> {
            self.$inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &$crate::rustls::pki_types::CertificateDer<'_>,
            dss: &$crate::rustls::DigitallySignedStruct,
        ) -> Result<$crate::rustls::client::danger::HandshakeSignatureValid, $crate::rustls::Error> {
            self.$inner.verify_tls13_signature(message, cert, dss)
        }
    };
}
