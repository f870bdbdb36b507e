//! Joining the fleet with a code: HQ's operator makes a one-time (or batch), expiring
//! enrollment code; an edge's operator gives the edge HQ's address and the code; the edge
//! makes its own key (which never leaves it), and HQ issues its certificate and admits
//! it at run time.
//!
//! - **The code**: `tether1-<id>-<secret>-<pin>`: an 8-hex-digit id, 128 random bits, and
//!   the SHA-256 of the mission CA's certificate. HQ keeps only the secret's SHA-256, in
//!   the store's table `_enrollments` with its uses, expiry and the edges it enrolled.
//! - **The exchange**: the edge dials HQ's link port with ALPN [`tls::ENROLL_ALPN`] and no
//!   certificate. HQ serves its certificate followed by the CA's; the edge goes on only
//!   if that CA is the one the code pins and HQ's certificate chains to it and names HQ
//!   ([`tls::enroll_client_config`]). Then one request (code, name, public key) and one
//!   answer (certificate and CA, or the reason for a refusal), each at most
//!   [`MAX_MESSAGE`] bytes, within [`EXCHANGE_TIMEOUT`].
//! - **What a code admits**: a code made for names admits only those; a code without
//!   names admits only names HQ does not know yet, so that nobody holding a code can
//!   take over an existing edge's name. Each enrollment uses one of the code's uses; a
//!   used, expired, revoked or wrong code admits nothing and says why. Every enrollment
//!   and refusal is logged; enrollments are listed with the code.
//!
//! IO: the store (through [`Edges`]), QUIC.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Edges, EdgesError};
use crate::config::FirstRun;
use crate::entry::NodeName;
use crate::log::{TableName, Txn};
use crate::tls::{self, Ca, NodeIdentity, millis};

/// The store table of enrollment codes: one document per code id.
pub const ENROLLMENTS_TABLE: &str = "_enrollments";

/// Largest request or answer of the exchange.
pub const MAX_MESSAGE: usize = 16 << 10;

/// Longest the exchange may take, either side.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest HQ waits for the request once the connection is up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest HQ waits, after its answer, for the edge to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Longest a code may live.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most edges one code may enroll.
pub const MAX_USES: u32 = 10_000;

/// An enrollment code, as people pass it on.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    /// Which code (8 hex digits).
    pub id: String,
    secret: [u8; 16],
    /// SHA-256 of the mission CA's certificate.
    pub pin: [u8; 32],
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tether1-{}-{}-{}",
            self.id,
            hex(&self.secret),
            hex(&self.pin)
        )
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        write!(f, "Code({})", self.id)
    }
}

impl FromStr for Code {
    type Err = String;

    fn from_str(text: &str) -> Result<Code, String> {
        let bad = || {
            "not an enrollment code: expected tether1-<8 hex>-<32 hex>-<64 hex>, as HQ's \
             `core-node enroll create` prints it"
                .to_owned()
        };
        let mut parts = text.trim().split('-');
        let (Some("tether1"), Some(id), Some(secret), Some(pin), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Code {
            id: id.to_ascii_lowercase(),
            secret: unhex(secret).ok_or_else(bad)?,
            pin: unhex(pin).ok_or_else(bad)?,
        })
    }
}

/// A code as HQ keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeDoc {
    secret_sha256: String,
    uses: u32,
    created_ms: u64,
    expires_ms: u64,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    enrolled: Vec<EnrolledDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolledDoc {
    name: String,
    at_ms: u64,
    serial: String,
}

/// A code as HQ shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeStatus {
    /// Which code.
    pub id: String,
    /// `active`, `used` (all its uses), `expired` or `revoked`.
    pub state: &'static str,
    /// How many edges it may enroll in all.
    pub uses: u32,
    /// The names it is for (empty: any name HQ does not know yet).
    pub names: Vec<String>,
    /// When it was made.
    pub created: SystemTime,
    /// When it expires.
    pub expires: SystemTime,
    /// When an operator revoked it.
    pub revoked: Option<SystemTime>,
    /// The edges it enrolled: name, when, certificate serial.
    pub enrolled: Vec<(String, SystemTime, String)>,
}

/// Why an enrollment was refused, as the edge is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn table() -> TableName {
    TableName::new(ENROLLMENTS_TABLE).unwrap_or_else(|_| unreachable!("a valid constant name"))
}

