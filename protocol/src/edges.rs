//! The core's edges at run time: which it admits, the certificates each presented, which
//! of those are revoked, and forgetting an edge.
//!
//! - **The list.** The config's `link.edges` (or `allow_any_edge`) is the starting point;
//!   an operator adds and removes edges while the core runs ([`Edges::add`],
//!   [`Edges::remove`]). Only a decision that differs from the config is stored, so a
//!   name the operator left alone follows the config file across restarts, and an
//!   operator's decision outlives them.
//! - **Certificates.** Every certificate an edge presents is recorded at its handshake
//!   (serial, SHA-256 of the public key, expiry): a captured device can be revoked while
//!   it is offline, even after a restart.
//! - **Revocation.** [`Edges::revoke`] marks every certificate the edge has presented as
//!   revoked and closes its connection at once ([`CloseCode::Revoked`]). From then on a
//!   handshake with a revoked key *or* serial is refused ([`Admit`], checked by
//!   `tls::accept` after each handshake). A new certificate for the same name, with a new
//!   key, is admitted again; a renewal that kept the key is not (the key is what was
//!   captured).
//! - **Forgetting.** [`Edges::forget`] removes the edge from the list, closes its
//!   connection and tells the store to stop keeping entries for it
//!   ([`Store::forget_peer`]); retention then releases them. If the edge ever returns,
//!   what was released before it received it is recorded as a gap in `_gaps`.
//! - **Allowances.** An edge that stays away past its allowance (`link.allowance_age`,
//!   `link.allowance_bytes`) is *released* the same way, but stays listed: the core keeps
//!   nothing more for it, and when it returns it gets the gap ([`allowance`]).
//!
//! Where it lives: one JSON document per edge in the store's table `_edges` (written
//! with the store's durable commit, read once at start into memory). The store, not a
//! file beside it, because it is the node's one durable, atomic, backed-up state, it is
//! already open (and locked) when the node runs, and the API and page read from it.
//!
//! IO: the store (through its handle).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::entry::NodeName;
use crate::link::Links;
use crate::log::{ReadError, Store, TableName, Txn, WriteError};
use crate::tls::{Admit, Allowed, CertificateInfo, CloseCode, Refusal, millis};

pub mod allowance;
pub mod enrollment;
pub mod fleet;

/// The store table of the core's edges: one document per edge name.
pub const EDGES_TABLE: &str = "_edges";

/// How often a core with a backbone looks for its edges' links going up or down.
const LINKED_EVERY: Duration = Duration::from_secs(1);

/// Most certificates kept per edge that are not revoked (revoked ones are all kept:
/// dropping one would admit it again). Each is about 200 bytes.
const MAX_CERTIFICATES: usize = 8;

/// The core's edges (see the module doc). Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Edges(Arc<Inner>);

struct Inner {
    /// Where decisions and certificates are kept; `None`: in memory only (tests).
    store: Option<Store>,
    /// The core's links, to close an edge's connection.
    links: Links,
    /// The config's list.
    base: Allowed,
    state: RwLock<State>,
    /// One change at a time (each reads, changes and writes one document).
    changing: tokio::sync::Mutex<()>,
    /// The mission CA's pin, once the core takes enrollments ([`enrollment`]).
    enrolling: std::sync::OnceLock<[u8; 32]>,
    /// When this core started: its own downtime is not an edge's absence
    /// ([`allowance::AFTER_START`]).
    started: SystemTime,
    /// The HQ's backbone, when this core shares one: decisions go to the other cores.
    backbone: std::sync::OnceLock<crate::bridge::Backbone>,
}

#[derive(Debug, Default)]
struct State {
    docs: BTreeMap<NodeName, EdgeDoc>,
    /// Keys and serials of every revoked certificate.
    revoked: HashSet<String>,
}

