//! Tests of the link transport: the CA's files, and handshakes between real quinn
//! endpoints on 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::*;
use crate::role::Role;

/// A scratch directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(purpose: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tether-{purpose}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn name(text: &str) -> NodeName {
    NodeName::new(text).unwrap()
}

fn localhost() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn transport() -> Arc<quinn::TransportConfig> {
    Arc::new(transport_config(Timeouts::default()))
}

/// A mission: its CA and the core `hq`'s identity.
fn mission() -> (Ca, NodeIdentity) {
    let ca = Ca::create("Tether test CA").unwrap();
    let core = ca.issue(&name("hq"), Role::Core).unwrap();
    (ca, core)
}

/// A client config built by hand: trusting `trust`'s CA, presenting `present`'s
/// certificate (or none), offering `alpn`.
fn client_tls(
    trust: &NodeIdentity,
    present: Option<&NodeIdentity>,
    alpn: &[u8],
) -> quinn::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(trust.roots());
    let mut tls = match present {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain().to_vec(), identity.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// One handshake: a core with `core` accepts with `allowed`; a client dials it with
/// `client`, expecting the server to be `expect`. Returns the core's result and how the
/// client's connection ended (it waits for the core to close it if the handshake passed).
async fn refused(
    core: &NodeIdentity,
    allowed: impl Admit,
    client: quinn::ClientConfig,
    expect: &str,
) -> (Result<Peer, HandshakeError>, ConnectionError) {
    let server = server_endpoint(localhost(), core, transport()).unwrap();
    let addr = server.local_addr().unwrap();
    let dialer = quinn::Endpoint::client(localhost()).unwrap();
    let accepting = async {
        let incoming = server.accept().await.unwrap();
        accept(incoming, &allowed).await
    };
    let dialing = async {
        match dialer.connect_with(client, addr, expect).unwrap().await {
            Ok(connection) => connection.closed().await,
            Err(err) => err,
        }
    };
    tokio::join!(accepting, dialing)
}

#[track_caller]
fn check_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} is not in:\n{text}");
    }
}

#[tokio::test]
async fn an_allowed_edge_connects_and_each_side_knows_the_other() {
    let (ca, core) = mission();
    let alpha = ca.issue(&name("alpha"), Role::Edge).unwrap();
    let server = server_endpoint(localhost(), &core, transport()).unwrap();
    let addr = server.local_addr().unwrap();
    let edge = client_endpoint(localhost(), &alpha, transport()).unwrap();
    let hq = name("hq");
    let allowed = Allowed::List(vec![name("alpha")]);

    let accepting = async { accept(server.accept().await.unwrap(), &allowed).await };
    let (at_core, at_edge) = tokio::join!(accepting, connect(&edge, addr, &hq));
    let (at_core, at_edge) = (at_core.unwrap(), at_edge.unwrap());
    assert_eq!(at_core.name, name("alpha"));
    assert_eq!(at_edge.name, name("hq"));
    assert_eq!(
        at_core.connection.handshake_data().and_then(|d| {
            d.downcast::<quinn::crypto::rustls::HandshakeData>()
                .ok()
                .and_then(|d| d.protocol)
        }),
        Some(ALPN.to_vec())
    );

    // Data flows, and a close carries its code and reason to the other side.
    let mut send = at_edge.connection.open_uni().await.unwrap();
    send.write_all(b"hello").await.unwrap();
    send.finish().unwrap();
    let mut recv = at_core.connection.accept_uni().await.unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap(), b"hello");
    CloseCode::Shutdown.close(&at_core.connection, "core stopping");
    let closed = at_edge.connection.closed().await;
    check_contains(
        &explain(&closed),
        &["closed by the peer (shutdown): core stopping"],
    );
}