impl CodeDoc {
    fn status(&self, id: &str, now: SystemTime) -> CodeStatus {
        let state = if self.revoked_ms.is_some() {
            "revoked"
        } else if self.enrolled.len() >= self.uses as usize {
            "used"
        } else if time(self.expires_ms) <= now {
            "expired"
        } else {
            "active"
        };
        CodeStatus {
            id: id.to_owned(),
            state,
            uses: self.uses,
            names: self.names.clone(),
            created: time(self.created_ms),
            expires: time(self.expires_ms),
            revoked: self.revoked_ms.map(time),
            enrolled: self
                .enrolled
                .iter()
                .map(|e| (e.name.clone(), time(e.at_ms), e.serial.clone()))
                .collect(),
        }
    }
}

impl Edges {
    /// Takes enrollments from now on, with the mission CA of this pin ([`Ca::pin`]).
    pub fn enable_enrollment(&self, pin: [u8; 32]) {
        let _ = self.0.enrolling.set(pin);
    }

    /// Whether this core takes enrollments (it holds the CA's key).
    pub fn enrolling(&self) -> bool {
        self.0.enrolling.get().is_some()
    }

    /// Makes a code that enrolls up to `uses` edges within `lifetime`; with `names`, only
    /// those. The code is shown once: HQ keeps only its secret's hash.
    pub async fn create_code(
        &self,
        uses: u32,
        lifetime: Duration,
        names: Vec<NodeName>,
    ) -> Result<(Code, CodeStatus), EdgesError> {
        let Some(&pin) = self.0.enrolling.get() else {
            return Err(EdgesError::Enrollment(
                "this core takes no enrollments: its certs_dir has no ca.key (the CA's key), \
                 so it cannot issue certificates; issue them with `core-node certs issue` \
                 where the CA is"
                    .into(),
            ));
        };
        let store = self.store()?;
        let mut random = [0u8; 20];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| EdgesError::Enrollment("no randomness for a code; try again".into()))?;
        let (id, secret) = random.split_at(4);
        let code = Code {
            id: hex(id),
            secret: secret.try_into().unwrap_or_default(),
            pin,
        };
        let now = SystemTime::now();
        let doc = CodeDoc {
            secret_sha256: hex(&sha256(&code.secret)),
            uses: uses.clamp(1, MAX_USES),
            created_ms: millis(now),
            expires_ms: millis(now + lifetime.min(MAX_LIFETIME)),
            names: names.iter().map(|n| n.to_string()).collect(),
            enrolled: Vec::new(),
            revoked_ms: None,
        };
        let _changing = self.0.changing.lock().await;
        if store.doc(&table(), &code.id)?.is_some() {
            return Err(EdgesError::Enrollment(
                "a code of this id exists already (one chance in 4 billion): try again".into(),
            ));
        }
        let mut txn = Txn::new();
        txn.put(
            &table(),
            &code.id,
            serde_json::to_value(&doc).unwrap_or_default(),
        );
        store.commit(txn).await?;
        tracing::info!(code = %code.id, uses = doc.uses, names = ?doc.names, expires_ms = doc.expires_ms, "enrollment code created");
        Ok((code.clone(), doc.status(&code.id, now)))
    }

    /// Every code, newest first.
    pub fn codes(&self) -> Result<Vec<CodeStatus>, EdgesError> {
        let now = SystemTime::now();
        let mut codes: Vec<CodeStatus> = self
            .store()?
            .docs(&table())?
            .into_iter()
            .filter_map(|(id, value)| {
                let doc: CodeDoc = serde_json::from_value(value).ok()?;
                Some(doc.status(&id, now))
            })
            .collect();
        codes.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(codes)
    }

    /// Revokes code `id`: it enrolls no one from now on (those it enrolled stay).
    pub async fn revoke_code(&self, id: &str) -> Result<CodeStatus, EdgesError> {
        let store = self.store()?;
        let _changing = self.0.changing.lock().await;
        let mut doc = self.code_doc(id)?;
        let now = SystemTime::now();
        doc.revoked_ms.get_or_insert(millis(now));
        let mut txn = Txn::new();
        txn.put(&table(), id, serde_json::to_value(&doc).unwrap_or_default());
        store.commit(txn).await?;
        tracing::warn!(code = %id, "enrollment code revoked by an operator");
        Ok(doc.status(id, now))
    }

    fn code_doc(&self, id: &str) -> Result<CodeDoc, EdgesError> {
        let unknown = || EdgesError::UnknownCode(id.to_owned());
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        let value = self.store()?.doc(&table(), id)?.ok_or_else(unknown)?;
        serde_json::from_value(value).map_err(|e| EdgesError::Enrollment(e.to_string()))
    }

    fn store(&self) -> Result<&crate::log::Store, EdgesError> {
        self.0
            .store
            .as_ref()
            .ok_or_else(|| EdgesError::Enrollment("this core keeps no store".into()))
    }

    /// Spends one use of `code` on `name` and admits `name` with the certificate just
    /// issued (`issued`, recorded so that a revocation covers it before it is ever used),
    /// or refuses with the reason and changes nothing.
    async fn redeem(
        &self,
        code: &Code,
        name: &NodeName,
        issued: &tls::CertificateInfo,
        own_pin: [u8; 32],
    ) -> Result<(), Refused> {
        let refuse = |why: &str| Err(Refused(why.to_owned()));
        if code.pin != own_pin {
            return refuse("the code is for another mission's CA");
        }
        let store = self.store().map_err(|e| Refused(e.to_string()))?;
        let _changing = self.0.changing.lock().await;
        let Ok(mut doc) = self.code_doc(&code.id) else {
            return refuse("no such enrollment code at this core");
        };
        if !same(&doc.secret_sha256, &hex(&sha256(&code.secret))) {
            return refuse("no such enrollment code at this core");
        }
        let now = SystemTime::now();
        match doc.status(&code.id, now).state {
            "revoked" => return refuse("the enrollment code was revoked by HQ's operator"),
            "used" => return refuse("the enrollment code is used up: ask HQ for a new one"),
            "expired" => return refuse("the enrollment code has expired: ask HQ for a new one"),
            _ => {}
        }
        if store.node() == name {
            return refuse("that is the core's own name");
        }
        if doc.names.is_empty() {
            if self.knows(name) {
                return Err(Refused(format!(
                    "HQ already knows an edge named {name}: a code for any name enrolls only \
                     new names (HQ's operator can make a code for {name})"
                )));
            }
        } else if !doc.names.iter().any(|n| n == name.as_str()) {
            return Err(Refused(format!(
                "the code is for {}, not {name}",
                doc.names.join(", ")
            )));
        }
        if doc.enrolled.iter().any(|e| e.name == name.as_str()) {
            return Err(Refused(format!(
                "this code enrolled {name} already: a second key for the same name needs a \
                 new code"
            )));
        }
        doc.enrolled.push(EnrolledDoc {
            name: name.to_string(),
            at_ms: millis(now),
            serial: issued.serial.clone(),
        });
        let mut edge = self.doc(name);
        edge.listed = (!self.0.base.allows(name)).then_some(true);
        edge.forgotten_ms = None;
        edge.record(issued, now);
        // One transaction: the use is spent exactly when the edge is admitted.
        let mut txn = Txn::new();
        txn.put(
            &table(),
            &code.id,
            serde_json::to_value(&doc).unwrap_or_default(),
        );
        txn.put(
            &super::table(),
            name.as_str(),
            serde_json::to_value(&edge).unwrap_or_default(),
        );
        store
            .commit(txn)
            .await
            .map_err(|e| Refused(format!("HQ could not record the enrollment: {e}")))?;
        self.write_state(|state| {
            state.docs.insert(name.clone(), edge);
        });
        Ok(())
    }
}

