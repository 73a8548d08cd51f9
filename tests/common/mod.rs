//! Helpers shared by the multi-process tests.

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
    let (c, k) = tls::issue(dir, dir, name).unwrap();
    TlsSettings {
        ca_cert: Some(dir.join("ca.pem")),
        cert: Some(c),
        key: Some(k),
        dev: false,
    }
}
