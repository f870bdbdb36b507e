//! The bodies of the fuzz targets of this crate's decoders of bytes from outside, for
//! `fuzz/` (`cargo +nightly fuzz run <target>`) and for the integration test that
//! replays the committed corpora on stable (`tests/it/fuzz.rs`).
//!
//! Each function takes any bytes and drives one decoder the way the node does: framing,
//! decoding, the checks that follow, and the pure work done with what passed them. Any
//! error is an answer; a panic, a hang or an allocation without bound is the bug. A few
//! also check a property that must hold for any input that passes (a round trip), and
//! panic when it does not.
//!
//! The store's targets, for what it reads back from disk, are in `log/fuzzing.rs`
//! ([`store_wal`], [`store_records`]), with [`store_seeds`], which makes their seeds from
//! a real store.
//!
//! IO: none, except [`store_seeds`], which reads a store's files.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::codec;
use crate::config::{App, Config};
use crate::mirror::{
    ChunkParams, ChunkRef, ChunkTable, Delta, Entry, FileNode, Hash, Limits, Manifest,
    ManifestAssembly, MirrorFrame, Node, Pace, PathNow, RelPath, plan,
};
use crate::role::Role;
use crate::wire::{Batch, Frame, FrameReader, Inflate};

pub use crate::log::fuzzing::{SEGMENT_MARK, Seed, store_records, store_seeds, store_wal};

/// The link's frames as a control stream brings them: [`FrameReader`], then each
/// batch's entries ([`Batch::into_entries`]).
///
/// The first byte sets the size of the pieces the rest arrives in (1 to 256 bytes), as a
/// QUIC stream cuts it anywhere; the reader is drained after each piece.
pub fn frames(data: &[u8]) {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let mut reader = FrameReader::default();
    for bytes in stream.chunks(usize::from(piece) + 1) {
        reader.push(bytes);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => take(frame),
                Ok(None) => break,
                // The session ends on a bad frame.
                Err(_) => return,
            }
        }
    }
}