/// What an enrolling edge sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    /// The code; none to renew (the edge then shows its current certificate).
    #[serde(default)]
    code: Option<String>,
    name: String,
    /// Its public key: an uncompressed P-256 point, hex.
    public_key: String,
}

/// What HQ answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Answer {
    Enrolled { certificate: String, ca: String },
    Refused { reason: String },
}

/// HQ's side of one enrollment connection ([`tls::Accepted::Enroll`]): reads the
/// request, answers, and logs what happened. Never fails the caller: a bad request is
/// answered (when it can be) and logged.
pub async fn serve(connection: quinn::Connection, edges: &Edges, ca: &Ca) {
    let peer = connection.remote_address();
    let exchange = async {
        let request = async {
            let (send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
            let bytes = recv
                .read_to_end(MAX_MESSAGE)
                .await
                .map_err(|e| format!("a bad request: {e}"))?;
            Ok::<_, String>((send, bytes))
        };
        let (mut send, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .map_err(|_| format!("no request within {REQUEST_TIMEOUT:?}"))??;
        let presented = tls::peer_name(&connection)
            .ok()
            .zip(tls::peer_certificate(&connection).ok());
        let answer = match answer(&bytes, presented, edges, ca).await {
            Ok((name, serial, answer, renewed)) => {
                if renewed {
                    tracing::info!(%peer, edge = %name, %serial, "certificate renewed over the link");
                } else {
                    tracing::info!(%peer, edge = %name, %serial, "edge enrolled: admitted, its certificate issued");
                }
                answer
            }
            Err(Refused(reason)) => {
                tracing::warn!(%peer, %reason, "enrollment refused");
                Answer::Refused { reason }
            }
        };
        let text = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
        send.write_all(&text).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        // The edge closes once it has read the answer; the answer is in flight until then.
        let _ = tokio::time::timeout(CLOSE_WAIT, connection.closed()).await;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%peer, %err, "enrollment: the exchange failed"),
        Err(_) => tracing::warn!(%peer, "enrollment: no request within {EXCHANGE_TIMEOUT:?}"),
    }
    connection.close(0u32.into(), b"done");
}

/// An enrolling edge's request, as HQ reads it: the code (none: a renewal), the name,
/// the public key.
pub fn read_request(bytes: &[u8]) -> Result<(Option<Code>, NodeName, Vec<u8>), Refused> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Refused(format!("a request over {MAX_MESSAGE} bytes")));
    }
    let request: Request = serde_json::from_slice(bytes)
        .map_err(|e| Refused(format!("the request does not read: {e}")))?;
    let code = match &request.code {
        Some(code) => Some(code.parse::<Code>().map_err(Refused)?),
        None => None,
    };
    let name = NodeName::new(&request.name)
        .map_err(|e| Refused(format!("{:?} is not a node name: {e}", request.name)))?;
    let point = unhex_vec(&request.public_key)
        .ok_or_else(|| Refused("the public key is not hex".to_owned()))?;
    Ok((code, name, point))
}

