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
//!
//! Executors (processes an agent starts to host actor tasks) get identities of their own,
//! issued by the agent and by no one else: with an agent's certificate comes an
//! *executor CA* (`AGENT.executors.pem`, `AGENT.executors.key`), an intermediate that the
//! cluster CA allows to sign only end-entity certificates. The agent signs with it, for
//! each executor it starts, a short-lived certificate naming that executor alone
//! (`xN.AGENT`, see [`executor_node_name`]) with the executor role. [`peer_roles`] holds
//! such a certificate to exactly that: a chain through an executor CA yields the executor
//! role only, and only for a name of that agent's executors.

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
    let issuer = load_issuer(ca_dir)?;
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
    if roles.has(crate::Role::Agent) {
        issue_executor_ca(&issuer, out_dir, node)?;
    }
    Ok((cert_path, key_path))
}

/// The cluster CA in `ca_dir`, as an issuer.
fn load_issuer(ca_dir: &Path) -> Result<Issuer<'static, KeyPair>, NetError> {
    let (ca_cert, ca_key) = ca_paths(ca_dir);
    let ca_pem = std::fs::read_to_string(&ca_cert)
        .map_err(|e| tls_err(format!("reading {}: {e}", ca_cert.display())))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key)
        .map_err(|e| tls_err(format!("reading {}: {e}", ca_key.display())))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(tls_err)?;
    Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(tls_err)
}

/// Common-name prefix of an agent's executor CA: `plexus.executors:AGENT`.
pub const EXECUTOR_CA_PREFIX: &str = "plexus.executors:";

/// Paths of agent `node`'s executor CA certificate and key in `dir`.
pub fn executor_ca_paths(dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{node}.executors.pem")),
        dir.join(format!("{node}.executors.key")),
    )
}

/// The node name of executor `n` of agent `agent`: `xN.AGENT`.
pub fn executor_node_name(agent: &str, n: u64) -> String {
    format!("x{n}.{agent}")
}

/// The agent whose executor `name` is, if it is an executor's name (`xN.AGENT`).
pub fn executor_agent(name: &str) -> Option<&str> {
    let (head, agent) = name.split_once('.')?;
    let digits = head.strip_prefix('x')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !agent.is_empty())
        .then_some(agent)
}