#[tokio::test]
async fn a_reconnecting_edge_is_still_known_by_name() {
    // The second handshake may resume the first TLS session: the core must still learn
    // the edge's name from it.
    let (ca, core) = mission();
    let alpha = ca.issue(&name("alpha"), Role::Edge).unwrap();
    let server = server_endpoint(localhost(), &core, transport()).unwrap();
    let addr = server.local_addr().unwrap();
    let edge = client_endpoint(localhost(), &alpha, transport()).unwrap();
    let hq = name("hq");
    let allowed = Allowed::List(vec![name("alpha")]);
    for _ in 0..3 {
        let accepting = async { accept(server.accept().await.unwrap(), &allowed).await };
        let (at_core, at_edge) = tokio::join!(accepting, connect(&edge, addr, &hq));
        let (at_core, at_edge) = (at_core.unwrap(), at_edge.unwrap());
        assert_eq!(
            (at_core.name.as_str(), at_edge.name.as_str()),
            ("alpha", "hq")
        );
        CloseCode::Replaced.close(&at_edge.connection, "reconnecting");
        at_core.connection.closed().await;
    }
}

#[tokio::test]
async fn any_edge_of_the_ca_connects_when_allowed() {
    let (ca, core) = mission();
    let bravo = ca.issue(&name("bravo"), Role::Edge).unwrap();
    let server = server_endpoint(localhost(), &core, transport()).unwrap();
    let addr = server.local_addr().unwrap();
    let edge = client_endpoint(localhost(), &bravo, transport()).unwrap();
    let hq = name("hq");
    let accepting = async { accept(server.accept().await.unwrap(), &Allowed::AnyEdge).await };
    let (at_core, at_edge) = tokio::join!(accepting, connect(&edge, addr, &hq));
    assert_eq!(at_core.unwrap().name, name("bravo"));
    assert_eq!(at_edge.unwrap().name, name("hq"));
}

