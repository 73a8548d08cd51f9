//! Cluster certificates and the TLS configuration of QUIC links.
//!
//! A cluster has one CA (`ca.pem`, `ca.key`). Every node holds a certificate signed by it
//! whose DNS name is the node's name (`NODE.pem`, `NODE.key`). Both ends of a connection
//! present their certificate and verify the other's against the CA; the accepting side
//! also checks that the certificate names the node the peer claims to be.
//!
//! A node certificate also carries the node's roles (see [`crate::roles`]) in one
//! organizational unit, `plexus-roles:master,agent`. A certificate without a role is
//! refused: it was issued before roles existed, or by hand, and proves nothing about
//! what its holder may do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::roles::{Roles, ROLE_OU_PREFIX};
use crate::transport::NetError;

/// ALPN protocol id of plexus links.
pub const ALPN: &[u8] = b"plexus/1";

fn tls_err(what: impl std::fmt::Display) -> NetError {
    NetError::Tls(what.to_string())
}

/// Paths of the CA files in `dir`.
pub fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca.key"))
}

/// Paths of a node's certificate and key in `dir`.
pub fn node_paths(dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{node}.pem")),
        dir.join(format!("{node}.key")),
    )
}

/// An i/o error at `path`, naming it.
fn at(path: &Path) -> impl Fn(std::io::Error) -> NetError + '_ {
    move |e| NetError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes `text` to `path` (and the directories above it) readable by its owner only:
/// written to a file created with mode 0600 beside it, synced, then renamed over `path`,
/// so the secret is never readable by others, not even for a moment, and a crash leaves
/// the old file or the new one whole. For keys and tokens.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates a new cluster CA in `dir` (`ca.pem`, `ca.key`). Refuses to overwrite one.
pub fn init_ca(dir: &Path, cluster: &str) -> Result<PathBuf, NetError> {
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    let (cert_path, key_path) = ca_paths(dir);
    if cert_path.exists() || key_path.exists() {
        return Err(tls_err(format!(
            "a CA already exists in {} (remove it first to make a new one)",
            dir.display()
        )));
    }
    let key = KeyPair::generate().map_err(tls_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("plexus cluster CA ({cluster})"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(tls_err)?;
    write_private(&key_path, &key.serialize_pem()).map_err(at(&key_path))?;
    std::fs::write(&cert_path, cert.pem()).map_err(at(&cert_path))?;
    Ok(cert_path)
}

/// Issues a certificate for `node` with `roles`, signed by the CA in `ca_dir`, written to
/// `out_dir`.
pub fn issue(
    ca_dir: &Path,
    out_dir: &Path,
    node: &str,
    roles: impl Into<Roles>,
) -> Result<(PathBuf, PathBuf), NetError> {
    issue_for_hosts(ca_dir, out_dir, node, roles, &[])
}

/// As [`issue`], naming also `hosts` (DNS names or IP addresses), under which the node
/// serves HTTPS (a master's API with `master.api_tls`).
pub fn issue_for_hosts(
    ca_dir: &Path,
    out_dir: &Path,
    node: &str,
    roles: impl Into<Roles>,
    hosts: &[String],
) -> Result<(PathBuf, PathBuf), NetError> {
    let roles = roles.into();
    plexus_config::validate_node_name(node).map_err(tls_err)?;
    if roles.is_empty() {
        return Err(tls_err(format!(
            "a certificate for {node:?} needs at least one role (master, agent, executor, client)"
        )));
    }
    let (ca_cert, ca_key) = ca_paths(ca_dir);
    let ca_pem = std::fs::read_to_string(&ca_cert)
        .map_err(|e| tls_err(format!("reading {}: {e}", ca_cert.display())))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key)
        .map_err(|e| tls_err(format!("reading {}: {e}", ca_key.display())))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(tls_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(tls_err)?;
    let key = KeyPair::generate().map_err(tls_err)?;
    let names = std::iter::once(node.to_string())
        .chain(hosts.iter().cloned())
        .collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).map_err(tls_err)?;
    params.distinguished_name.push(DnType::CommonName, node);
    params.distinguished_name.push(
        DnType::OrganizationalUnitName,
        format!("{ROLE_OU_PREFIX}{roles}"),
    );
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &issuer).map_err(tls_err)?;
    std::fs::create_dir_all(out_dir).map_err(at(out_dir))?;
    let (cert_path, key_path) = node_paths(out_dir, node);
    std::fs::write(&cert_path, cert.pem()).map_err(at(&cert_path))?;
    write_private(&key_path, &key.serialize_pem()).map_err(at(&key_path))?;
    Ok((cert_path, key_path))
}

