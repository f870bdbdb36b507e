//! The mission CA and node identities, as PEM files in a certificates directory.
//!
//! A certificates directory holds:
//!
//! | file         | what                                                  | where        |
//! | ------------ | ----------------------------------------------------- | ------------ |
//! | `ca.pem`     | the mission CA's certificate                          | every node   |
//! | `ca.key`     | the mission CA's private key (mode 0600)              | the core     |
//! | `<node>.pem` | the node's certificate, issued by the CA              | that node    |
//! | `<node>.key` | the node's private key, PKCS#8 (mode 0600)            | that node    |
//!
//! Nothing here overwrites a file: creating one that exists is an error naming it.
//! Everything read is checked before use: PEM syntax, that the key matches the
//! certificate, that the certificate chains to `ca.pem`, is valid now, is issued for this
//! node's name and role.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SigningKey};

use super::{TlsError, name_in_certificate, provider, server_name};
use crate::entry::NodeName;
use crate::role::Role;

/// The mission CA's certificate, in every node's certificates directory.
pub const CA_CERT_FILE: &str = "ca.pem";

/// The mission CA's private key, in the core's certificates directory only.
pub const CA_KEY_FILE: &str = "ca.key";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The CA outlives the node certificates it issues: a mission may last years, and
/// renewing the CA means reissuing every node.
const CA_VALIDITY: Duration = DAY.saturating_mul(20 * 365);

/// A node certificate lasts five years: long enough that a node in the field for months
/// without a link does not expire there, short enough that a lost one stops working.
/// A lost edge's certificate is revoked at the core (`crate::edges`).
const NODE_VALIDITY: Duration = DAY.saturating_mul(5 * 365);

/// Certificates start a day in the past, because a field node's clock may be behind.
const BACKDATE: Duration = DAY;

/// The mission's certificate authority: it issues the certificates of every node.
pub struct Ca {
    /// The CA certificate's common name; its issuer name in every certificate it signs.
    name: String,
    pub(super) cert: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
    key_pem: String,
}

/// A node's TLS identity: its certificate and key, and the mission CA's certificate it
/// trusts. Its invariant: the key matches the certificate, which names the node and is
/// issued by the CA for the node's role (loaded ones were valid when loaded).
pub struct NodeIdentity {
    name: NodeName,
    role: Role,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    ca: CertificateDer<'static>,
    cert_pem: String,
    pub(super) key_pem: String,
    ca_pem: String,
}

/// What [`ensure_demo_files`] created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoFiles {
    /// A new mission CA was created in the directory.
    pub ca_created: bool,
    /// The nodes whose certificate and key were issued into the directory.
    pub issued: Vec<NodeName>,
}

impl Ca {
    /// A new mission CA named `name` (its certificate's common name), with a fresh
    /// ECDSA P-256 key, valid for 20 years. Nothing is written: see [`Ca::save`].
    pub fn create(name: &str) -> Result<Ca, TlsError> {
        let key = generate_key("the CA's key")?;
        let mut params = ca_params(name);
        let now = SystemTime::now();
        set_validity(&mut params, now - BACKDATE, now + CA_VALIDITY);
        let cert = params
            .self_signed(&key)
            .map_err(|source| TlsError::Generate {
                what: "the CA's certificate".to_owned(),
                source,
            })?;
        Ok(Ca {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            cert: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key,
        })
    }

