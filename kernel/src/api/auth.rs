//! Who is calling the API, and whether the request is meant for this server at all.
//!
//! Every endpoint but `/health` needs a credential: a bearer token
//! (`Authorization: Bearer TOKEN`) that names a principal. The master makes one for the
//! `admin` principal the first time it starts (`STATE_DIR/master/api.token`, mode 0600)
//! and copies it where the CLI looks by itself, so `plexus dev` and `plexus run` need no
//! extra step; more principals come from `[[master.principals]]` (`name`, `token_file`).
//! A request without a valid credential gets `401`.
//!
//! The `Host` header must name this server (the API's own address, `localhost`, or a
//! name in `master.api_hosts`): a page from another site that resolves its own name to
//! this machine (DNS rebinding) is refused with `421`. No CORS header is ever sent, so a
//! browser does not let other sites read the answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The principal of the token the master makes for itself.
pub const ADMIN_PRINCIPAL: &str = "admin";
/// Bytes of randomness in a token the master makes (written as hex).
pub const TOKEN_BYTES: usize = 32;
/// Fewest bytes a configured token may have.
pub const MIN_TOKEN_BYTES: usize = 16;

/// An authenticated caller of the API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Principal(pub String);

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why access settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A token file could not be read or written.
    #[error("{what} {}: {reason}", path.display())]
    File {
        /// What the file is for.
        what: String,
        /// Where.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A configured token is unusable.
    #[error("the token of principal {principal:?} in {}: {reason}", path.display())]
    BadToken {
        /// Whose.
        principal: String,
        /// Where it was read.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Tokens and the principals they name, and the host names requests may use.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    tokens: BTreeMap<String, Principal>,
    hosts: Vec<String>,
    /// Longest a request may take, headers, body and answer.
    pub request_timeout_ms: u64,
    /// What each principal may do.
    acls: crate::acl::Acls,
    /// Web origins whose pages may call the API (CORS).
    cors_origins: Vec<String>,
    /// HTTPS, with client certificates of the cluster CA accepted as credentials.
    tls: Option<Arc<TlsConfig>>,
}

/// The API's TLS configuration.
pub type TlsConfig = actix_tls::accept::rustls_0_23::reexports::ServerConfig;

/// The certificate a client presented on its connection (verified against the CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The node it was issued to.
    pub node: String,
    /// Its roles.
    pub roles: plexus_net::Roles,
}

impl PeerCert {
    /// The certificate of a TLS connection, if its client presented one (called as each
    /// connection is accepted; the handshake already verified the chain).
    pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
        use actix_tls::accept::rustls_0_23::TlsStream;
        let Some(tls) = conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() else {
            return;
        };
        let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
            return;
        };
        match (
            plexus_net::tls::cert_node(cert),
            plexus_net::tls::cert_roles(cert),
        ) {
            (Ok(node), Ok(roles)) => {
                ext.insert(PeerCert { node, roles });
            }
            (Err(e), _) | (_, Err(e)) => tracing::debug!("a client certificate is not used: {e}"),
        }
    }
}