#[tokio::test]
async fn an_edge_not_in_the_list_is_closed_with_not_allowed() {
    let (ca, core) = mission();
    let bravo = ca.issue(&name("bravo"), Role::Edge).unwrap();
    let client = client_config(&bravo, transport()).unwrap();
    let allowed = Allowed::List(vec![name("alpha")]);
    let (at_core, at_edge) = refused(&core, allowed, client, "hq").await;

    let err = at_core.unwrap_err();
    assert!(
        matches!(&err, HandshakeError::NotAllowed { name, .. } if name.as_str() == "bravo"),
        "{err:?}"
    );
    check_contains(
        &err.to_string(),
        &["edge bravo at 127.0.0.1:", "not in this core's list"],
    );
    let ConnectionError::ApplicationClosed(close) = &at_edge else {
        panic!("expected an application close, got {at_edge:?}");
    };
    assert_eq!(close.error_code, CloseCode::NotAllowed.code());
    check_contains(
        &explain(&at_edge),
        &["closed by the peer (not-allowed): edge bravo is not in this core's list of edges"],
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let (_ca, core) = mission();
    let client = client_tls(&core, None, ALPN);
    let (at_core, at_edge) = refused(&core, Allowed::AnyEdge, client, "hq").await;
    let err = at_core.unwrap_err().to_string();
    check_contains(
        &err,
        &["handshake with 127.0.0.1:", "presented no certificate"],
    );
    check_contains(
        &explain(&at_edge),
        &["the peer refused the TLS handshake", "no certificate"],
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let (_ca, core) = mission();
    let other_ca = Ca::create("Another mission's CA").unwrap();
    let stranger = other_ca.issue(&name("alpha"), Role::Edge).unwrap();
    // The stranger trusts the real CA (so it accepts the core), but its own certificate
    // comes from another CA.
    let client = client_tls(&core, Some(&stranger), ALPN);
    let allowed = Allowed::List(vec![name("alpha")]);
    let (at_core, at_edge) = refused(&core, allowed, client, "hq").await;
    let err = at_core.unwrap_err().to_string();
    check_contains(
        &err,
        &["TLS handshake refused here", "not issued by the mission CA"],
    );
    check_contains(
        &explain(&at_edge),
        &["the peer refused the TLS handshake", "mission CA"],
    );

    // The other way round: an edge of the other CA does not trust this core.
    let edge = client_config(&stranger, transport()).unwrap();
    let (at_core, at_edge) = refused(&core, Allowed::AnyEdge, edge, "hq").await;
    check_contains(
        &explain(&at_edge),
        &["TLS handshake refused here", "UnknownIssuer"],
    );
    check_contains(
        &at_core.unwrap_err().to_string(),
        &["the peer refused the TLS handshake", "mission CA"],
    );

    // Another CA of the same name: its signature gives it away.
    let (namesake, _) = mission();
    let stranger = namesake.issue(&name("alpha"), Role::Edge).unwrap();
    let client = client_tls(&core, Some(&stranger), ALPN);
    let (at_core, at_edge) = refused(&core, Allowed::AnyEdge, client, "hq").await;
    check_contains(
        &at_core.unwrap_err().to_string(),
        &["TLS handshake refused here", "another CA of the same name"],
    );
    check_contains(
        &explain(&at_edge),
        &[
            "the peer refused the TLS handshake",
            "signature does not verify",
        ],
    );
}

#[tokio::test]
async fn an_unknown_alpn_fails_the_handshake_on_both_sides() {
    let (ca, core) = mission();
    let alpha = ca.issue(&name("alpha"), Role::Edge).unwrap();
    let client = client_tls(&core, Some(&alpha), b"tether/0");
    let (at_core, at_edge) = refused(&core, Allowed::AnyEdge, client, "hq").await;
    let expected = ["no common application protocol (ALPN)", "tether/1"];
    check_contains(&at_core.unwrap_err().to_string(), &expected);
    check_contains(&explain(&at_edge), &expected);
}

#[tokio::test]
async fn roles_and_names_cannot_be_swapped() {
    let (ca, core) = mission();
    let alpha = ca.issue(&name("alpha"), Role::Edge).unwrap();

    // The core's certificate cannot dial in as an edge.
    let client = client_tls(&core, Some(&core), ALPN);
    let (at_core, _) = refused(&core, Allowed::AnyEdge, client, "hq").await;
    check_contains(
        &at_core.unwrap_err().to_string(),
        &["TLS handshake refused here"],
    );

    // An edge's certificate cannot serve as the core, even one issued under its name.
    let fake_core = ca.issue(&name("hq"), Role::Edge).unwrap();
    let client = client_config(&alpha, transport()).unwrap();
    let (_, at_edge) = refused(&fake_core, Allowed::AnyEdge, client, "hq").await;
    check_contains(
        &explain(&at_edge),
        &[
            "TLS handshake refused here",
            "extended key usage for server",
        ],
    );

    // A core under another name is not the core the edge dials.
    let client = client_config(&alpha, transport()).unwrap();
    let (_, at_edge) = refused(&core, Allowed::AnyEdge, client, "hq2").await;
    check_contains(
        &explain(&at_edge),
        &["TLS handshake refused here", "not valid for name \"hq2\""],
    );
}

#[test]
fn the_ca_and_identities_round_trip_through_files() {
    let dir = TempDir::new("tls-files");
    let certs = dir.path().join("certs");
    let ca = Ca::create("Tether mission CA hq").unwrap();
    let written = ca.save(&certs).unwrap();
    assert_eq!(written, [certs.join("ca.pem"), certs.join("ca.key")]);
    let again = ca.save(&certs).unwrap_err().to_string();
    check_contains(
        &again,
        &["already holds a mission CA", "refusing to replace it"],
    );

    let loaded = Ca::load(&certs).unwrap();
    assert_eq!(loaded.name(), "Tether mission CA hq");
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    let alpha = loaded.issue(&name("alpha"), Role::Edge).unwrap();
    let out = dir.path().join("out");
    let written = alpha.save(&out).unwrap();
    assert_eq!(
        written,
        [
            out.join("alpha.pem"),
            out.join("alpha.key"),
            out.join("ca.pem")
        ]
    );
    let identity = NodeIdentity::load(&out, &name("alpha"), Role::Edge).unwrap();
    assert_eq!(
        (identity.name().as_str(), identity.role()),
        ("alpha", Role::Edge)
    );
    let err = alpha.save(&out).unwrap_err().to_string();
    check_contains(&err, &["alpha.pem already exists; refusing to overwrite"]);
    // Into the CA's own directory: ca.pem is there already, and the same.
    assert_eq!(alpha.save(&certs).unwrap().len(), 2);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(out.join("alpha.key")), 0o600);
        assert_eq!(mode(certs.join("ca.key")), 0o600);
        assert_eq!(mode(out.join("alpha.pem")), 0o644);
        assert_eq!(mode(certs.clone()), 0o700);
    }

    // A certificate for the wrong role, or another node's.
    let err = NodeIdentity::load(&out, &name("alpha"), Role::Core)
        .unwrap_err()
        .to_string();
    check_contains(&err, &["alpha.pem", "not issued for a core"]);
    std::fs::copy(out.join("alpha.pem"), out.join("bravo.pem")).unwrap();
    std::fs::copy(out.join("alpha.key"), out.join("bravo.key")).unwrap();
    let err = NodeIdentity::load(&out, &name("bravo"), Role::Edge)
        .unwrap_err()
        .to_string();
    check_contains(&err, &["bravo.pem", "issued to node alpha, not to bravo"]);

    // Another CA's certificate in the output directory is not replaced.
    let other = Ca::create("other")
        .unwrap()
        .issue(&name("charlie"), Role::Edge)
        .unwrap();
    let err = other.save(&out).unwrap_err().to_string();
    check_contains(&err, &["ca.pem", "holds another CA's certificate"]);
}