/// HQ's answer, as the edge reads it: `Ok(Ok((certificate, ca)))` (PEM), `Ok(Err(..))`
/// HQ's reason for a refusal, `Err` an answer that does not read.
pub fn read_answer(bytes: &[u8]) -> Result<Result<(String, String), String>, String> {
    match serde_json::from_slice::<Answer>(bytes).map_err(|e| format!("a bad answer: {e}"))? {
        Answer::Enrolled { certificate, ca } => Ok(Ok((certificate, ca))),
        Answer::Refused { reason } => Ok(Err(reason)),
    }
}

async fn answer(
    bytes: &[u8],
    presented: Option<(NodeName, tls::CertificateInfo)>,
    edges: &Edges,
    ca: &Ca,
) -> Result<(NodeName, String, Answer, bool), Refused> {
    let (code, name, point) = read_request(bytes)?;
    // Issued first (it checks the key), kept only if the code (or the certificate it
    // renews) is good.
    let issued = ca
        .issue_for_key(&name, &point)
        .map_err(|e| Refused(format!("no certificate for this key: {e}")))?;
    let issued_info = tls::certificate_info_of_pem(&issued)
        .ok_or_else(|| Refused("HQ issued a certificate it cannot read".to_owned()))?;
    let serial = issued_info.serial.clone();
    match (code, presented) {
        (Some(code), _) => edges.redeem(&code, &name, &issued_info, ca.pin()).await?,
        // A renewal: the edge shows its certificate (the handshake checked it against
        // the CA), which must be its name's and still admitted.
        (None, Some((presented, certificate))) if presented == name => {
            tls::Admit::admit(edges, &name, &certificate).map_err(|refusal| {
                Refused(match refusal {
                    tls::Refusal::Revoked { serial } => {
                        format!("the certificate of {name} (serial {serial}) is revoked")
                    }
                    tls::Refusal::NotAllowed => format!("{name} is not admitted at HQ"),
                })
            })?;
            if !certificate.renewal_due(SystemTime::now()) {
                return Err(Refused(format!(
                    "the certificate of {name} is not due for renewal (under 1/{} of its \
                     life left)",
                    tls::RENEW_WITHIN
                )));
            }
            edges
                .record_issued(&name, &issued_info)
                .await
                .map_err(|e| Refused(format!("HQ could not record the renewal: {e}")))?;
            let answer = Answer::Enrolled {
                certificate: issued,
                ca: ca.cert_pem().to_owned(),
            };
            return Ok((name, serial, answer, true));
        }
        (None, Some((presented, _))) => {
            return Err(Refused(format!(
                "a certificate of {presented} cannot renew {name}'s"
            )));
        }
        (None, None) => {
            return Err(Refused(
                "no code and no certificate: enroll with a code from HQ".to_owned(),
            ));
        }
    }
    let answer = Answer::Enrolled {
        certificate: issued,
        ca: ca.cert_pem().to_owned(),
    };
    Ok((name, serial, answer, false))
}