/// The compressed entry stream: [`Inflate`] (zstd, never more than 64 KiB ahead of the
/// frame being assembled, frames under [`crate::wire::MAX_FRAME`]), then each batch's
/// entries. The first byte sets the pieces' size, as in [`frames`].
pub fn inflate(data: &[u8]) {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let Ok(mut inflate) = Inflate::new() else {
        return;
    };
    for bytes in stream.chunks(usize::from(piece) + 1) {
        inflate.push(bytes);
        loop {
            match inflate.next_frame() {
                Ok(Some(frame)) => take(frame),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// One batch's body in the codec (a [`Frame::Batch`] without its tag and length), and
/// its entries: [`Batch::into_entries`] with nothing in front.
pub fn batch(data: &[u8]) {
    if let Ok(batch) = codec::decode::<Batch>(data, "batch") {
        let _ = batch.into_entries();
    }
}

/// The mirror stream's frames ([`MirrorFrame`], framed as the link's), each handled as
/// the side that receives it does with what needs no IO: manifest parts assembled
/// ([`ManifestAssembly`], under the edge's [`Limits`]) and finished against
/// [`base_manifest`] (a delta's base), then planned from it; fetches resolved against
/// the base's chunk table; `Received` reports taken by the core's [`Pace`]. The bytes
/// also go through the edge's meter of chunk bytes in the stream. The first byte sets the
/// pieces' size, as in [`frames`].
pub fn mirror_frames(data: &[u8]) {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    let base = base_manifest();
    let table = ChunkTable::new(base);
    let mut reader = FrameReader::default();
    let mut meter = crate::link::DataMeter::default();
    let mut assembly = ManifestAssembly::default();
    let mut pace = Pace::new();
    // The core wrote this much before any report (the reports are checked against it).
    pace.on_sent(Instant::now(), 1 << 20, Duration::from_millis(100), false);
    let path = PathNow {
        smoothed: Duration::from_millis(120),
        min: Duration::from_millis(100),
        lost_packets: 0,
    };
    for bytes in stream.chunks(usize::from(piece) + 1) {
        meter.push(bytes);
        reader.push(bytes);
        loop {
            let frame = match reader.next_value::<MirrorFrame>() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return,
            };
            let _ = frame.name();
            // Whether the stream goes on after this frame.
            let fine = match frame {
                MirrorFrame::Manifest {
                    root,
                    base: from,
                    total,
                    last,
                    bytes,
                } => match assembly.push(root, from, total, last, &bytes, &limits) {
                    Ok(true) => {
                        let done = std::mem::take(&mut assembly);
                        done.finish(&[base], &limits)
                            .map(|target| plan(base, &target, &|_| false))
                            .is_ok()
                    }
                    Ok(false) => true,
                    Err(_) => false,
                },
                MirrorFrame::Fetch { runs } => table.resolve(base, &runs).is_ok(),
                MirrorFrame::FetchFrom { runs, from } => {
                    table.resolve_from(base, &runs, &from).is_ok()
                }
                MirrorFrame::Received { bytes } => pace.on_received(bytes, path).is_ok(),
                _ => true,
            };
            if !fine {
                return;
            }
        }
    }
}

/// A whole manifest from the core: [`Manifest::decode`] (decoding and every check of an
/// untrusted manifest), then what the edge computes from one that passed: the plan from
/// [`base_manifest`], its fetches in batches, the chunk table, and the delta from the
/// base, which must rebuild the manifest exactly ([`Delta::apply`]).
pub fn manifest(data: &[u8]) {
    let limits = Limits::default();
    let Ok(target) = Manifest::decode(data, &limits) else {
        return;
    };
    let base = base_manifest();
    let plan = plan(base, &target, &|_| false);
    for batch in plan.batches(1 << 20, 64) {
        let _ = batch.len();
    }
    let table = ChunkTable::new(&target);
    let _ = table.get(&target, table.len().saturating_sub(1));
    let _ = ChunkTable::first_positions(&target);
    // What the core would send an edge that holds the base: it rebuilds the target.
    let delta = Delta::between(base, &target);
    let encoded = codec::encode(&delta);
    let back: Delta = match codec::decode(&encoded, "manifest delta") {
        Ok(back) => back,
        Err(e) => panic!("a delta does not decode: {e}"),
    };
    match back.apply(base, &limits) {
        Ok(rebuilt) => assert_eq!(rebuilt, target, "a delta rebuilt another manifest"),
        Err(e) => panic!("a delta between two valid manifests is refused: {e}"),
    }
}

/// A manifest delta from the core ([`Delta`] in the codec), applied to [`base_manifest`]
/// ([`Delta::apply`]: copies and edits bounded, the result validated), then planned.
///
/// The delta's `base` is set to the base's root before it is applied: the edge picks the
/// base by that root, and a fuzzer would not guess 32 bytes of hash; everything after
/// that check is what is explored.
pub fn delta(data: &[u8]) {
    let Ok(mut delta) = codec::decode::<Delta>(data, "manifest delta") else {
        return;
    };
    let base = base_manifest();
    delta.base = base_root();
    if let Ok(target) = delta.apply(base, &Limits::default()) {
        let _ = plan(base, &target, &|_| false);
    }
}

/// A chunk fetch from the edge, one [`MirrorFrame`] in the codec (no length in front):
/// `Fetch` and `FetchFrom` resolved against [`base_manifest`]'s chunk table, as the core
/// does against the manifest it last sent ([`ChunkTable::resolve_from`]).
pub fn fetch(data: &[u8]) {
    let Ok(frame) = codec::decode::<MirrorFrame>(data, "mirror frame") else {
        return;
    };
    let base = base_manifest();
    let table = ChunkTable::new(base);
    let chunks = match frame {
        MirrorFrame::Fetch { runs } => table.resolve(base, &runs).map(|c| c.len()),
        MirrorFrame::FetchFrom { runs, from } => {
            table.resolve_from(base, &runs, &from).map(|c| c.len())
        }
        _ => return,
    };
    if let Ok(n) = chunks {
        assert!(n <= crate::mirror::MAX_REQUEST, "{n} chunks resolved");
    }
}

/// A config file and environment overrides, as [`Config::load`] takes them for the
/// application `A`: the bytes up to the first NUL are the file (UTF-8, as it is read),
/// the rest are lines `VARIABLE=value` (the `TETHER_*__*` ones are applied, sorted).
/// Loaded for both roles; a config that loads must load again, unchanged, from what
/// `--print-config` prints for it ([`Config::to_toml_with`]). The binaries' application
/// is not the framework's to name: `core_node::fuzzing::config` names it.
pub fn config_with<A: App>(data: &[u8]) {
    let (file, env) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(file) else {
        return;
    };
    let mut vars: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(var, _)| var.starts_with(crate::config::ENV_PREFIX) && var.contains("__"))
        .map(|(var, value)| (var.to_owned(), value.to_owned()))
        .collect();
    vars.sort();
    let path = Path::new("fuzz.toml");
    for role in [Role::Core, Role::Edge] {
        let Ok(config) = Config::from_sources::<A>(role, Some((path, text)), &vars) else {
            continue;
        };
        let printed = config.0.to_toml_with(&config.1);
        match Config::from_sources::<A>(role, Some((path, &printed)), &[]) {
            Ok(again) => assert_eq!(again, config, "the printed config loads differently"),
            Err(e) => panic!("the printed config does not load: {e}\n{printed}"),
        }
    }
}

/// The manifest the mirror targets start from: what an edge holds (directories, files of
/// none, one and several chunks, a symlink), the base of [`delta`]'s deltas and of the
/// fetches' positions. The seed corpora are made against it.
pub fn base_manifest() -> &'static Manifest {
    static BASE: OnceLock<Manifest> = OnceLock::new();
    BASE.get_or_init(|| {
        let chunks = |name: &str, lens: &[u32]| -> Vec<ChunkRef> {
            lens.iter()
                .enumerate()
                .map(|(i, &len)| ChunkRef {
                    hash: Hash::of(format!("{name}#{i}").as_bytes()),
                    len,
                })
                .collect()
        };
        let file = |name: &str, lens: &[u32]| {
            let whole = Hash::of(name.as_bytes());
            Node::File(FileNode::new(
                0o644,
                1_700_000_000_000_000_000,
                chunks(name, lens),
                whole,
            ))
        };
        let entries = [
            ("docs", Node::Dir { mode: 0o755 }),
            ("docs/empty", file("docs/empty", &[])),
            ("docs/notes.txt", file("docs/notes.txt", &[4_000])),
            ("images", Node::Dir { mode: 0o755 }),
            (
                "images/latest.png",
                Node::Symlink {
                    target: "mars.png".into(),
                },
            ),
            (
                "images/mars.png",
                file("images/mars.png", &[70_000, 130_000, 20_000]),
            ),
            (
                "images/moon.jpg",
                file("images/moon.jpg", &[200_000, 90_000]),
            ),
            (
                "video.bin",
                file("video.bin", &[262_144, 100_000, 65_536, 180_000, 7]),
            ),
        ];
        let mut manifest = Manifest::empty(ChunkParams::default());
        manifest.version = 7;
        manifest.created_ms = 1_700_000_000_000;
        manifest.entries = entries
            .into_iter()
            .map(|(path, node)| Entry {
                // The paths above are valid.
                path: RelPath::new(path).expect("a valid path"),
                node,
            })
            .collect();
        manifest
    })
}

/// The root of [`base_manifest`].
fn base_root() -> Hash {
    static ROOT: OnceLock<Hash> = OnceLock::new();
    *ROOT.get_or_init(|| base_manifest().root())
}

/// What the receiving end does with a link frame that needs no store.
fn take(frame: Frame) {
    if let Frame::Batch(batch) = frame {
        let _ = batch.into_entries();
    }
}

/// The enrollment exchange's messages (`crate::edges::enrollment`): from the first byte,
/// an edge's request as HQ reads it before any code is checked (0: the rest is the
/// request) or HQ's answer as the edge reads it (1); then, for a request that reads, HQ
/// issuing a certificate for the key it carries with a test CA, and the code written and
/// read back unchanged.
pub fn enrollment(data: &[u8]) {
    use crate::edges::enrollment::{Code, read_answer, read_request};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 1 {
        let _ = read_answer(rest);
        return;
    }
    let Ok((code, name, point)) = read_request(rest) else {
        return;
    };
    if let Some(code) = code {
        assert_eq!(code.to_string().parse::<Code>().as_ref(), Ok(&code));
    }
    static CA: std::sync::OnceLock<Option<crate::tls::Ca>> = std::sync::OnceLock::new();
    if let Some(ca) = CA.get_or_init(|| crate::tls::Ca::create("fuzz").ok()) {
        let _ = ca.issue_for_key(&name, &point);
    }
}

/// A message from JetStream as the bridge takes it (`crate::bridge::decode`): the first
/// line is its subject, then `name: value` header lines up to an empty line, then the
/// payload. What decodes is sent out again as the bridge would and must decode to the
/// same key, destination and headers.
pub fn bridge_message(data: &[u8]) {
    use crate::bridge::{decode, headers};
    use crate::config::BridgeSettings;
    use crate::entry::{Entry, EntryId, NodeName, Seq, Timestamp, TopicName};
    static SETTINGS: std::sync::OnceLock<Option<BridgeSettings>> = std::sync::OnceLock::new();
    let Some(settings) = SETTINGS.get_or_init(|| {
        let topics = ["ORDERS", "a.b", "a"].map(TopicName::new);
        Some(BridgeSettings {
            inbound: topics.into_iter().collect::<Result<_, _>>().ok()?,
            ..BridgeSettings::default()
        })
    }) else {
        return;
    };
    let text_end = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..text_end]) else {
        return;
    };
    let payload = data.get(text_end + 2..).unwrap_or_default().to_vec();
    let mut lines = text.split('\n');
    let subject = lines.next().unwrap_or_default();
    let pairs: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let Ok((topic, append)) = decode(settings, 1 << 20, subject, &pairs, payload) else {
        return;
    };
    let Ok(origin) = NodeName::new("hq") else {
        return;
    };
    let entry = Entry {
        id: EntryId {
            origin,
            seq: Seq(1),
        },
        timestamp: Timestamp(0),
        key: append.key.clone(),
        to: append.to.clone(),
        headers: append.headers.clone(),
        payload: append.payload.clone(),
    };
    let sent: Vec<(String, String)> = headers::of_entry(&topic, &entry)
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    let Ok(again) = headers::to_append(&sent, None, entry.payload.clone()) else {
        panic!("an entry the bridge sends does not decode: {sent:?}");
    };
    assert_eq!(again, append, "an entry changed on its way out and back");
}

/// A message from the backbone stream as a core takes it (`crate::bridge::backbone::decode`):
/// the first line is its subject, the rest its payload. What decodes is encoded again as
/// a core publishes it and must decode to the same entries.
pub fn backbone_message(data: &[u8]) {
    use crate::bridge::backbone::decode;
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let Ok(subject) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let payload = data.get(split + 1..).unwrap_or_default();
    let Ok((topic, origin, entries)) = decode("tether-bb", subject, payload) else {
        return;
    };
    let again = crate::codec::encode(&crate::wire::Batch::new(topic.clone(), &entries));
    let back = decode("tether-bb", &format!("tether-bb.{topic}.{origin}"), &again);
    assert_eq!(back.ok(), Some((topic, origin, entries)));
}
