//! Helpers shared by the multi-process tests.

#![allow(dead_code)]

pub mod kcluster;

use std::net::{TcpListener, UdpSocket};
use std::path::Path;

use plexus_config::TlsSettings;
use plexus_net::tls;

/// A UDP port free on `ip` (for a node's QUIC listener).
pub fn free_udp(ip: &str) -> u16 {
    UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP port free on `ip` (for the HTTP API).
#[allow(dead_code)] // not every test binary runs an API
pub fn free_tcp(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TLS settings for node `name`, with a certificate issued by the CA in `dir`.
pub fn certs(dir: &Path, name: &str) -> TlsSettings {
    certs_as(dir, name, test_roles(name))
}

/// The roles a test node gets by its name: `master…` is a master, `agent…` an agent,
/// any other a client (a framework, the CLI, a plain actor node).
pub fn test_roles(name: &str) -> plexus_net::Roles {
    use plexus_net::Role;
    if name.starts_with("master") {
        Role::Master.into()
    } else if name.starts_with("agent") {
        Role::Agent.into()
    } else {
        Role::Client.into()
    }
}

/// A bare QUIC transport for a node `name` of cluster `plexus` on 127.0.0.1, with the
/// roles its certificate `tls` carries: a test speaks the node protocol through it by
/// hand.
pub fn raw_transport(
    name: &str,
    tls: &tls::TlsMaterial,
) -> std::sync::Arc<plexus_net::QuicTransport> {
    plexus_net::QuicTransport::bind(
        plexus_net::LocalIdentity {
            cluster: "plexus".into(),
            name: name.into(),
            incarnation: 1,
            addr: "127.0.0.1:0".parse().unwrap(),
            // Replaced by the certificate's roles when bound.
            roles: plexus_net::Roles::NONE,
        },
        tls,
        1 << 20,
    )
    .unwrap_or_else(|e| panic!("binding a transport for {name}: {e}"))
}

/// TLS settings for node `name` with `roles`, issued by the CA in `dir` (naming also
/// 127.0.0.1, where the tests' masters serve their API).
pub fn certs_as(dir: &Path, name: &str, roles: impl Into<plexus_net::Roles>) -> TlsSettings {
    let (c, k) = tls::issue_for_hosts(dir, dir, name, roles, &["127.0.0.1".into()]).unwrap();
    TlsSettings {
        ca_cert: Some(dir.join("ca.pem")),
        cert: Some(c),
        key: Some(k),
        dev: false,
    }
}