#[test]
fn bad_files_name_the_file_and_the_fault() {
    let dir = TempDir::new("tls-bad");
    let d = dir.path();
    let alpha = name("alpha");
    let load = || {
        NodeIdentity::load(d, &alpha, Role::Edge)
            .unwrap_err()
            .to_string()
    };
    let write = |file: &str, text: &[u8]| std::fs::write(d.join(file), text).unwrap();

    assert_eq!(
        load(),
        format!("missing file {}", d.join("alpha.pem").display())
    );
    let (ca, _) = mission();
    let good = ca.issue(&alpha, Role::Edge).unwrap();
    good.save(d).unwrap();
    let path = |file: &str| d.join(file).display().to_string();

    let cert = std::fs::read(d.join("alpha.pem")).unwrap();
    write("alpha.pem", b"garbage\n");
    check_contains(&load(), &[&path("alpha.pem"), "holds no certificate"]);
    write("alpha.pem", b"\xff\xfe\x00binary");
    check_contains(&load(), &[&path("alpha.pem"), "not a PEM file"]);
    write(
        "alpha.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    check_contains(
        &load(),
        &[&path("alpha.pem"), "not a valid X.509 certificate"],
    );
    write("alpha.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n");
    check_contains(
        &load(),
        &[&path("alpha.pem"), "not a valid PEM certificate"],
    );
    write("alpha.pem", &cert);

    let key = std::fs::read(d.join("alpha.key")).unwrap();
    write("alpha.key", b"not a key");
    check_contains(&load(), &[&path("alpha.key"), "holds no private key"]);
    std::fs::remove_file(d.join("alpha.key")).unwrap();
    check_contains(&load(), &["missing file", &path("alpha.key")]);
    let other_key = ca.issue(&name("bravo"), Role::Edge).unwrap().key_pem;
    write("alpha.key", other_key.as_bytes());
    check_contains(
        &load(),
        &[&path("alpha.key"), "does not match the certificate"],
    );
    write("alpha.key", &key);

    let ca_pem = std::fs::read(d.join("ca.pem")).unwrap();
    write("ca.pem", Ca::create("other").unwrap().cert_pem().as_bytes());
    check_contains(
        &load(),
        &[&path("alpha.pem"), "not issued by the mission CA"],
    );
    write("ca.pem", &[ca_pem.as_slice(), ca_pem.as_slice()].concat());
    check_contains(&load(), &[&path("ca.pem"), "holds 2 certificates"]);
    write("ca.pem", &ca_pem);
    NodeIdentity::load(d, &alpha, Role::Edge).unwrap();

    // Expired, and not yet valid.
    let now = SystemTime::now();
    let year = Duration::from_secs(365 * 24 * 3600);
    let expired = ca
        .issue_valid(&name("old"), Role::Edge, now - 2 * year, now - year)
        .unwrap();
    expired.save(d).unwrap();
    let err = NodeIdentity::load(d, &name("old"), Role::Edge)
        .unwrap_err()
        .to_string();
    check_contains(&err, &[&path("old.pem"), "has expired"]);
    let future = ca
        .issue_valid(&name("new"), Role::Edge, now + year, now + 2 * year)
        .unwrap();
    future.save(d).unwrap();
    let err = NodeIdentity::load(d, &name("new"), Role::Edge)
        .unwrap_err()
        .to_string();
    check_contains(&err, &[&path("new.pem"), "not valid yet"]);

    // The CA's own files.
    let err = Ca::load(d).unwrap_err().to_string();
    assert_eq!(err, format!("missing file {}", path("ca.key")));
    write("ca.key", key.as_slice());
    check_contains(
        &Ca::load(d).unwrap_err().to_string(),
        &[&path("ca.key"), "does not match"],
    );
    write(
        "ca.key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    check_contains(
        &Ca::load(d).unwrap_err().to_string(),
        &[&path("ca.key"), "not a usable private key"],
    );

    // A node name that is no DNS name cannot be issued.
    let err = ca.issue(&name("7"), Role::Edge).unwrap_err().to_string();
    check_contains(&err, &["node name 7 cannot name a certificate"]);
}