/// Why an edge could not enroll.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// HQ refused, with its reason.
    #[error("HQ refused the enrollment: {0}")]
    Refused(String),
    /// HQ could not be reached, or was not the mission's.
    #[error("cannot enroll with HQ at {addr}: {reason}")]
    Unreachable {
        /// Where it was dialed.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The files could not be written or do not load.
    #[error(transparent)]
    Files(#[from] tls::TlsError),
}

/// Whether `name`'s certificate and key are both in `certs_dir`: an edge without them
/// has not joined the fleet yet (its page offers the first-run setup).
pub fn holds_certificate(certs_dir: &Path, name: &NodeName) -> bool {
    certs_dir.join(format!("{name}.pem")).exists() && certs_dir.join(format!("{name}.key")).exists()
}

/// The first-run setup's enrollment: checks the operator's `answers`, records them
/// ([`FirstRun`], so that the edge dials the HQ it enrolled with from now on), then
/// enrolls with `code`. If the enrollment fails, the record is removed again.
pub async fn enroll_first_run(
    certs_dir: &Path,
    answers: &FirstRun,
    code: &Code,
) -> Result<NodeIdentity, FirstRunError> {
    answers.check().map_err(FirstRunError::Answers)?;
    answers
        .write(certs_dir)
        .map_err(|source| FirstRunError::Record {
            path: FirstRun::path(certs_dir),
            source,
        })?;
    let enrolled = enroll(
        &answers.core,
        &answers.core_name,
        code,
        &answers.name,
        certs_dir,
    )
    .await;
    if enrolled.is_err()
        && let Err(e) = FirstRun::remove(certs_dir)
    {
        tracing::warn!(path = %FirstRun::path(certs_dir).display(), error = %e, "cannot remove the first-run record of a failed enrollment");
    }
    Ok(enrolled?)
}

/// Why the first-run setup's enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum FirstRunError {
    /// An answer is not valid.
    #[error("{0}")]
    Answers(String),
    /// The answers could not be recorded.
    #[error("cannot record the answers in {}: {source}", path.display())]
    Record {
        /// The record's file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The enrollment failed.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
}

/// The edge's side: makes a key, enrolls `name` with HQ (`core`, `host:port`, whose
/// certificate must name `core_name`) using `code`, and writes the certificate, the key
/// and the CA into `certs_dir`. Returns the identity, loaded from those files.
pub async fn enroll(
    core: &str,
    core_name: &NodeName,
    code: &Code,
    name: &NodeName,
    certs_dir: &Path,
) -> Result<NodeIdentity, EnrollError> {
    let unreachable = |reason: String| EnrollError::Unreachable {
        addr: core.to_owned(),
        reason,
    };
    // Checked before HQ spends the code: files that could not be written after.
    for path in [
        certs_dir.join(format!("{name}.pem")),
        certs_dir.join(format!("{name}.key")),
    ] {
        if path.exists() {
            return Err(tls::TlsError::Exists { path }.into());
        }
    }
    let ca_path = certs_dir.join(tls::CA_CERT_FILE);
    if let Ok(held) = std::fs::read_to_string(&ca_path)
        && tls::sha256_of_pem(&held) != Some(code.pin)
    {
        return Err(tls::TlsError::Invalid {
            path: ca_path,
            reason: "holds another CA than the one this code is for: move it away".to_owned(),
        }
        .into());
    }
    let (key_pem, point) = tls::enrollment_key()?;
    let transport = Arc::new(tls::transport_config(tls::Timeouts::default()));
    let config = tls::enroll_client_config(code.pin, transport)?;
    let answer = exchange(core, core_name, config, Some(code), name, &point)
        .await
        .map_err(unreachable)?;
    match answer {
        Err(reason) => Err(EnrollError::Refused(reason)),
        Ok((certificate, ca)) => {
            if tls::sha256_of_pem(&ca) != Some(code.pin) {
                return Err(unreachable(
                    "HQ answered with another CA than the code names".to_owned(),
                ));
            }
            Ok(tls::save_enrolled(
                certs_dir,
                name,
                &certificate,
                &key_pem,
                &ca,
            )?)
        }
    }
}

/// The edge's renewal: a new key, and a certificate for it from HQ (`core`), asked for
/// with the current certificate (`credentials`, whose files are in `certs_dir`); the new
/// files replace the old, and `credentials` load them (new handshakes use them).
pub async fn renew(
    core: &str,
    core_name: &NodeName,
    credentials: &tls::Credentials,
    name: &NodeName,
    certs_dir: &Path,
) -> Result<tls::CertificateInfo, EnrollError> {
    let unreachable = |reason: String| EnrollError::Unreachable {
        addr: core.to_owned(),
        reason,
    };
    let (key_pem, point) = tls::enrollment_key()?;
    let transport = Arc::new(tls::transport_config(tls::Timeouts::default()));
    let config = tls::renew_client_config(credentials, transport)?;
    let answer = exchange(core, core_name, config, None, name, &point)
        .await
        .map_err(unreachable)?;
    let (certificate, _ca) = answer.map_err(EnrollError::Refused)?;
    tls::replace_identity(
        certs_dir,
        name,
        crate::role::Role::Edge,
        &certificate,
        &key_pem,
    )?;
    // A failure is logged by `refresh`; the files loaded above, so it should not fail.
    let _ = credentials.refresh();
    Ok(credentials.certificate())
}

/// One request and its answer over a new connection to HQ at `core` (`host:port`)
/// made with `config`.
async fn exchange(
    core: &str,
    core_name: &NodeName,
    config: quinn::ClientConfig,
    code: Option<&Code>,
    name: &NodeName,
    point: &[u8],
) -> Result<Result<(String, String), String>, String> {
    let addr = crate::link::resolve(core)
        .await
        .map_err(|e| format!("cannot resolve it: {e}"))?;
    let bind = crate::link::edge_bind(Some(addr));
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(config);
    let talk = async {
        let connection = endpoint
            .connect(addr, core_name.as_str())
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| tls::explain(&e))?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        let request = Request {
            code: code.map(Code::to_string),
            name: name.to_string(),
            public_key: hex(point),
        };
        let text = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        send.write_all(&text).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let bytes = recv
            .read_to_end(MAX_MESSAGE)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        connection.close(0u32.into(), b"done");
        read_answer(&bytes)
    };
    let answer = tokio::time::timeout(EXCHANGE_TIMEOUT, talk)
        .await
        .map_err(|_| format!("no answer within {EXCHANGE_TIMEOUT:?}"))?;
    endpoint.wait_idle().await;
    answer
}