/// One edge's stored document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeDoc {
    /// An operator's decision that differs from the config: `true` added, `false`
    /// removed; absent: as the config says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listed: Option<bool>,
    /// When an operator last decided `listed` (at this core or another of the HQ's):
    /// the newest decision wins when cores merge their documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listed_ms: Option<u64>,
    /// When an operator forgot it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    forgotten_ms: Option<u64>,
    /// The certificates it presented, oldest first.
    #[serde(default)]
    certificates: Vec<CertificateDoc>,
    /// When the core last knew it connected (written at most every
    /// [`allowance::SEEN_EVERY`] while it is, and once after it leaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_seen_ms: Option<u64>,
    /// When and why it was released for staying away past its allowance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    released: Option<ReleasedDoc>,
    /// The last link event of this edge that the HQ's cores know (with a backbone): which
    /// core it linked to or left, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    linked: Option<LinkedDoc>,
}

/// An edge's link to a core of the HQ went up or down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkedDoc {
    core: NodeName,
    up: bool,
    /// When that link came up (0: not known).
    since_ms: u64,
    /// When it went up or down.
    at_ms: u64,
}

impl LinkedDoc {
    /// Which of two events stands: the link that came up last, and of one link, its last
    /// event. So a core that notices late that the edge left does not hide its link to
    /// another core, and a core that died linked does not outlive the edge's later links.
    fn order(&self) -> (u64, &NodeName, u64, bool) {
        (self.since_ms, &self.core, self.at_ms, self.up)
    }
}