    /// Loads the CA from `ca.pem` and `ca.key` in `dir`, checking that the key is the
    /// certificate's and that the certificate is one that [`Ca::create`] makes.
    pub fn load(dir: &Path) -> Result<Ca, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let (cert_pem, cert, _) = read_ca_cert(&cert_path)?;
        let key_pem = read_text(&key_path)?;
        let signing = parse_key(&key_pem, &key_path)?.1;
        check_keys_match(&cert, signing, &key_path, &cert_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem {
            path: key_path.clone(),
            reason: format!("the CA cannot sign with this key: {e}"),
        })?;
        let anchor = webpki::anchor_from_trusted_cert(&cert).map_err(|e| TlsError::Invalid {
            path: cert_path.clone(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
        let name =
            single_common_name(anchor.subject.as_ref()).ok_or_else(|| TlsError::Invalid {
                path: cert_path.clone(),
                reason: "not a Tether mission CA: its subject must be a single common name"
                    .to_owned(),
            })?;
        Ok(Ca {
            name,
            cert_pem,
            cert,
            key,
            key_pem,
        })
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`, creating it (mode 0700) if
    /// needed. Refuses if the directory already holds a CA. Returns the files written.
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return Err(TlsError::CaExists {
                dir: dir.to_path_buf(),
            });
        }
        create_dir(dir)?;
        write_new(&key_path, &self.key_pem, Secret::Yes)?;
        write_new(&cert_path, &self.cert_pem, Secret::No)?;
        Ok(vec![cert_path, key_path])
    }

    /// The CA certificate's common name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA's certificate, as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues `node` a certificate for `role` (the core: server authentication; an edge:
    /// client authentication) with a fresh ECDSA P-256 key, valid for 5 years. Nothing is
    /// written: see [`NodeIdentity::save`].
    pub fn issue(&self, node: &NodeName, role: Role) -> Result<NodeIdentity, TlsError> {
        let now = SystemTime::now();
        let identity = self.issue_valid(node, role, now - BACKDATE, now + NODE_VALIDITY)?;
        // Catches a CA whose issuer name, rebuilt from ca.pem, does not match it.
        identity.verify().map_err(|reason| TlsError::Invalid {
            path: PathBuf::from(CA_CERT_FILE),
            reason: format!("a certificate it issued does not verify: {reason}"),
        })?;
        Ok(identity)
    }

    /// [`Ca::issue`] with a chosen validity (tests make expired certificates with it).
    pub fn issue_valid(
        &self,
        node: &NodeName,
        role: Role,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeIdentity, TlsError> {
        let generate = |source| TlsError::Generate {
            what: format!("the certificate of node {node}"),
            source,
        };
        // The name must be a DNS name, for the SAN and for the edge's server name check.
        server_name(node)?;
        let key = generate_key(&format!("the key of node {node}"))?;
        let cert = self
            .certify(node, role, &key, not_before, not_after)
            .map_err(generate)?;
        let ca = self.cert.clone();
        Ok(NodeIdentity {
            name: node.clone(),
            role,
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            roots: Arc::new(roots_of(&ca).map_err(|reason| TlsError::Invalid {
                path: PathBuf::from(CA_CERT_FILE),
                reason,
            })?),
            ca,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

impl Ca {
    /// A certificate for `node` in `role` with the public key `key`, signed by the CA.
    fn certify(
        &self,
        node: &NodeName,
        role: Role,
        key: &impl rcgen::PublicKeyData,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<rcgen::Certificate, rcgen::Error> {
        let mut params = CertificateParams::new(vec![node.as_str().to_owned()])?;
        params.distinguished_name = common_name(node.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match role {
            Role::Core => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Edge => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        set_validity(&mut params, not_before, not_after);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::new(ca_params(&self.name), &self.key);
        params.signed_by(key, &issuer)
    }

    /// Issues edge `node` a certificate (PEM, valid 5 years) for the public key `point`:
    /// an uncompressed ECDSA P-256 point (65 bytes), as an enrolling edge sends its own
    /// key, which never leaves it.
    pub fn issue_for_key(&self, node: &NodeName, point: &[u8]) -> Result<String, TlsError> {
        let generate = |source| TlsError::Generate {
            what: format!("the certificate of edge {node}"),
            source,
        };
        server_name(node)?;
        if point.len() != 65 || point[0] != 4 {
            return Err(TlsError::Generate {
                what: format!("the certificate of edge {node}"),
                source: rcgen::Error::CouldNotParseKeyPair,
            });
        }
        struct Point<'a>(&'a [u8]);
        impl rcgen::PublicKeyData for Point<'_> {
            fn der_bytes(&self) -> &[u8] {
                self.0
            }
            fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
                &rcgen::PKCS_ECDSA_P256_SHA256
            }
        }
        let now = SystemTime::now();
        let cert = self
            .certify(
                node,
                Role::Edge,
                &Point(point),
                now - BACKDATE,
                now + NODE_VALIDITY,
            )
            .map_err(generate)?;
        Ok(cert.pem())
    }

    /// SHA-256 of the CA's certificate (DER): what an enrollment code pins.
    pub fn pin(&self) -> [u8; 32] {
        sha256(&self.cert)
    }
}

/// SHA-256 of the first certificate in `pem` (DER), if it holds one.
pub fn sha256_of_pem(pem: &str) -> Option<[u8; 32]> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|der| sha256(&der))
}

/// The serial, key and expiry of the first certificate in `pem`.
pub fn certificate_info_of_pem(pem: &str) -> Option<super::CertificateInfo> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    super::CertificateInfo::read(&der).ok()
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A fresh key for an enrolling edge (ECDSA P-256): its PEM, and its public point for
/// [`Ca::issue_for_key`].
pub fn enrollment_key() -> Result<(String, Vec<u8>), TlsError> {
    let key = generate_key("this edge's key")?;
    Ok((
        key.serialize_pem(),
        rcgen::PublicKeyData::der_bytes(&key).to_vec(),
    ))
}

/// Writes an enrolled edge's files into `dir` (`<node>.pem`, `<node>.key` with mode
/// 0600, `ca.pem`), refusing to replace a certificate or key of that name, then loads
/// them as the node will, so that files that would not work are an error now.
pub fn save_enrolled(
    dir: &Path,
    node: &NodeName,
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<NodeIdentity, TlsError> {
    let (cert_path, key_path) = (cert_file(dir, node), key_file(dir, node));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(TlsError::Exists { path: path.clone() });
        }
    }
    create_dir(dir)?;
    let ca_path = dir.join(CA_CERT_FILE);
    if ca_path.exists() {
        // Another mission's CA would make the new certificate fail to load below.
        if read_text(&ca_path)? != ca_pem {
            return Err(TlsError::Invalid {
                path: ca_path,
                reason: "holds another CA than the one this enrollment is for: move it away"
                    .to_owned(),
            });
        }
    } else {
        write_new(&ca_path, ca_pem, Secret::No)?;
    }
    write_new(&key_path, key_pem, Secret::Yes)?;
    write_new(&cert_path, cert_pem, Secret::No)?;
    NodeIdentity::load(dir, node, Role::Edge)
}

/// `<file>.renewed`: where a renewal stages a file before renaming it over the old.
fn staged(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".renewed");
    PathBuf::from(name)
}

/// Finishes a renewal of `node`'s files in `dir` that a stop cut off between its renames
/// ([`replace_identity`]): a staged certificate left after its key was renamed is renamed
/// too. Returns whether there was one. (A stop before the key's rename leaves the old
/// pair whole; the staged files are then written again by the next renewal.)
pub fn finish_renewal(dir: &Path, node: &NodeName) -> bool {
    let (cert_path, key_path) = (cert_file(dir, node), key_file(dir, node));
    let (cert_new, key_new) = (staged(&cert_path), staged(&key_path));
    if cert_new.exists() && !key_new.exists() {
        return fs::rename(&cert_new, &cert_path).is_ok();
    }
    false
}

/// Replaces node `node`'s certificate and key in `dir` with renewed ones: each written
/// beside its file and renamed over it, the key first (a reload between the two renames
/// fails, is logged, and the next one takes both; a stop between them is finished by
/// [`finish_renewal`] at the next start), then loads them as the node will.
pub fn replace_identity(
    dir: &Path,
    node: &NodeName,
    role: Role,
    cert_pem: &str,
    key_pem: &str,
) -> Result<NodeIdentity, TlsError> {
    let (cert_path, key_path) = (cert_file(dir, node), key_file(dir, node));
    for (path, text, secret) in [
        (&key_path, key_pem, Secret::Yes),
        (&cert_path, cert_pem, Secret::No),
    ] {
        let new = staged(path);
        let _ = fs::remove_file(&new);
        write_new(&new, text, secret)?;
    }
    for path in [&key_path, &cert_path] {
        fs::rename(staged(path), path).map_err(|source| TlsError::Write {
            path: path.clone(),
            source,
        })?;
    }
    // The renames are durable before the old certificate can be forgotten.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    NodeIdentity::load(dir, node, role)
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Ca")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Loads node `node`'s identity from `dir`: `<node>.pem`, `<node>.key` and `ca.pem`.
    /// Checks that the key matches the certificate, that the certificate names `node`,
    /// chains to `ca.pem`, is valid now, and is issued for `role`.
    pub fn load(dir: &Path, node: &NodeName, role: Role) -> Result<NodeIdentity, TlsError> {
        let ca_path = dir.join(CA_CERT_FILE);
        let cert_path = cert_file(dir, node);
        let key_path = key_file(dir, node);
        let cert_pem = read_text(&cert_path)?;
        let chain = parse_certs(&cert_pem, &cert_path)?;
        let key_pem = read_text(&key_path)?;
        let (key, signing) = parse_key(&key_pem, &key_path)?;
        let (ca_pem, ca, roots) = read_ca_cert(&ca_path)?;
        check_keys_match(&chain[0], signing, &key_path, &cert_path)?;
        let invalid = |reason| TlsError::Invalid {
            path: cert_path.clone(),
            reason,
        };
        let named = name_in_certificate(&chain[0]).map_err(invalid)?;
        if named != *node {
            return Err(invalid(format!(
                "the certificate is issued to node {named}, not to {node}"
            )));
        }
        let identity = NodeIdentity {
            name: node.clone(),
            role,
            chain,
            key,
            roots: Arc::new(roots),
            ca,
            cert_pem,
            key_pem,
            ca_pem,
        };
        identity.verify().map_err(invalid)?;
        Ok(identity)
    }

    /// Writes `<node>.pem`, `<node>.key` (mode 0600) and, unless it is there already,
    /// `ca.pem` into `dir`, creating it (mode 0700) if needed. Refuses to overwrite the
    /// node's files, or a `ca.pem` of another CA. Returns the files written.
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>, TlsError> {
        let ca_path = dir.join(CA_CERT_FILE);
        let cert_path = cert_file(dir, &self.name);
        let key_path = key_file(dir, &self.name);
        let write_ca = match read_text(&ca_path) {
            Ok(text) => {
                if parse_certs(&text, &ca_path)? != [self.ca.clone()] {
                    return Err(TlsError::Invalid {
                        path: ca_path,
                        reason: "holds another CA's certificate; refusing to replace it".to_owned(),
                    });
                }
                false
            }
            Err(TlsError::Missing { .. }) => true,
            Err(e) => return Err(e),
        };
        // Check both before writing either, so that a refusal leaves nothing half done.
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(TlsError::Exists { path: path.clone() });
            }
        }
        create_dir(dir)?;
        write_new(&key_path, &self.key_pem, Secret::Yes)?;
        write_new(&cert_path, &self.cert_pem, Secret::No)?;
        let mut written = vec![cert_path, key_path];
        if write_ca {
            write_new(&ca_path, &self.ca_pem, Secret::No)?;
            written.push(ca_path);
        }
        Ok(written)
    }

    /// The node's name, as its certificate holds it.
    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// The role its certificate is issued for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The trusted roots: the mission CA alone.
    pub(super) fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// The node's certificate chain, its own certificate first.
    pub(super) fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The serial, key and expiry of the node's certificate.
    pub fn certificate_info(&self) -> Result<super::CertificateInfo, TlsError> {
        let first = self.chain.first().ok_or(TlsError::NoPeerCertificate)?;
        super::CertificateInfo::read(first).map_err(|reason| TlsError::Invalid {
            path: cert_file(Path::new(""), &self.name),
            reason,
        })
    }

    /// The mission CA's certificate.
    pub(super) fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The node's private key.
    pub(super) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// Verifies the certificate against the CA now, for the node's role and name, with
    /// the same verifiers the handshake uses.
    fn verify(&self) -> Result<(), String> {
        let Some((end, intermediates)) = self.chain.split_first() else {
            return Err("no certificate".to_owned());
        };
        let now = UnixTime::now();
        let verified = match self.role {
            Role::Core => {
                let verifier =
                    WebPkiServerVerifier::builder_with_provider(self.roots(), provider())
                        .build()
                        .map_err(|e| e.to_string())?;
                let name = server_name(&self.name).map_err(|e| e.to_string())?;
                verifier
                    .verify_server_cert(end, intermediates, &name, &[], now)
                    .map(drop)
            }
            Role::Edge => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(self.roots(), provider())
                        .build()
                        .map_err(|e| e.to_string())?;
                verifier
                    .verify_client_cert(end, intermediates, now)
                    .map(drop)
            }
        };
        verified.map_err(|e| describe_certificate_error(&e, self.role))
    }
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("NodeIdentity")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// For a demo: creates in `dir` what is missing for `node` (of `role`) to start and, on
/// the core, for `edges` to connect: a mission CA if `dir` has none, and the certificate
/// and key of each of these nodes that has neither. A node whose files are there, even
/// only one of them, is left alone (loading it then says what is wrong).
///
/// Issuing needs `ca.key`: an edge whose directory has `ca.pem` but not `ca.key` cannot
/// create its own certificate, and gets an error saying how to obtain one. An edge whose
/// directory is empty creates a CA of its own, which the core will not trust unless they
/// share the directory; the caller should say so.
pub fn ensure_demo_files(
    dir: &Path,
    node: &NodeName,
    role: Role,
    edges: &[NodeName],
) -> Result<DemoFiles, TlsError> {
    let mut wanted = vec![(node.clone(), role)];
    if role == Role::Core {
        let others = edges.iter().filter(|edge| *edge != node);
        wanted.extend(others.map(|edge| (edge.clone(), Role::Edge)));
    }
    wanted.retain(|(name, _)| !cert_file(dir, name).exists() && !key_file(dir, name).exists());
    let mut done = DemoFiles::default();
    let Some((first, _)) = wanted.first() else {
        return Ok(done);
    };
    let ca_cert = dir.join(CA_CERT_FILE);
    let ca_key = dir.join(CA_KEY_FILE);
    let ca = match (ca_cert.exists(), ca_key.exists()) {
        (false, false) => {
            let ca = Ca::create(&format!("Tether demo CA {node}"))?;
            ca.save(dir)?;
            done.ca_created = true;
            ca
        }
        (true, false) => {
            return Err(TlsError::Invalid {
                path: ca_key,
                reason: format!(
                    "missing, so no certificate can be issued for node {first} here (the \
                     CA's key stays on the core): run `core-node certs issue {first}` on \
                     the core and copy the files it writes into {}",
                    dir.display()
                ),
            });
        }
        _ => Ca::load(dir)?,
    };
    for (name, role) in wanted {
        ca.issue(&name, role)?.save(dir)?;
        done.issued.push(name);
    }
    Ok(done)
}

/// Checks at start that a private key file is not open to other users: readable or
/// writable by "others" is refused ([`TlsError::KeyExposed`]); readable by its group
/// is warned about when the file is the node's own (then the group bit gives access to
/// others only). A key owned by another user and shared through its group, as a
/// Kubernetes Secret volume with the pod's `fsGroup` is, passes. A missing file passes
/// (loading it reports that).
pub fn check_key_file(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(meta) = fs::metadata(path) else {
            return Ok(());
        };
        let mode = meta.mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(TlsError::KeyExposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        // The process's user: the owner of its /proc entry (Linux).
        let own = fs::metadata("/proc/self").map(|m| m.uid()).ok();
        if mode & 0o070 != 0 && own == Some(meta.uid()) {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:03o}"),
                "a private key is readable by its group: run `chmod 600` on it unless \
                 the group is the node's alone"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// `<dir>/<node>.pem`.
pub(super) fn cert_file(dir: &Path, node: &NodeName) -> PathBuf {
    dir.join(format!("{node}.pem"))
}

/// `<dir>/<node>.key`.
pub(super) fn key_file(dir: &Path, node: &NodeName) -> PathBuf {
    dir.join(format!("{node}.key"))
}

fn generate_key(what: &str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| TlsError::Generate {
        what: what.to_owned(),
        source,
    })
}

/// A CA certificate's parameters, without validity. The same parameters rebuild the
/// issuer from a loaded CA: its name must match what its certificate says.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name);
    // Path length 0: the mission CA signs node certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// Sets the certificate's validity period.
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    // rcgen's dates are the `time` crate's; adding a std Duration to its epoch avoids
    // depending on that crate directly.
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_before);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_after);
}

fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The common name of a certificate subject that is exactly one common name, as a UTF-8
/// string (the subject [`Ca::create`] writes). `subject` is the DER inside the subject's
/// SEQUENCE: one SET holding one SEQUENCE of the OID 2.5.4.3 and a UTF8String.
pub(super) fn single_common_name(subject: &[u8]) -> Option<String> {
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const UTF8_STRING: u8 = 0x0c;
    const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
    let (set, rest) = der_value(subject, SET)?;
    let (attribute, set_rest) = der_value(set, SEQUENCE)?;
    let (oid, attribute_rest) = der_value(attribute, OID)?;
    let (value, value_rest) = der_value(attribute_rest, UTF8_STRING)?;
    let whole = rest.is_empty() && set_rest.is_empty() && value_rest.is_empty();
    (whole && oid == COMMON_NAME)
        .then(|| String::from_utf8(value.to_vec()).ok())
        .flatten()
}

/// Reads one DER value of tag `tag` from `input`: `(contents, rest)`.
fn der_value(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, rest)
    };
    (found == tag && rest.len() >= len).then(|| rest.split_at(len))
}

/// Reads `ca.pem`: exactly one certificate, usable as the trusted root.
fn read_ca_cert(path: &Path) -> Result<(String, CertificateDer<'static>, RootCertStore), TlsError> {
    let text = read_text(path)?;
    let mut certs = parse_certs(&text, path)?;
    if certs.len() != 1 {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} certificates; expected the mission CA's alone",
                certs.len()
            ),
        });
    }
    let cert = certs.remove(0);
    let roots = roots_of(&cert).map_err(|reason| TlsError::Invalid {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok((text, cert, roots))
}

/// A root store holding the CA alone.
fn roots_of(ca: &CertificateDer<'static>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    Ok(roots)
}

/// The certificates in a PEM text, at least one, each readable as X.509.
fn parse_certs(text: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a valid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (expected a -----BEGIN CERTIFICATE----- section)".to_owned(),
        ));
    }
    for cert in &certs {
        webpki::EndEntityCert::try_from(cert)
            .map_err(|e| bad(format!("not a valid X.509 certificate: {e}")))?;
    }
    Ok(certs)
}

/// The private key in a PEM text, and the same key loaded for signing (which checks it).
fn parse_key(
    text: &str,
    path: &Path,
) -> Result<(PrivateKeyDer<'static>, Arc<dyn SigningKey>), TlsError> {
    let bad = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            bad("holds no private key (expected a -----BEGIN PRIVATE KEY----- section)".to_owned())
        }
        e => bad(format!("not a valid PEM private key: {e}")),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| bad(format!("not a usable private key: {e}")))?;
    Ok((key, signing))
}

fn check_keys_match(
    cert: &CertificateDer<'static>,
    key: Arc<dyn SigningKey>,
    key_path: &Path,
    cert_path: &Path,
) -> Result<(), TlsError> {
    CertifiedKey::new(vec![cert.clone()], key)
        .keys_match()
        .map_err(|e| TlsError::Invalid {
            path: key_path.to_path_buf(),
            reason: format!(
                "the key does not match the certificate in {} ({e})",
                cert_path.display()
            ),
        })
}

/// A certificate the verifier refused, in words that point at the likely cause.
fn describe_certificate_error(err: &rustls::Error, role: Role) -> String {
    use rustls::CertificateError as E;
    let what = match err {
        rustls::Error::InvalidCertificate(e) => match e {
            E::Expired | E::ExpiredContext { .. } => "has expired",
            E::NotValidYet | E::NotValidYetContext { .. } => {
                "is not valid yet (is this machine's clock right?)"
            }
            E::UnknownIssuer | E::BadSignature => "is not issued by the mission CA in ca.pem",
            E::InvalidPurpose | E::InvalidPurposeContext { .. } => match role {
                Role::Core => "is not issued for a core (it is an edge's)",
                Role::Edge => "is not issued for an edge (it is a core's)",
            },
            E::NotValidForName | E::NotValidForNameContext { .. } => "does not name this node",
            _ => "is refused",
        },
        _ => "is refused",
    };
    format!("the certificate {what}: {err}")
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    let bytes = fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_path_buf(),
        },
        _ => TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    String::from_utf8(bytes).map_err(|_| TlsError::Pem {
        path: path.to_path_buf(),
        reason: "not a PEM file (not text)".to_owned(),
    })
}

/// Whether a file holds a secret, and so is readable by its owner only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    Yes,
    No,
}

/// Creates `path` with `text`, synced; fails if it exists.
fn write_new(path: &Path, text: &str, secret: Secret) -> Result<(), TlsError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(match secret {
            Secret::Yes => 0o600,
            Secret::No => 0o644,
        });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let write_error = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = options.open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => TlsError::Exists {
            path: path.to_path_buf(),
        },
        _ => write_error(source),
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write_error)
}

/// Creates `dir` (mode 0700: it holds keys) and its parents, if missing.
fn create_dir(dir: &Path) -> Result<(), TlsError> {
    let error = |source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(error)?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    match builder.create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other.map_err(error),
    }
}