#[test]
fn demo_files_are_created_once_and_only_with_the_ca_key() {
    let dir = TempDir::new("tls-demo");
    let certs = dir.path().join("hq/certs");
    let (hq, alpha, bravo) = (name("hq"), name("alpha"), name("bravo"));
    let edges = [alpha.clone(), bravo.clone()];

    let done = ensure_demo_files(&certs, &hq, Role::Core, &edges).unwrap();
    assert!(done.ca_created);
    assert_eq!(done.issued, [hq.clone(), alpha.clone(), bravo.clone()]);
    NodeIdentity::load(&certs, &hq, Role::Core).unwrap();
    NodeIdentity::load(&certs, &bravo, Role::Edge).unwrap();
    // Again: nothing to do, for the core or for an edge sharing its directory.
    let again = ensure_demo_files(&certs, &hq, Role::Core, &edges).unwrap();
    assert_eq!(again, DemoFiles::default());
    let edge = ensure_demo_files(&certs, &alpha, Role::Edge, &[]).unwrap();
    assert_eq!(edge, DemoFiles::default());
    // A new edge in the core's directory is issued from its CA.
    let charlie = ensure_demo_files(&certs, &name("charlie"), Role::Edge, &[]).unwrap();
    assert_eq!(charlie.issued, [name("charlie")]);
    assert!(!charlie.ca_created);

    // Without the CA's key an edge cannot issue itself a certificate.
    let field = dir.path().join("delta/certs");
    std::fs::create_dir_all(&field).unwrap();
    std::fs::copy(certs.join("ca.pem"), field.join("ca.pem")).unwrap();
    let err = ensure_demo_files(&field, &name("delta"), Role::Edge, &[]).unwrap_err();
    check_contains(
        &err.to_string(),
        &[
            "ca.key: missing",
            "run `core-node certs issue delta` on the core",
        ],
    );
    // An edge alone makes a CA of its own.
    let alone = dir.path().join("echo/certs");
    let done = ensure_demo_files(&alone, &name("echo"), Role::Edge, &[]).unwrap();
    assert!(done.ca_created);
    NodeIdentity::load(&alone, &name("echo"), Role::Edge).unwrap();
}

#[test]
fn close_codes_are_distinct_and_read_back() {
    let numbers: Vec<u64> = CloseCode::ALL
        .iter()
        .map(|c| c.code().into_inner())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "in number order: {numbers:?}"
    );
    for code in CloseCode::ALL {
        assert_eq!(CloseCode::from_code(code.code()), Some(code));
    }
    assert_eq!(CloseCode::from_code(VarInt::from_u32(999)), None);
    assert_eq!(CloseCode::NotAllowed.to_string(), "not-allowed");
    assert_eq!(
        (CloseCode::Revoked.code(), CloseCode::Revoked.as_str()),
        (VarInt::from_u32(7), "revoked")
    );
}

/// Refuses one key, admits the rest.
struct RevokedKey(String);