impl ApiAccess {
    /// Access for an API served at `listen`: no tokens yet; `Host` may be `localhost`,
    /// the loopback addresses, the listen address, or one of `extra_hosts`.
    pub fn new(listen: SocketAddr, extra_hosts: &[String]) -> ApiAccess {
        let mut hosts = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "[::1]".to_string(),
        ];
        if !listen.ip().is_unspecified() {
            hosts.push(match listen {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            });
        }
        hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        ApiAccess {
            tokens: BTreeMap::new(),
            hosts,
            request_timeout_ms: super::REQUEST_TIMEOUT_MS,
            acls: crate::acl::Acls::default(),
            cors_origins: Vec::new(),
            tls: None,
        }
    }

    /// Serves HTTPS with `cfg`.
    pub fn set_tls(&mut self, cfg: TlsConfig) {
        self.tls = Some(Arc::new(cfg));
    }

    /// The TLS configuration, when the API serves HTTPS.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_deref()
    }

    /// The principal a client certificate names: a `client` certificate authenticates
    /// as the principal of its node's name; others (agents, masters) are no API callers.
    pub fn cert_principal(&self, cert: &PeerCert) -> Option<Principal> {
        cert.roles
            .has(plexus_net::Role::Client)
            .then(|| Principal(cert.node.clone()))
    }

    /// Each principal's token, as the secret its frameworks subscribe with.
    pub fn credentials(&self) -> crate::acl::Credentials {
        let mut c = crate::acl::Credentials::default();
        for (token, p) in &self.tokens {
            c.add(&p.0, token);
        }
        c
    }

    /// Lets pages of `origins` call the API from a browser.
    pub fn set_cors_origins(&mut self, origins: Vec<String>) {
        self.cors_origins = origins;
    }

    /// Web origins whose pages may call the API.
    pub fn cors_origins(&self) -> &[String] {
        &self.cors_origins
    }

    /// Authorizes by `acls`.
    pub fn set_acls(&mut self, acls: crate::acl::Acls) {
        self.acls = acls;
    }

    /// The rules authorizing requests.
    pub fn acls(&self) -> &crate::acl::Acls {
        &self.acls
    }

    /// Adds `token` for `principal`.
    pub fn add_token(&mut self, principal: &str, token: &str) {
        self.tokens
            .insert(token.to_string(), Principal(principal.to_string()));
    }

    /// Adds the token in `path` (its first line) for `principal`.
    pub fn add_token_file(&mut self, principal: &str, path: &Path) -> Result<(), AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::File {
            what: format!("token file of principal {principal:?}"),
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(AuthError::BadToken {
                principal: principal.into(),
                path: path.to_path_buf(),
                reason: format!(
                    "a token needs at least {MIN_TOKEN_BYTES} bytes; it has {}",
                    token.len()
                ),
            });
        }
        self.add_token(principal, token);
        Ok(())
    }

    /// The principal a request's `Authorization` header names, if it is valid.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&Principal> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        // Every token is compared in full, so the time taken does not tell how much of
        // a guess was right.
        let mut found = None;
        for (t, p) in &self.tokens {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(p);
            }
        }
        found
    }

    /// Whether a request's `Host` header names this server (a missing one is refused).
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        let name = strip_port(host).to_ascii_lowercase();
        self.hosts.contains(&name)
    }

    /// The host names requests may use.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
}

/// `host:port` → `host` (`[::1]:80` → `[::1]`).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token, hex.
pub fn new_token() -> Result<String, AuthError> {
    use std::io::Read;
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| AuthError::File {
            what: "random source".into(),
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the token in `path`, making one (mode 0600) if there is none; true when made.
pub fn ensure_token_file(path: &Path) -> Result<(String, bool), AuthError> {
    let err = |e: std::io::Error| AuthError::File {
        what: "API token".into(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= MIN_TOKEN_BYTES => return Ok((t.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let token = new_token()?;
    plexus_net::tls::write_private(path, &format!("{token}\n")).map_err(err)?;
    Ok((token, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_principal_and_nothing_else_does() {
        let mut a = ApiAccess::new("127.0.0.1:5050".parse().unwrap(), &[]);
        a.add_token("ops", "0123456789abcdef0123");
        assert_eq!(
            a.authenticate(Some("Bearer 0123456789abcdef0123")),
            Some(&Principal("ops".into()))
        );
        for bad in [
            None,
            Some("Bearer 0123456789abcdef012"),
            Some("Bearer "),
            Some("Basic 0123456789abcdef0123"),
            Some("0123456789abcdef0123"),
        ] {
            assert_eq!(a.authenticate(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_this_servers_names_are_accepted_as_host() {
        let a = ApiAccess::new("10.1.2.3:5050".parse().unwrap(), &["Master.Example".into()]);
        for ok in [
            "localhost:5050",
            "127.0.0.1",
            "10.1.2.3:5050",
            "master.example:80",
            "[::1]:5050",
        ] {
            assert!(a.host_allowed(Some(ok)), "{ok}");
        }
        for bad in [None, Some("evil.example:5050"), Some("10.1.2.4"), Some("")] {
            assert!(!a.host_allowed(bad), "{bad:?}");
        }
        let any = ApiAccess::new("0.0.0.0:5050".parse().unwrap(), &[]);
        assert!(!any.host_allowed(Some("0.0.0.0:5050")));
    }
}