use tls::{hex, same_secret as same, sha256};

fn unhex_vec(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 1024 {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    unhex_vec(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_active_until_used_expired_or_revoked() {
        let now = SystemTime::now();
        let mut doc = CodeDoc {
            secret_sha256: String::new(),
            uses: 2,
            created_ms: millis(now),
            expires_ms: millis(now + Duration::from_secs(60)),
            names: Vec::new(),
            enrolled: Vec::new(),
            revoked_ms: None,
        };
        assert_eq!(doc.status("id", now).state, "active");
        assert_eq!(
            doc.status("id", now + Duration::from_secs(61)).state,
            "expired"
        );
        doc.enrolled = vec![
            EnrolledDoc {
                name: "a".into(),
                at_ms: 0,
                serial: String::new(),
            };
            2
        ];
        assert_eq!(doc.status("id", now).state, "used");
        doc.enrolled.pop();
        doc.revoked_ms = Some(millis(now));
        assert_eq!(doc.status("id", now).state, "revoked");
    }

    #[test]
    fn a_code_reads_back_as_written_and_nothing_else_reads() {
        let code = Code {
            id: "0a1b2c3d".into(),
            secret: [7; 16],
            pin: [9; 32],
        };
        let text = code.to_string();
        assert_eq!(text.parse::<Code>(), Ok(code.clone()));
        assert!(
            !format!("{code:?}").contains("0707"),
            "the secret stays out of logs"
        );
        for bad in [
            "",
            "tether1",
            &text.replace("tether1", "tether2"),
            &text[..text.len() - 1],
            &format!("{text}-x"),
            &text.replace("0a1b2c3d", "0a1b2c3"),
            &text.replace("0a1b2c3d", "0a1b2c3z"),
        ] {
            assert!(bad.parse::<Code>().is_err(), "{bad:?}");
        }
    }
}