impl Admit for RevokedKey {
    fn admit(&self, _name: &NodeName, certificate: &CertificateInfo) -> Result<(), Refusal> {
        if certificate.key_sha256 == self.0 {
            return Err(Refusal::Revoked {
                serial: certificate.serial.clone(),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_revoked_certificate_is_closed_with_revoked_and_a_new_one_is_not() {
    let (ca, core) = mission();
    let old = ca.issue(&name("alpha"), Role::Edge).unwrap();
    let new = ca.issue(&name("alpha"), Role::Edge).unwrap();
    let info = |identity: &NodeIdentity| CertificateInfo::read(&identity.chain()[0]).unwrap();
    let (old_info, new_info) = (info(&old), info(&new));
    assert_ne!(old_info.key_sha256, new_info.key_sha256);
    assert_ne!(old_info.serial, new_info.serial);
    let revoked = || RevokedKey(old_info.key_sha256.clone());

    let client = client_config(&old, transport()).unwrap();
    let (at_core, at_edge) = refused(&core, revoked(), client, "hq").await;
    let err = at_core.unwrap_err();
    assert!(
        matches!(&err, HandshakeError::Revoked { serial, .. } if *serial == old_info.serial),
        "{err:?}"
    );
    let ConnectionError::ApplicationClosed(close) = &at_edge else {
        panic!("expected an application close, got {at_edge:?}");
    };
    assert_eq!(close.error_code, CloseCode::Revoked.code());
    check_contains(
        &explain(&at_edge),
        &[
            "closed by the peer (revoked): the certificate of edge alpha",
            "is revoked",
        ],
    );

    // The same name with a new key: admitted, and the core reads its certificate.
    let server = server_endpoint(localhost(), &core, transport()).unwrap();
    let addr = server.local_addr().unwrap();
    let edge = client_endpoint(localhost(), &new, transport()).unwrap();
    let (admit, hq) = (revoked(), name("hq"));
    let (accepted, connected) = tokio::join!(
        async { accept(server.accept().await.unwrap(), &admit).await },
        connect(&edge, addr, &hq)
    );
    assert_eq!(accepted.unwrap().certificate, Some(new_info));
    let at_edge = connected.unwrap().certificate.unwrap();
    assert_eq!(at_edge, info(&core));
}

#[test]
fn a_certificate_reads_its_serial_key_and_expiry() {
    let (ca, _) = mission();
    let now = SystemTime::now();
    let end = now + Duration::from_secs(90 * 24 * 3600);
    let identity = ca
        .issue_valid(&name("alpha"), Role::Edge, now, end)
        .unwrap();
    let info = CertificateInfo::read(&identity.chain()[0]).unwrap();
    // X.509 times have whole seconds.
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(info.not_after), secs(end));
    assert_eq!(info.key_sha256.len(), 64);
    assert!(!info.serial.is_empty() && info.serial.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        info.expires_in(end + Duration::from_secs(1)),
        Duration::ZERO
    );
}

/// A mission's CA and the core `hq`'s files in a new directory named `label`, and
/// credentials that reload from them.
fn watched_core(label: &str) -> (TempDir, Ca, Credentials) {
    let dir = TempDir::new(label);
    let (ca, _) = mission();
    ca.issue(&name("hq"), Role::Core)
        .unwrap()
        .save(dir.path())
        .unwrap();
    let hq = NodeIdentity::load(dir.path(), &name("hq"), Role::Core).unwrap();
    let credentials = Credentials::watch(&hq, dir.path()).unwrap();
    (dir, ca, credentials)
}

/// Replaces the core's files in `dir` with a new certificate and key, as cert-manager
/// does.
fn renew_core(dir: &TempDir, ca: &Ca) {
    for file in ["hq.pem", "hq.key"] {
        std::fs::remove_file(dir.path().join(file)).unwrap();
    }
    ca.issue(&name("hq"), Role::Core)
        .unwrap()
        .save(dir.path())
        .unwrap();
}

#[tokio::test]
async fn renewed_files_are_served_to_the_next_handshake_without_a_restart() {
    let (dir, ca, credentials) = watched_core("tls-renew");
    let server = server_endpoint_with(localhost(), &credentials, transport()).unwrap();
    let addr = server.local_addr().unwrap();
    let alpha = ca.issue(&name("alpha"), Role::Edge).unwrap();
    let (allowed, core) = (Allowed::AnyEdge, name("hq"));
    // A fresh endpoint each time: an edge that resumes its session sees the core's
    // certificate of the session's first handshake (it sees a renewed one at its next
    // full handshake; a ticket lasts a day at most).
    let served = || async {
        let edge = client_endpoint(localhost(), &alpha, transport()).unwrap();
        let (accepted, connected) = tokio::join!(
            async { accept(server.accept().await.unwrap(), &allowed).await },
            connect(&edge, addr, &core)
        );
        accepted.unwrap();
        connected.unwrap().certificate.unwrap()
    };
    let first = served().await;
    assert_eq!(first, credentials.certificate());

    // Renewed on disk: the next handshake presents the new certificate.
    renew_core(&dir, &ca);
    let second = served().await;
    assert_ne!(second.serial, first.serial);
    assert_eq!(second, credentials.certificate());
    assert!(!credentials.refresh().unwrap());

    // A key that does not match: refused, and the previous certificate stays in use.
    std::fs::remove_file(dir.path().join("hq.key")).unwrap();
    let other = ca.issue(&name("hq"), Role::Core).unwrap();
    std::fs::write(dir.path().join("hq.key"), &other.key_pem).unwrap();
    let err = credentials.refresh().unwrap_err().to_string();
    check_contains(&err, &["hq.key", "does not match"]);
    assert_eq!(served().await, second);
}

#[test]
fn the_transport_takes_the_timeouts() {
    let shown = |timeouts| format!("{:?}", transport_config(timeouts));
    let defaults = shown(Timeouts::default());
    check_contains(
        &defaults,
        &[
            "keep_alive_interval: Some(15s)",
            "max_idle_timeout: Some(60000)",
        ],
    );
    let short = shown(Timeouts {
        keep_alive: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
    });
    check_contains(
        &short,
        &[
            "keep_alive_interval: Some(1s)",
            "max_idle_timeout: Some(5000)",
        ],
    );
    // Too long for QUIC: cut to the longest it can send, not a panic.
    let endless = shown(Timeouts {
        keep_alive: Duration::from_secs(1),
        idle_timeout: Duration::MAX,
    });
    check_contains(
        &endless,
        &[&format!("max_idle_timeout: Some({})", VarInt::MAX)],
    );
}

#[test]
fn a_ca_subject_is_read_back() {
    let long = Ca::create("Tether mission CA with a long name ".repeat(5).trim()).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&long.cert).unwrap();
    assert_eq!(
        ca::single_common_name(anchor.subject.as_ref()).as_deref(),
        Some(long.name())
    );
    assert_eq!(ca::single_common_name(&[]), None);
    assert_eq!(ca::single_common_name(&[0x31, 0x05, 0x30]), None);
}

#[test]
fn link_sockets_get_the_receive_buffer_the_kernel_allows() {
    let socket = bind_udp(localhost()).unwrap();
    // As much as asked, or the kernel's ceiling (net.core.rmem_max) when lower; Linux
    // reports twice the granted size.
    let ceiling = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap() / 2;
    assert!(
        granted >= SOCKET_RECEIVE_BUFFER.min(ceiling),
        "granted {granted}, ceiling {ceiling}"
    );
    assert!(
        granted > 212_992 || ceiling <= 212_992,
        "the default was not raised: {granted}"
    );
}

/// One link handshake of `edge` with the core's `server`, admitted by `admit`: the core's
/// result, and the core's certificate as the edge saw it.
async fn handshake_with(
    server: &quinn::Endpoint,
    edge: &quinn::Endpoint,
    admit: &dyn Admit,
) -> (Result<Peer, HandshakeError>, CertificateInfo) {
    let addr = server.local_addr().unwrap();
    let hq = name("hq");
    let (at_core, at_edge) = tokio::join!(
        async { accept(server.accept().await.unwrap(), admit).await },
        connect(edge, addr, &hq)
    );
    let at_edge = at_edge.unwrap();
    let seen = at_edge.certificate.clone().unwrap();
    // A round trip on the link, so that the core's ticket (sent once its side of the
    // handshake is done) has reached the edge before the next handshake.
    if let Ok(core) = &at_core {
        let mut ping = at_edge.connection.open_uni().await.unwrap();
        ping.write_all(b"ping").await.unwrap();
        ping.finish().unwrap();
        let mut got = core.connection.accept_uni().await.unwrap();
        got.read_to_end(8).await.unwrap();
        let mut pong = core.connection.open_uni().await.unwrap();
        pong.write_all(b"pong").await.unwrap();
        pong.finish().unwrap();
        let mut back = at_edge.connection.accept_uni().await.unwrap();
        back.read_to_end(8).await.unwrap();
    }
    (at_core, seen)
}

#[tokio::test]
async fn a_returning_edge_resumes_its_session_and_a_revoked_one_is_still_refused() {
    let (dir, ca, credentials) = watched_core("tls-resume");
    let server = server_endpoint_with(localhost(), &credentials, transport()).unwrap();
    let alpha = ca.issue(&name("alpha"), Role::Edge).unwrap();
    let alpha_key = CertificateInfo::read(&alpha.chain()[0]).unwrap().key_sha256;
    let edge = client_endpoint(localhost(), &alpha, transport()).unwrap();
    let allowed = Allowed::List(vec![name("alpha")]);

    let (first, seen_first) = handshake_with(&server, &edge, &allowed).await;
    let first = first.unwrap();
    CloseCode::Replaced.close(&first.connection, "reconnecting");
    // The core's certificate is renewed: a full handshake would present the new one.
    renew_core(&dir, &ca);
    let (second, seen_second) = handshake_with(&server, &edge, &allowed).await;
    let second = second.unwrap();
    assert_ne!(
        credentials.certificate(),
        seen_first,
        "the core's certificate is renewed"
    );
    // The edge resumed: it sees the session's certificate, not the renewed one; and the
    // core still knows the edge by its certificate (name and serial).
    assert_eq!(
        seen_second, seen_first,
        "the second handshake was a full one"
    );
    assert_eq!(second.name, name("alpha"));
    assert_eq!(second.certificate, first.certificate);
    CloseCode::Replaced.close(&second.connection, "reconnecting");
    // Revoked meanwhile: refused on its ticket, as without one.
    let (third, _) = handshake_with(&server, &edge, &RevokedKey(alpha_key)).await;
    assert!(
        matches!(&third, Err(HandshakeError::Revoked { name: n, .. }) if n.as_str() == "alpha"),
        "{third:?}"
    );
}

#[tokio::test]
async fn an_edge_whose_certificate_expired_is_refused_on_its_ticket() {
    let (ca, core) = mission();
    let now = SystemTime::now();
    let expires = now + Duration::from_secs(2);
    let alpha = ca
        .issue_valid(
            &name("alpha"),
            Role::Edge,
            now - Duration::from_secs(60),
            expires,
        )
        .unwrap();
    let server = server_endpoint(localhost(), &core, transport()).unwrap();
    let edge = client_endpoint(localhost(), &alpha, transport()).unwrap();
    let allowed = Allowed::AnyEdge;
    let (first, _) = handshake_with(&server, &edge, &allowed).await;
    CloseCode::Replaced.close(&first.unwrap().connection, "reconnecting");
    // Holding a duration: the certificate's validity is the clock's (whole seconds).
    let left = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_secs(1)).await;
    // A full handshake would fail in TLS; a resumed one passes TLS, and the core's own
    // check refuses it.
    let (second, _) = handshake_with(&server, &edge, &allowed).await;
    let err = second.unwrap_err().to_string();
    check_contains(&err, &["certificate of edge alpha", "has expired"]);
}

#[test]
fn the_core_resumes_a_session_for_a_day_at_most() {
    use rustls::server::StoresServerSessions;
    let sessions = DaySessions::new();
    assert!(sessions.put(b"ticket".to_vec(), b"session".to_vec()));
    assert_eq!(sessions.get(b"ticket"), Some(b"session".to_vec()));
    assert_eq!(sessions.take(b"ticket"), Some(b"session".to_vec()));
    assert_eq!(sessions.take(b"ticket"), None, "a ticket is used once");
    let stored = |age: Duration| {
        let issued = millis(SystemTime::now() - age);
        let mut v = issued.to_be_bytes().to_vec();
        v.extend_from_slice(b"session");
        v
    };
    let hour = Duration::from_secs(3600);
    assert_eq!(DaySessions::fresh(stored(hour)), Some(b"session".to_vec()));
    assert_eq!(DaySessions::fresh(stored(SESSION_LIFETIME + hour)), None);
    assert_eq!(DaySessions::fresh(b"short".to_vec()), None);
}