impl EdgeDoc {
    /// Takes in what another core of the HQ decided about this edge (the backbone):
    /// certificates and revocations add up, the newest listing decision wins, and the
    /// release of the latest news stands. Returns whether anything changed.
    fn merge(&mut self, theirs: EdgeDoc) -> bool {
        let before = self.clone();
        // Equal times: the removal wins, so that every core ends with the same decision.
        let newer = (theirs.listed_ms.unwrap_or(0), theirs.listed != Some(true))
            > (self.listed_ms.unwrap_or(0), self.listed != Some(true));
        if newer {
            self.listed = theirs.listed;
            self.listed_ms = theirs.listed_ms;
            self.forgotten_ms = theirs.forgotten_ms;
        }
        let news = |d: &EdgeDoc| {
            d.last_seen_ms
                .unwrap_or(0)
                .max(d.released.as_ref().map_or(0, |r| r.at_ms))
        };
        if news(&theirs) > news(self) {
            self.released = theirs.released.clone();
        }
        self.last_seen_ms = self.last_seen_ms.max(theirs.last_seen_ms);
        if theirs.linked.as_ref().map(LinkedDoc::order) > self.linked.as_ref().map(LinkedDoc::order)
        {
            self.linked = theirs.linked.clone();
        }
        for cert in theirs.certificates {
            match self
                .certificates
                .iter_mut()
                .find(|c| c.serial == cert.serial && c.key_sha256 == cert.key_sha256)
            {
                Some(mine) => {
                    mine.revoked_ms = match (mine.revoked_ms, cert.revoked_ms) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => self.certificates.push(cert),
            }
        }
        *self != before
    }

    /// Records a certificate issued to this edge (at enrollment or renewal), so that a
    /// revocation covers it before it is ever shown.
    fn record(&mut self, issued: &CertificateInfo, now: SystemTime) {
        let known = self
            .certificates
            .iter()
            .any(|c| c.serial == issued.serial && c.key_sha256 == issued.key_sha256);
        if !known {
            self.certificates.push(CertificateDoc {
                serial: issued.serial.clone(),
                key_sha256: issued.key_sha256.clone(),
                not_after_ms: millis(issued.not_after),
                first_seen_ms: millis(now),
                revoked_ms: None,
            });
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleasedDoc {
    at_ms: u64,
    why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateDoc {
    serial: String,
    key_sha256: String,
    not_after_ms: u64,
    first_seen_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_ms: Option<u64>,
}

/// Why an edge is admitted or not, as far as the list goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Listed in the config (`link.edges`).
    Config,
    /// Any edge is admitted (`link.allow_any_edge`).
    AnyEdge,
    /// Added by an operator.
    Added,
    /// Removed by an operator.
    Removed,
    /// Not in the list (seen or connected once, or forgotten).
    NotListed,
}

/// One edge as the core sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeStatus {
    /// Its name.
    pub name: NodeName,
    /// Whether its name is admitted ([`Listing::Config`], [`Listing::AnyEdge`],
    /// [`Listing::Added`]); a revoked certificate is refused all the same.
    pub listing: Listing,
    /// Whether a link with it is up.
    pub connected: bool,
    /// When an operator forgot it.
    pub forgotten: Option<SystemTime>,
    /// When the core last knew it connected (now, while it is; `None`: not since the
    /// core recorded it).
    pub last_seen: Option<SystemTime>,
    /// When and why the core released it (stopped keeping entries for it) for staying
    /// away past its allowance; cleared when it returns.
    pub released: Option<(SystemTime, String)>,
    /// The certificates it presented, oldest first.
    pub certificates: Vec<EdgeCertificate>,
    /// Another core of the HQ it is linked to now, as far as this core knows (the
    /// backbone's fleet documents).
    pub elsewhere: Option<NodeName>,
}

/// A certificate an edge presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCertificate {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 of its public key, lowercase hex.
    pub key_sha256: String,
    /// When it expires.
    pub not_after: SystemTime,
    /// When the core first saw it.
    pub first_seen: SystemTime,
    /// When it was revoked.
    pub revoked: Option<SystemTime>,
}

/// What forgetting an edge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forgotten {
    /// Whether the store held anything for it (it had connected once).
    pub known: bool,
    /// Entries retention removed right after (kept for this edge, or for no one).
    pub released: u64,
}

/// Why an operator's change to the edges was refused.
#[derive(Debug, thiserror::Error)]
pub enum EdgesError {
    /// The name is the core's own.
    #[error("{0} is this core's own name, not an edge's")]
    OwnName(NodeName),
    /// Revoking an edge that never connected: no certificate is known.
    #[error(
        "edge {0} has presented no certificate to this core, so there is none to revoke; \
         remove it from the list instead (its certificate is then refused by name)"
    )]
    NoCertificate(NodeName),
    /// Nothing is known of this name.
    #[error("no edge {0} is known to this core (not listed, never connected)")]
    Unknown(NodeName),
    /// The store refused the change.
    #[error("the store refused the change: {0}")]
    Write(#[from] WriteError),
    /// The store could not be read.
    #[error("cannot read the store: {0}")]
    Read(#[from] ReadError),
    /// No enrollment code of this id.
    #[error("no enrollment code {0} at this core")]
    UnknownCode(String),
    /// Enrollment cannot be done here now.
    #[error("enrollment: {0}")]
    Enrollment(String),
}

impl Edges {
    /// The core's edges: the config's list `base`, and what the store's `_edges` table
    /// holds (decisions, certificates, revocations). `links` are the core's links, to
    /// close a revoked or removed edge's connection.
    pub fn open(store: Store, links: Links, base: Allowed) -> Result<Edges, ReadError> {
        let table = table();
        let mut docs = BTreeMap::new();
        for (id, value) in store.docs(&table)? {
            let corrupt = |detail: String| ReadError::Corrupt {
                path: store.path().to_path_buf(),
                detail: format!("document {EDGES_TABLE}/{id}: {detail}"),
            };
            let name = NodeName::new(id.clone()).map_err(|e| corrupt(e.to_string()))?;
            let doc: EdgeDoc = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
            docs.insert(name, doc);
        }
        let edges = Edges::with(Some(store), links, base);
        edges.write_state(|state| state.docs = docs);
        Ok(edges)
    }

    /// Edges kept in memory only: the config's list `base`, nothing survives a restart.
    pub fn fixed(base: Allowed) -> Edges {
        Edges::with(None, Links::default(), base)
    }

    fn with(store: Option<Store>, links: Links, base: Allowed) -> Edges {
        Edges(Arc::new(Inner {
            store,
            links,
            base,
            state: RwLock::new(State::default()),
            changing: tokio::sync::Mutex::new(()),
            enrolling: std::sync::OnceLock::new(),
            started: SystemTime::now(),
            backbone: std::sync::OnceLock::new(),
        }))
    }

    /// Shares this core's decisions with the HQ's other cores through `backbone`, and
    /// takes theirs in: every document now, then each as it changes here or there.
    pub fn join(&self, backbone: crate::bridge::Backbone) {
        let mut updates = backbone.fleet_updates();
        for (name, doc) in self.read_state(|s| s.docs.clone()) {
            backbone.share_fleet(&name, serde_json::to_value(&doc).unwrap_or_default());
        }
        if self.0.backbone.set(backbone).is_err() {
            return;
        }
        // Each edge's link here going up or down, for the other cores' fleet tables.
        let edges = self.clone();
        tokio::spawn(async move {
            // Per edge: whether its link here is up, and since when.
            let mut known: BTreeMap<NodeName, (bool, u64)> = BTreeMap::new();
            loop {
                for status in edges.0.links.status() {
                    let before = known.get(&status.peer).copied();
                    if before.map(|(up, _)| up) == Some(status.connected) {
                        continue;
                    }
                    let since = match status.connected {
                        true => millis(status.since),
                        false => before.map_or(0, |(_, since)| since),
                    };
                    known.insert(status.peer.clone(), (status.connected, since));
                    edges
                        .linked_here(&status.peer, status.connected, since)
                        .await;
                }
                tokio::time::sleep(LINKED_EVERY).await;
            }
        });
        let edges = self.clone();
        tokio::spawn(async move {
            while let Some((name, value)) = updates.recv().await {
                match serde_json::from_value::<EdgeDoc>(value) {
                    Ok(doc) => edges.merge(&name, doc).await,
                    Err(e) => {
                        tracing::warn!(edge = %name, error = %e, "backbone: another core's fleet document is refused");
                    }
                }
            }
        });
    }

    /// This core's name (`None`: no store, in tests).
    fn own(&self) -> Option<&NodeName> {
        self.0.store.as_ref().map(|s| s.node())
    }

    /// Records that `name`'s link here, up since `since_ms`, went `up` or down, and
    /// shares it with the HQ's other cores (see [`LinkedDoc::order`] for which event
    /// stands).
    async fn linked_here(&self, name: &NodeName, up: bool, since_ms: u64) {
        let Some(own) = self.own().cloned() else {
            return;
        };
        let _changing = self.0.changing.lock().await;
        let mut doc = self.doc(name);
        let event = LinkedDoc {
            core: own,
            up,
            since_ms,
            at_ms: millis(SystemTime::now()),
        };
        if doc.linked.as_ref().map(LinkedDoc::order) >= Some(event.order()) {
            return;
        }
        doc.linked = Some(event);
        if let Err(err) = self.save(name, doc).await {
            tracing::warn!(edge = %name, %err, "cannot record the edge's link for the other cores");
        }
    }

    /// Takes in another core's document of `name` (see [`EdgeDoc::merge`]); a
    /// revocation or removal there closes the edge's connection here too.
    async fn merge(&self, name: &NodeName, theirs: EdgeDoc) {
        let _changing = self.0.changing.lock().await;
        let mut doc = self.doc(name);
        let revoked = |d: &EdgeDoc| {
            d.certificates
                .iter()
                .filter(|c| c.revoked_ms.is_some())
                .count()
        };
        let revoked_before = revoked(&doc);
        let admitted_before = self.listing(name, &doc).admitted();
        if !doc.merge(theirs) {
            return;
        }
        if let Err(err) = self.store_doc(name, doc.clone()).await {
            tracing::error!(edge = %name, %err, "cannot record another core's decision about an edge");
            return;
        }
        let admitted = self.listing(name, &doc).admitted();
        let newly_revoked = revoked(&doc).saturating_sub(revoked_before);
        tracing::info!(edge = %name, admitted, newly_revoked, "took in another core's decision about an edge");
        // Only a new revocation, or a removal, closes the edge's link here.
        if newly_revoked > 0
            && self.close(
                name,
                CloseCode::Revoked,
                &format!("the certificate of edge {name} is revoked at another core of HQ"),
            )
        {
            tracing::warn!(edge = %name, "edge revoked at another core: its link here is closed");
        } else if admitted_before && !admitted {
            self.close(
                name,
                CloseCode::NotAllowed,
                &format!("edge {name} was removed at another core of HQ"),
            );
        }
    }

    /// Every edge the core knows of (listed, seen, or linked), by name.
    pub fn list(&self) -> Vec<EdgeStatus> {
        let mut names: BTreeSet<NodeName> = self.read_state(|s| s.docs.keys().cloned().collect());
        if let Allowed::List(listed) = &self.0.base {
            names.extend(listed.iter().cloned());
        }
        names.extend(self.0.links.status().into_iter().map(|s| s.peer));
        names.iter().map(|name| self.status(name)).collect()
    }

    /// One edge as the core sees it (an unknown name is shown as not listed).
    pub fn status(&self, name: &NodeName) -> EdgeStatus {
        let doc = self.read_state(|s| s.docs.get(name).cloned().unwrap_or_default());
        let link = self.0.links.get(name).map(|link| link.status());
        let connected = link.as_ref().is_some_and(|l| l.connected);
        let time = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        // Down in this run: it was last seen when its link went down, which the stored
        // time (written now and then) may not know yet.
        let left = link.filter(|l| !l.connected).map(|l| l.since);
        EdgeStatus {
            name: name.clone(),
            listing: self.listing(name, &doc),
            connected,
            forgotten: doc.forgotten_ms.map(time),
            last_seen: if connected {
                Some(SystemTime::now())
            } else {
                doc.last_seen_ms.map(time).max(left)
            },
            released: doc.released.map(|r| (time(r.at_ms), r.why)),
            elsewhere: doc
                .linked
                .filter(|l| l.up && !connected && Some(&l.core) != self.own())
                .map(|l| l.core),
            certificates: doc
                .certificates
                .iter()
                .map(|c| EdgeCertificate {
                    serial: c.serial.clone(),
                    key_sha256: c.key_sha256.clone(),
                    not_after: time(c.not_after_ms),
                    first_seen: time(c.first_seen_ms),
                    revoked: c.revoked_ms.map(time),
                })
                .collect(),
        }
    }

    /// Whether anything is known of `name`: listed, seen, or linked.
    pub fn knows(&self, name: &NodeName) -> bool {
        self.read_state(|s| s.docs.contains_key(name))
            || matches!(&self.0.base, Allowed::List(l) if l.contains(name))
            || self.0.links.get(name).is_some()
    }

    /// Records the certificate `name` presented at a handshake that was admitted, if it
    /// is new. A failure to store it is logged: the edge stays connected, and its next
    /// handshake tries again.
    pub async fn seen(&self, name: &NodeName, certificate: &CertificateInfo) {
        let known = self.read_state(|s| {
            s.docs.get(name).is_some_and(|d| {
                d.certificates.iter().any(|c| {
                    c.key_sha256 == certificate.key_sha256 && c.serial == certificate.serial
                })
            })
        });
        if known {
            return;
        }
        let _changing = self.0.changing.lock().await;
        let mut doc = self.doc(name);
        let now = millis(SystemTime::now());
        doc.certificates.push(CertificateDoc {
            serial: certificate.serial.clone(),
            key_sha256: certificate.key_sha256.clone(),
            not_after_ms: millis(certificate.not_after),
            first_seen_ms: now,
            revoked_ms: None,
        });
        // Keep every revoked certificate and the newest others.
        let live = doc
            .certificates
            .iter()
            .filter(|c| c.revoked_ms.is_none())
            .count();
        let mut drop_oldest = live.saturating_sub(MAX_CERTIFICATES);
        doc.certificates.retain(|c| {
            let dropped = drop_oldest > 0 && c.revoked_ms.is_none();
            drop_oldest -= usize::from(dropped);
            !dropped
        });
        if let Err(err) = self.save(name, doc).await {
            tracing::error!(edge = %name, %err, "cannot record the edge's certificate");
        } else {
            tracing::info!(
                edge = %name,
                serial = %certificate.serial,
                key_sha256 = %certificate.key_sha256,
                "edge presented a new certificate"
            );
        }
    }

    /// Records a certificate HQ issued to `name` (renewal), so that a revocation covers
    /// it before it is ever shown.
    pub(crate) async fn record_issued(
        &self,
        name: &NodeName,
        issued: &CertificateInfo,
    ) -> Result<(), WriteError> {
        let _changing = self.0.changing.lock().await;
        let mut doc = self.doc(name);
        doc.record(issued, SystemTime::now());
        self.save(name, doc).await
    }

    /// Adds `name` to the list: its certificates are admitted again (unless revoked),
    /// and it is no longer forgotten.
    pub async fn add(&self, name: &NodeName) -> Result<EdgeStatus, EdgesError> {
        self.own_name(name)?;
        let _changing = self.0.changing.lock().await;
        let mut doc = self.doc(name);
        doc.listed = (!self.0.base.allows(name)).then_some(true);
        doc.listed_ms = Some(millis(SystemTime::now()));
        doc.forgotten_ms = None;
        self.save(name, doc).await?;
        tracing::info!(edge = %name, "edge added to the list by an operator");
        Ok(self.status(name))
    }

    /// Removes `name` from the list: its connection is closed at once and new
    /// handshakes are refused ([`CloseCode::NotAllowed`]).
    pub async fn remove(&self, name: &NodeName) -> Result<EdgeStatus, EdgesError> {
        self.own_name(name)?;
        if !self.knows(name) {
            return Err(EdgesError::Unknown(name.clone()));
        }
        {
            let _changing = self.0.changing.lock().await;
            let mut doc = self.doc(name);
            doc.listed = self.0.base.allows(name).then_some(false);
            doc.listed_ms = Some(millis(SystemTime::now()));
            self.save(name, doc).await?;
        }
        let closed = self.close(
            name,
            CloseCode::NotAllowed,
            &format!("edge {name} was removed from the core's list of edges by an operator"),
        );
        tracing::warn!(edge = %name, closed, "edge removed from the list by an operator");
        Ok(self.status(name))
    }

    /// Revokes every certificate `name` has presented: its connection is closed at once
    /// with [`CloseCode::Revoked`], and a handshake with any of these keys or serials is
    /// refused from now on.
    pub async fn revoke(&self, name: &NodeName) -> Result<EdgeStatus, EdgesError> {
        self.own_name(name)?;
        let revoked = {
            let _changing = self.0.changing.lock().await;
            let mut doc = self.doc(name);
            if doc.certificates.is_empty() {
                return Err(if self.knows(name) {
                    EdgesError::NoCertificate(name.clone())
                } else {
                    EdgesError::Unknown(name.clone())
                });
            }
            let now = millis(SystemTime::now());
            let mut revoked = Vec::new();
            for c in doc
                .certificates
                .iter_mut()
                .filter(|c| c.revoked_ms.is_none())
            {
                c.revoked_ms = Some(now);
                revoked.push(c.serial.clone());
            }
            self.save(name, doc).await?;
            revoked
        };
        // After the state changed: a handshake admitted before is closed here, or by
        // the link's check once it is registered (`link::serve`).
        let closed = self.close(
            name,
            CloseCode::Revoked,
            &format!(
                "the certificate of edge {name} is revoked by the core's operator; this edge \
                 needs a new certificate and key"
            ),
        );
        tracing::warn!(edge = %name, serials = ?revoked, closed, "edge's certificates revoked by an operator");
        Ok(self.status(name))
    }

    /// Forgets `name`: removes it from the list (closing its connection) and tells the
    /// store to keep nothing more for it, then runs retention, which releases what was
    /// kept. If it returns (added again), what it missed is recorded as a gap.
    pub async fn forget(&self, name: &NodeName) -> Result<Forgotten, EdgesError> {
        self.own_name(name)?;
        if !self.knows(name) {
            return Err(EdgesError::Unknown(name.clone()));
        }
        {
            let _changing = self.0.changing.lock().await;
            let mut doc = self.doc(name);
            doc.listed = self.0.base.allows(name).then_some(false);
            doc.listed_ms = Some(millis(SystemTime::now()));
            doc.forgotten_ms = Some(millis(SystemTime::now()));
            self.save(name, doc).await?;
        }
        self.close(
            name,
            CloseCode::NotAllowed,
            &format!("edge {name} was forgotten by the core's operator"),
        );
        let (known, released) = match &self.0.store {
            Some(store) => {
                let known = store.forget_peer(name).await?;
                (known, store.enforce_retention().await?.removed)
            }
            None => (false, 0),
        };
        tracing::warn!(edge = %name, known, released, "edge forgotten by an operator: the core keeps nothing more for it");
        Ok(Forgotten { known, released })
    }

    fn own_name(&self, name: &NodeName) -> Result<(), EdgesError> {
        match &self.0.store {
            Some(store) if store.node() == name => Err(EdgesError::OwnName(name.clone())),
            _ => Ok(()),
        }
    }

    /// Closes the edge's current connection, if any; returns whether there was one.
    fn close(&self, name: &NodeName, code: CloseCode, reason: &str) -> bool {
        self.0
            .links
            .get(name)
            .is_some_and(|link| link.close(code, reason))
    }

    fn listing(&self, name: &NodeName, doc: &EdgeDoc) -> Listing {
        match (doc.listed, &self.0.base) {
            (Some(true), _) => Listing::Added,
            (Some(false), _) => Listing::Removed,
            (None, Allowed::AnyEdge) => Listing::AnyEdge,
            (None, Allowed::List(l)) if l.contains(name) => Listing::Config,
            (None, Allowed::List(_)) => Listing::NotListed,
        }
    }

    fn doc(&self, name: &NodeName) -> EdgeDoc {
        self.read_state(|s| s.docs.get(name).cloned().unwrap_or_default())
    }

    /// Stores `doc` (when there is a store), makes it the state, and shares it with the
    /// HQ's other cores (when there is a backbone).
    async fn save(&self, name: &NodeName, doc: EdgeDoc) -> Result<(), WriteError> {
        self.store_doc(name, doc.clone()).await?;
        if let Some(backbone) = self.0.backbone.get() {
            backbone.share_fleet(name, serde_json::to_value(&doc).unwrap_or_default());
        }
        Ok(())
    }

    /// Stores `doc` (when there is a store), then makes it the state.
    async fn store_doc(&self, name: &NodeName, doc: EdgeDoc) -> Result<(), WriteError> {
        if let Some(store) = &self.0.store {
            let mut txn = Txn::new();
            // An EdgeDoc always serializes: strings, numbers and options.
            let value = serde_json::to_value(&doc).unwrap_or_default();
            txn.put(&table(), name.as_str(), value);
            store.commit(txn).await?;
        }
        self.write_state(|state| {
            state.docs.insert(name.clone(), doc);
        });
        Ok(())
    }

    fn read_state<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        read(&self.0.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn write_state(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.0.state.write().unwrap_or_else(|p| p.into_inner());
        change(&mut state);
        state.revoked = state
            .docs
            .values()
            .flat_map(|d| &d.certificates)
            .filter(|c| c.revoked_ms.is_some())
            .flat_map(|c| [c.key_sha256.clone(), c.serial.clone()])
            .collect();
    }
}

impl Admit for Edges {
    fn admit(&self, name: &NodeName, certificate: &CertificateInfo) -> Result<(), Refusal> {
        self.read_state(|state| {
            if state.revoked.contains(&certificate.key_sha256)
                || state.revoked.contains(&certificate.serial)
            {
                return Err(Refusal::Revoked {
                    serial: certificate.serial.clone(),
                });
            }
            let doc = state.docs.get(name).cloned().unwrap_or_default();
            match self.listing(name, &doc) {
                Listing::Config | Listing::AnyEdge | Listing::Added => Ok(()),
                Listing::Removed | Listing::NotListed => Err(Refusal::NotAllowed),
            }
        })
    }
}

impl From<Allowed> for Edges {
    fn from(base: Allowed) -> Edges {
        Edges::fixed(base)
    }
}

impl std::fmt::Debug for Edges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edges")
            .field("base", &self.0.base)
            .field("stored", &self.0.store.is_some())
            .finish_non_exhaustive()
    }
}