/// Issues agent `agent`'s executor CA, signed by the cluster CA: it may sign end-entity
/// certificates only (path length 0).
fn issue_executor_ca(
    issuer: &Issuer<'_, KeyPair>,
    out_dir: &Path,
    agent: &str,
) -> Result<(), NetError> {
    let key = KeyPair::generate().map_err(tls_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{EXECUTOR_CA_PREFIX}{agent}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.signed_by(&key, issuer).map_err(tls_err)?;
    let (cert_path, key_path) = executor_ca_paths(out_dir, agent);
    std::fs::write(&cert_path, cert.pem()).map_err(at(&cert_path))?;
    write_private(&key_path, &key.serialize_pem()).map_err(at(&key_path))?;
    Ok(())
}

/// An executor's identity in PEM: its chain (its certificate, then its agent's executor
/// CA) and its private key.
#[derive(Clone)]
pub struct ExecutorIdentity {
    /// The executor's node name.
    pub node: String,
    /// Its certificate followed by the executor CA's.
    pub chain_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl std::fmt::Debug for ExecutorIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorIdentity")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// An agent's executor CA, loaded: it issues its executors' identities.
pub struct ExecutorIssuer {
    agent: String,
    ca_pem: String,
    root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ExecutorIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorIssuer")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl ExecutorIssuer {
    /// Loads agent `agent`'s executor CA from its files, with the cluster CA `root`
    /// (which its executors trust).
    pub fn load(agent: &str, cert: &Path, key: &Path, root: &Path) -> Result<Self, NetError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| tls_err(format!("reading {}: {e}", p.display())))
        };
        let ca_pem = read(cert)?;
        let key = KeyPair::from_pem(&read(key)?).map_err(tls_err)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(tls_err)?;
        let der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| tls_err(format!("{}: {e}", cert.display())))?;
        let cn = cert_node(&der).map_err(tls_err)?;
        if cn != format!("{EXECUTOR_CA_PREFIX}{agent}") {
            return Err(tls_err(format!(
                "{} is the executor CA of {cn:?}, not of agent {agent:?}",
                cert.display()
            )));
        }
        Ok(ExecutorIssuer {
            agent: agent.to_string(),
            ca_pem,
            root_pem: read(root)?,
            issuer,
        })
    }

    /// The cluster CA's certificate (PEM), which executors trust.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Issues executor `n`'s identity, valid from a minute ago for `valid_for`.
    pub fn issue(
        &self,
        n: u64,
        valid_for: std::time::Duration,
    ) -> Result<ExecutorIdentity, NetError> {
        let node = executor_node_name(&self.agent, n);
        plexus_config::validate_node_name(&node).map_err(|e| tls_err(format!("{node:?}: {e}")))?;
        let key = KeyPair::generate().map_err(tls_err)?;
        let mut params = CertificateParams::new(vec![node.clone()]).map_err(tls_err)?;
        params.distinguished_name.push(DnType::CommonName, &node);
        params.distinguished_name.push(
            DnType::OrganizationalUnitName,
            format!("{ROLE_OU_PREFIX}{}", crate::Role::Executor.as_str()),
        );
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + valid_for;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_err)?;
        Ok(ExecutorIdentity {
            node,
            chain_pem: format!("{}{}", cert.pem(), self.ca_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The roles of a peer whose certificate chain (`chain`, its own first) the TLS handshake
/// verified against the cluster CA. A certificate the cluster CA signed carries the roles
/// it names. One signed by an agent's executor CA (chain of two) is an executor's: it
/// yields the executor role only, and only if it names one of that agent's executors and
/// nothing else: an agent cannot mint masters, agents, clients or another agent's
/// executors.
pub fn peer_roles(chain: &[CertificateDer<'_>]) -> Result<Roles, String> {
    let leaf = chain.first().ok_or("the peer presented no certificate")?;
    let roles = cert_roles(leaf)?;
    if chain.len() == 1 {
        return Ok(roles);
    }
    if chain.len() > 2 {
        return Err(format!(
            "the peer presented a chain of {} certificates; at most 2 (an executor's)",
            chain.len()
        ));
    }
    let (_, leaf_x) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let (_, ca_x) = x509_parser::parse_x509_certificate(chain[1].as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let name = cert_node(leaf)?;
    if leaf_x.issuer().as_raw() != ca_x.subject().as_raw() {
        return Err(format!(
            "the certificate of {name:?} was not issued by the certificate presented after it"
        ));
    }
    let ca_name = cert_node(&chain[1])?;
    let Some(agent) = ca_name.strip_prefix(EXECUTOR_CA_PREFIX) else {
        return Err(format!(
            "{name:?} presented an intermediate {ca_name:?}, which is no agent's executor CA"
        ));
    };
    if executor_agent(&name) != Some(agent) {
        return Err(format!(
            "executor CA of agent {agent:?} issued a certificate for {name:?}, which is not one of its executors (x<N>.{agent})"
        ));
    }
    let executor = Roles::of(&[crate::Role::Executor]);
    if roles != executor {
        return Err(format!(
            "executor CA of agent {agent:?} issued {name:?} the roles {roles}; it may issue only the executor role"
        ));
    }
    Ok(executor)
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
                let (exec_ca, _) = executor_ca_paths(dir, node);
                if roles.has(crate::Role::Agent) && !exec_ca.exists() {
                    // Made before agents issued executors' identities.
                    let issuer = load_issuer(dir)?;
                    issue_executor_ca(&issuer, dir, node)?;
                    created = true;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("pem")
    }

    fn setup() -> (tempfile::TempDir, ExecutorIssuer) {
        let dir = tempfile::tempdir().expect("tempdir");
        init_ca(dir.path(), "t").expect("ca");
        issue(dir.path(), dir.path(), "a1", crate::Role::Agent).expect("agent");
        let (c, k) = executor_ca_paths(dir.path(), "a1");
        let issuer =
            ExecutorIssuer::load("a1", &c, &k, &dir.path().join("ca.pem")).expect("executor ca");
        (dir, issuer)
    }

    #[test]
    fn an_agent_issues_its_executors_the_executor_role_and_nothing_more() {
        let (dir, issuer) = setup();
        let id = issuer
            .issue(7, std::time::Duration::from_secs(60))
            .expect("issue");
        assert_eq!(id.node, "x7.a1");
        let chain = ders(&id.chain_pem);
        assert_eq!(peer_roles(&chain), Ok(Roles::of(&[crate::Role::Executor])));
        // The executor CA of another agent cannot be passed off as this one's.
        issue(dir.path(), dir.path(), "a2", crate::Role::Agent).expect("agent 2");
        let (c2, k2) = executor_ca_paths(dir.path(), "a2");
        let other = ExecutorIssuer::load("a2", &c2, &k2, &dir.path().join("ca.pem"))
            .expect("executor ca 2");
        let mut forged = ders(
            &other
                .issue(7, std::time::Duration::from_secs(60))
                .expect("issue")
                .chain_pem,
        );
        forged[1] = chain[1].clone();
        assert!(
            peer_roles(&forged).is_err(),
            "a leaf not issued by the CA after it"
        );
        assert!(
            ExecutorIssuer::load("a1", &c2, &k2, &dir.path().join("ca.pem")).is_err(),
            "a2's CA loaded as a1's"
        );
    }

    #[test]
    fn an_executor_ca_cannot_mint_other_names_or_roles() {
        let (dir, _) = setup();
        let (c, k) = executor_ca_paths(dir.path(), "a1");
        let ca_pem = std::fs::read_to_string(&c).expect("read");
        let key = KeyPair::from_pem(&std::fs::read_to_string(&k).expect("read")).expect("key");
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).expect("issuer");
        let mint = |name: &str, roles: &str| {
            let key = KeyPair::generate().expect("key");
            let mut p = CertificateParams::new(vec![name.to_string()]).expect("params");
            p.distinguished_name.push(DnType::CommonName, name);
            p.distinguished_name.push(
                DnType::OrganizationalUnitName,
                format!("{ROLE_OU_PREFIX}{roles}"),
            );
            let cert = p.signed_by(&key, &issuer).expect("sign");
            ders(&format!("{}{ca_pem}", cert.pem()))
        };
        for (name, roles) in [
            ("x1.a1", "master"),
            ("x1.a1", "executor,agent"),
            ("a1", "agent"),
            ("x1.a2", "executor"),
            ("master", "executor"),
        ] {
            let r = peer_roles(&mint(name, roles));
            assert!(r.is_err(), "{name} with {roles} was accepted: {r:?}");
        }
        assert!(peer_roles(&mint("x1.a1", "executor")).is_ok());
    }
}
