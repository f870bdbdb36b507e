//! A node's TLS credentials as its handshakes use them, reloaded when their files change.
//!
//! Certificates are renewed while nodes run (cert-manager rewrites a Secret's files well
//! before they expire; an operator copies new files by hand). [`Credentials`] serves every
//! handshake from what it loaded last and, before each one, looks at the files' size,
//! modification time and inode (three `stat` calls): when they changed, it loads and
//! checks them again as at start ([`NodeIdentity::load`]: the key matches, the
//! certificate names this node, chains to `ca.pem`, is valid now, for this role) and
//! uses them from this handshake on. Files that do not load (half copied, mismatched, an
//! expired certificate) leave the previous credentials in use, with a warning once per
//! change. Links already up keep the certificate they started with: TLS authenticates a
//! connection once.
//!
//! rustls asks for the certificate through [`ResolvesServerCert`] and
//! [`ResolvesClientCert`], and verifies the peer through verifiers that delegate to the
//! webpki verifiers built from the current `ca.pem`.
//!
//! IO: reads the certificates directory (on handshakes and on [`Credentials::refresh`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::ca::{CA_CERT_FILE, NodeIdentity, cert_file, key_file};
use super::certificate::CertificateInfo;
use super::{TlsError, config_error, provider};
use crate::entry::NodeName;
use crate::role::Role;

/// A node's certificate, key and trusted CA, shared by its endpoint's TLS configs and
/// reloaded from their files when they change (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct Credentials(Arc<Inner>);

struct Inner {
    /// Where they come from; `None`: built in memory, never reloaded.
    files: Option<Files>,
    current: RwLock<Arc<Loaded>>,
    /// The files' stamp when they last failed to load: the failure is logged once.
    failed: Mutex<Option<Stamp>>,
    /// The key the core's stateless resets are derived from: the key loaded at start.
    reset_secret: Vec<u8>,
}

struct Files {
    dir: PathBuf,
    node: NodeName,
    role: Role,
}

/// What one load produced.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The same with the CA's certificate after the node's: served to an enrolling edge,
    /// which checks the CA against the pin in its code.
    key_with_ca: Arc<CertifiedKey>,
    edges: Arc<dyn ClientCertVerifier>,
    core: Arc<WebPkiServerVerifier>,
    info: CertificateInfo,
    stamp: Option<Stamp>,
}

/// Size, modification time and inode of the certificate, key and CA files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(u64, Option<SystemTime>, u64)>>);

impl Credentials {
    /// Credentials of `identity` that never change (tests, and identities made in memory).
    pub fn fixed(identity: &NodeIdentity) -> Result<Credentials, TlsError> {
        Credentials::build(identity, None, None)
    }

    /// Credentials of `identity`, loaded from `dir`, reloaded from there when its files
    /// change: `<node>.pem`, `<node>.key` and `ca.pem`.
    pub fn watch(identity: &NodeIdentity, dir: &Path) -> Result<Credentials, TlsError> {
        let files = Files {
            dir: dir.to_path_buf(),
            node: identity.name().clone(),
            role: identity.role(),
        };
        let stamp = files.stamp();
        Credentials::build(identity, Some(files), Some(stamp))
    }

    fn build(
        identity: &NodeIdentity,
        files: Option<Files>,
        stamp: Option<Stamp>,
    ) -> Result<Credentials, TlsError> {
        let loaded = Loaded::new(identity, stamp)?;
        Ok(Credentials(Arc::new(Inner {
            files,
            current: RwLock::new(Arc::new(loaded)),
            failed: Mutex::new(None),
            reset_secret: identity.key_pem.as_bytes().to_vec(),
        })))
    }

    /// The certificate in use now.
    pub fn certificate(&self) -> CertificateInfo {
        self.current().info.clone()
    }

    /// The certificate's files, if these credentials reload from files.
    pub fn path(&self) -> Option<PathBuf> {
        let files = self.0.files.as_ref()?;
        Some(cert_file(&files.dir, &files.node))
    }

