//! TLS for driver connections (rustls 0.23 with the aws-lc-rs provider, via
//! the driver's `rustls-023` feature). Behind the `tls` cargo feature.

use crate::{CassandraConfig, CassandraError};

#[cfg(feature = "tls")]
pub(crate) fn context(
    cfg: &CassandraConfig,
) -> Result<scylla::client::session::TlsContext, CassandraError> {
    use std::sync::Arc;

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let Some(ca_file) = &cfg.tls_ca_file else {
        return Err(CassandraError::Tls(
            "tls is on but no tls_ca_file is set: give the PEM file of the CA that signed the nodes' certificates"
                .into(),
        ));
    };
    let shown = ca_file.display();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| CassandraError::Tls(format!("cannot read CA file {shown}: {e}")))?;
    for cert in certs {
        let cert = cert.map_err(|e| CassandraError::Tls(format!("CA file {shown}: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| CassandraError::Tls(format!("CA file {shown}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(CassandraError::Tls(format!(
            "CA file {shown} holds no PEM certificate"
        )));
    }
    // An explicit provider: works even if another crate also enables ring.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CassandraError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(scylla::client::session::TlsContext::Rustls023(Arc::new(
        config,
    )))
}

#[cfg(not(feature = "tls"))]
pub(crate) fn context(
    _cfg: &CassandraConfig,
) -> Result<scylla::client::session::TlsContext, CassandraError> {
    Err(CassandraError::TlsNotCompiled)
}