impl Listing {
    /// `config`, `any-edge`, `added`, `removed` or `not-listed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Listing::Config => "config",
            Listing::AnyEdge => "any-edge",
            Listing::Added => "added",
            Listing::Removed => "removed",
            Listing::NotListed => "not-listed",
        }
    }

    /// Whether the name is admitted.
    pub fn admitted(self) -> bool {
        matches!(self, Listing::Config | Listing::AnyEdge | Listing::Added)
    }
}

fn table() -> TableName {
    TableName::new(EDGES_TABLE).unwrap_or_else(|_| unreachable!("a valid constant name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: &str, revoked_ms: Option<u64>) -> CertificateDoc {
        CertificateDoc {
            serial: serial.into(),
            key_sha256: format!("key-{serial}"),
            not_after_ms: 9,
            first_seen_ms: 1,
            revoked_ms,
        }
    }

    #[test]
    fn cores_merge_an_edges_documents_whatever_the_order() {
        let a = EdgeDoc {
            listed: Some(false),
            listed_ms: Some(200),
            certificates: vec![cert("01", Some(150)), cert("02", None)],
            last_seen_ms: Some(100),
            ..EdgeDoc::default()
        };
        let b = EdgeDoc {
            listed: Some(true),
            listed_ms: Some(100),
            certificates: vec![cert("02", Some(300)), cert("03", None)],
            last_seen_ms: Some(120),
            released: Some(ReleasedDoc {
                at_ms: 400,
                why: "away".into(),
            }),
            ..EdgeDoc::default()
        };
        let (mut ab, mut ba) = (a.clone(), b.clone());
        assert!(ab.merge(b.clone()));
        assert!(ba.merge(a.clone()));
        ab.certificates.sort_by(|x, y| x.serial.cmp(&y.serial));
        ba.certificates.sort_by(|x, y| x.serial.cmp(&y.serial));
        assert_eq!(ab, ba, "the same whichever core merges first");
        // The newer listing decision wins; revocations add up; the latest release holds.
        assert_eq!(ab.listed, Some(false));
        let revoked: Vec<_> = ab.certificates.iter().map(|c| c.revoked_ms).collect();
        assert_eq!(revoked, [Some(150), Some(300), None]);
        assert_eq!(ab.released.as_ref().map(|r| r.at_ms), Some(400));
        assert_eq!(ab.last_seen_ms, Some(120));
        // Merging again changes nothing: the cores stop sending it back and forth.
        assert!(!ab.merge(ba));
        // Two decisions at the same moment: the removal, whichever core merges.
        let added = EdgeDoc {
            listed: Some(true),
            listed_ms: Some(500),
            ..EdgeDoc::default()
        };
        let removed = EdgeDoc {
            listed: Some(false),
            listed_ms: Some(500),
            ..EdgeDoc::default()
        };
        let (mut x, mut y) = (added.clone(), removed.clone());
        x.merge(removed);
        y.merge(added);
        assert_eq!((x.listed, y.listed), (Some(false), Some(false)));

        // Links: core-a notices late that the edge left (it came up there at 100), after
        // the edge linked to core-b at 200: core-b's link stands, whichever merges first.
        let linked = |core: &str, up: bool, since_ms: u64, at_ms: u64| EdgeDoc {
            linked: Some(LinkedDoc {
                core: NodeName::new(core).unwrap(),
                up,
                since_ms,
                at_ms,
            }),
            ..EdgeDoc::default()
        };
        let (late_down, up_b) = (
            linked("core-a", false, 100, 300),
            linked("core-b", true, 200, 200),
        );
        let (mut x, mut y) = (late_down.clone(), up_b.clone());
        x.merge(up_b.clone());
        y.merge(late_down);
        assert_eq!(
            (x.linked.clone(), y.linked),
            (up_b.linked.clone(), up_b.linked)
        );
        // And when it leaves core-b, that stands over core-a's old link.
        x.merge(linked("core-b", false, 200, 400));
        assert_eq!(
            x.linked.map(|l| (l.core.to_string(), l.up)),
            Some(("core-b".to_owned(), false))
        );
    }
}