    /// Loads the files again if they changed since the last load (or the last failed
    /// attempt). `Ok(true)`: new credentials are in use; `Ok(false)`: nothing changed;
    /// an error: the new files do not load, and the previous credentials stay in use
    /// (the error is also logged, once per change of the files).
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let Some(files) = &self.0.files else {
            return Ok(false);
        };
        let stamp = files.stamp();
        if self.current().stamp.as_ref() == Some(&stamp) {
            return Ok(false);
        }
        let mut failed = self.0.failed.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = NodeIdentity::load(&files.dir, &files.node, files.role)
            .and_then(|identity| Loaded::new(&identity, Some(stamp.clone())));
        match loaded {
            Ok(loaded) => {
                let info = loaded.info.clone();
                *self.0.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                *failed = None;
                tracing::info!(
                    node = %files.node,
                    serial = %info.serial,
                    key_sha256 = %info.key_sha256,
                    not_after_ms = super::millis(info.not_after),
                    "certificate reloaded: new handshakes use it"
                );
                Ok(true)
            }
            Err(err) => {
                if failed.as_ref() != Some(&stamp) {
                    tracing::warn!(
                        node = %files.node,
                        %err,
                        "the certificate files changed but do not load; the previous \
                         certificate stays in use"
                    );
                    *failed = Some(stamp);
                }
                Err(err)
            }
        }
    }

    /// The secret the core's stateless-reset keys derive from: the private key loaded at
    /// start (a renewed key takes over at the next start).
    pub(super) fn reset_secret(&self) -> &[u8] {
        &self.0.reset_secret
    }

    /// A resolver of the node's certificate for a server config.
    pub(super) fn server_resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(self.clone()))
    }

    /// A resolver of the node's certificate for a client config.
    pub(super) fn client_resolver(&self) -> Arc<dyn ResolvesClientCert> {
        Arc::new(Resolver(self.clone()))
    }

    /// A verifier of edges' certificates against the current CA; `enrolling`: a client
    /// may also come without one (to enroll; `accept` refuses it a link).
    pub(super) fn edge_verifier(&self, enrolling: bool) -> Arc<dyn ClientCertVerifier> {
        Arc::new(EdgeVerifier(self.clone(), enrolling))
    }

    /// A verifier of the core's certificate against the current CA.
    pub(super) fn core_verifier(&self) -> Arc<dyn ServerCertVerifier> {
        Arc::new(CoreVerifier(self.clone()))
    }

    fn current(&self) -> Arc<Loaded> {
        self.0
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current credentials, reloaded first if their files changed.
    fn fresh(&self) -> Arc<Loaded> {
        // A failure is logged by `refresh`; the handshake goes on with what is loaded.
        let _ = self.refresh();
        self.current()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Credentials")
            .field("certificate", &self.certificate())
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl Loaded {
    fn new(identity: &NodeIdentity, stamp: Option<Stamp>) -> Result<Loaded, TlsError> {
        let provider = provider();
        let key = CertifiedKey::from_der(identity.chain().to_vec(), identity.key(), &provider)
            .map_err(config_error)?;
        let mut with_ca = identity.chain().to_vec();
        with_ca.push(identity.ca_cert().clone());
        let key_with_ca = CertifiedKey::new(with_ca, key.key.clone());
        let edges = WebPkiClientVerifier::builder_with_provider(identity.roots(), provider.clone())
            .build()
            .map_err(config_error)?;
        let core = WebPkiServerVerifier::builder_with_provider(identity.roots(), provider)
            .build()
            .map_err(config_error)?;
        let first = identity
            .chain()
            .first()
            .ok_or(TlsError::NoPeerCertificate)?;
        let info = CertificateInfo::read(first).map_err(|reason| TlsError::Invalid {
            path: PathBuf::from(format!("{}.pem", identity.name())),
            reason,
        })?;
        Ok(Loaded {
            key: Arc::new(key),
            key_with_ca: Arc::new(key_with_ca),
            edges,
            core,
            info,
            stamp,
        })
    }
}

impl Files {
    fn stamp(&self) -> Stamp {
        let paths = [
            cert_file(&self.dir, &self.node),
            key_file(&self.dir, &self.node),
            self.dir.join(CA_CERT_FILE),
        ];
        Stamp(
            paths
                .iter()
                .map(|path| {
                    let meta = std::fs::metadata(path).ok()?;
                    #[cfg(unix)]
                    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
                    #[cfg(not(unix))]
                    let inode = 0;
                    Some((meta.len(), meta.modified().ok(), inode))
                })
                .collect(),
        )
    }
}

/// The node's own certificate, for rustls, as either side of a handshake.
#[derive(Debug)]
struct Resolver(Credentials);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Only to a client that offers nothing but enrollment: a link's handshake stays
        // as small as it was.
        let enrolling = hello.alpn().is_some_and(|offered| {
            let offered: Vec<&[u8]> = offered.collect();
            offered == [super::ENROLL_ALPN]
        });
        let loaded = self.0.fresh();
        Some(if enrolling {
            loaded.key_with_ca.clone()
        } else {
            loaded.key.clone()
        })
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.fresh().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The core's check of an edge's certificate: the webpki verifier of the current CA.
/// A certificate, when one is sent, is always checked; whether one must be sent is the
/// flag (false only where edges enroll).
#[derive(Debug)]
struct EdgeVerifier(Credentials, bool);

impl ClientCertVerifier for EdgeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.1
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints would borrow from a CA that may be replaced; they are optional, and
        // an edge holds one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .edges
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .edges
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .edges
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().edges.supported_verify_schemes()
    }
}

/// An edge's check of the core's certificate: the webpki verifier of the current CA.
#[derive(Debug)]
struct CoreVerifier(Credentials);

impl ServerCertVerifier for CoreVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.fresh().core.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .core
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .core
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().core.supported_verify_schemes()
    }
}