/// A node's TLS material, loaded.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The cluster CA certificate.
    pub ca: CertificateDer<'static>,
    /// This node's certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl TlsMaterial {
    /// Loads PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, NetError> {
        let ctx = |p: &Path, e: &dyn std::fmt::Display| tls_err(format!("{}: {e}", p.display()));
        let ca_der = CertificateDer::from_pem_file(ca).map_err(|e| ctx(ca, &e))?;
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| ctx(cert, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ctx(cert, &e))?;
        if chain.is_empty() {
            return Err(ctx(cert, &"no certificate in file"));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| ctx(key, &e))?;
        Ok(TlsMaterial {
            ca: ca_der,
            chain,
            key: key_der,
        })
    }

    /// Development mode: makes (once) a CA and this node's certificate with `roles`
    /// under `dir`, then loads them. A certificate from before roles, or with other
    /// roles, is issued again. Returns the material and whether anything was created.
    pub fn dev(
        dir: &Path,
        cluster: &str,
        node: &str,
        roles: Roles,
    ) -> Result<(Self, bool), NetError> {
        let (ca_cert, _) = ca_paths(dir);
        let (cert, key) = node_paths(dir, node);
        let mut created = false;
        if !ca_cert.exists() {
            init_ca(dir, cluster)?;
            created = true;
        }
        if cert.exists() && key.exists() {
            let m = Self::load(&ca_cert, &cert, &key)?;
            if cert_roles(&m.chain[0]).is_ok_and(|r| r == roles) {
                return Ok((m, created));
            }
        }
        issue(dir, dir, node, roles)?;
        Ok((Self::load(&ca_cert, &cert, &key)?, true))
    }

    /// The roles this node's own certificate carries.
    pub fn roles(&self) -> Result<Roles, NetError> {
        cert_roles(&self.chain[0]).map_err(tls_err)
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, NetError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(tls_err)?;
        Ok(Arc::new(roots))
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// rustls server configuration: requires a client certificate signed by the CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, NetError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            Self::provider(),
        )
        .build()
        .map_err(tls_err)?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }

    /// rustls configuration of an HTTPS server (the API): this node's certificate; a
    /// client may present a certificate of the CA (then verified), or none (it then
    /// needs another credential).
    pub fn https_server_config(&self) -> Result<rustls::ServerConfig, NetError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            Self::provider(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(tls_err)?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// rustls client configuration: presents this node's certificate, trusts only the CA.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, NetError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        Ok(cfg)
    }
}

/// Checks that `cert` (already verified against the CA) names `node`.
pub fn cert_names(cert: &CertificateDer<'_>, node: &str) -> Result<(), String> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("unreadable peer certificate: {e:?}"))?;
    let name = ServerName::try_from(node.to_string())
        .map_err(|e| format!("peer name {node:?} is not a DNS name: {e}"))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("peer claims to be {node:?} but its certificate names another node"))
}

/// The node a certificate was issued to (its common name).
pub fn cert_node(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let cn = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("the certificate names no node (no common name)")?;
    Ok(cn.to_string())
}

/// The roles a certificate carries (its `OU=plexus-roles:…` entry). A certificate
/// with no role, or with a role this version does not know, is an error naming it.
pub fn cert_roles(cert: &CertificateDer<'_>) -> Result<Roles, String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut roles = Roles::NONE;
    for ou in x509.subject().iter_organizational_unit() {
        let Ok(text) = ou.as_str() else { continue };
        if let Some(list) = text.strip_prefix(ROLE_OU_PREFIX) {
            roles = list.parse::<Roles>()?;
        }
    }
    if roles.is_empty() {
        return Err(format!(
            "the certificate of {:?} carries no role (issue it again with `plexus certs issue DIR NAME --role ROLE`)",
            x509.subject().to_string()
        ));
    }
    Ok(roles)
}
