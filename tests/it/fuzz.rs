//! The fuzz corpora, replayed on stable: every file of `fuzz/corpus/<target>/` and of
//! `fuzz/regressions/<target>/` (inputs that found a bug; `cargo fuzz cmin` never drops
//! them there) goes through the same function that the fuzz target `<target>` calls
//! (`protocol::fuzzing`, `core_node::fuzzing`), so an input that once found a bug, or
//! reached a corner, fails the suite if it panics again. A missing or empty corpus fails
//! too: the replay must never pass by testing nothing.
//!
//! `write_seeds` (ignored: run it by hand, README "Fuzzing") writes the seed corpora from
//! the real encoders: link frames, batches and compressed streams, mirror frames,
//! manifests, deltas and fetches against `protocol::fuzzing::base_manifest`, the default
//! configs, PNG and JPEG images, the demo feed document. `seeds_from_a_real_store_pass_their_targets`
//! does the same for the store's targets, from a store that took writes of every kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use protocol::codec;
use protocol::config::Config;
use protocol::entry::{
    Append, Entry, EntryId, NodeName, Offset, Retention, Scope, Seq, Timestamp, TopicConfig,
    TopicName,
};
use protocol::fuzzing::base_manifest;
use protocol::log::{ConsumerName, PeerConfig, Store, StoreConfig, TableName, Txn, VersionVector};
use protocol::mirror::{
    ChunkRef, ChunkTable, Delta, FileNode, Hash, Limits, Manifest, MirrorFrame, Node, RelPath,
    fetch_runs, manifest_frames, plan,
};
use protocol::node::Role;
use protocol::wire::{self, Batch, Deflate, Frame, Hello};

use crate::support::tools::root;

/// A target's body: any bytes in, a panic for a bug.
type Body = fn(&[u8]);

/// Every target, by the name of its file in `fuzz/fuzz_targets/` and its corpus, with
/// the function it calls.
const TARGETS: [(&str, Body); 15] = [
    ("frames", protocol::fuzzing::frames),
    ("inflate", protocol::fuzzing::inflate),
    ("batch", protocol::fuzzing::batch),
    ("mirror_frames", protocol::fuzzing::mirror_frames),
    ("manifest", protocol::fuzzing::manifest),
    ("delta", protocol::fuzzing::delta),
    ("fetch", protocol::fuzzing::fetch),
    ("config", core_node::fuzzing::config),
    ("image", core_node::fuzzing::image),
    ("feed", core_node::fuzzing::feed),
    ("store_wal", protocol::fuzzing::store_wal),
    ("store_records", protocol::fuzzing::store_records),
    ("enrollment", protocol::fuzzing::enrollment),
    ("bridge_message", protocol::fuzzing::bridge_message),
    ("backbone_message", protocol::fuzzing::backbone_message),
];

fn corpus(target: &str) -> PathBuf {
    root().join("fuzz").join("corpus").join(target)
}

/// The files of `dir`, sorted.
fn files_of(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs `target`'s function on every file of its corpus and of its regressions, if it
/// has any; panics (naming the file) on the first input that panics, and when the corpus
/// is missing or empty.
fn replay(target: &str) {
    let (_, body) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let dir = corpus(target);
    let mut files = files_of(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    let regressions = root().join("fuzz").join("regressions").join(target);
    if regressions.exists() {
        files.extend(files_of(&regressions).unwrap());
    }
    let start = Instant::now();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let result = std::panic::catch_unwind(|| body(&bytes));
        assert!(result.is_ok(), "{target}: {} panicked", file.display());
    }
    eprintln!(
        "{target}: {} files replayed in {:?}",
        files.len(),
        start.elapsed()
    );
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    for (target, _) in TARGETS {
        let file = root()
            .join("fuzz")
            .join("fuzz_targets")
            .join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("fuzz target {}: {e}", file.display()));
        assert!(
            text.contains(&format!("::fuzzing::{target}(data)")),
            "{} does not call the function of its name",
            file.display()
        );
    }
}

#[test]
fn the_base_manifest_is_valid() {
    base_manifest().validate(&Limits::default()).unwrap();
}

#[test]
fn frames_corpus() {
    replay("frames");
}

#[test]
fn inflate_corpus() {
    replay("inflate");
}

#[test]
fn batch_corpus() {
    replay("batch");
}

#[test]
fn mirror_frames_corpus() {
    replay("mirror_frames");
}

#[test]
fn manifest_corpus() {
    replay("manifest");
}

#[test]
fn delta_corpus() {
    replay("delta");
}

#[test]
fn fetch_corpus() {
    replay("fetch");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn image_corpus() {
    replay("image");
}

#[test]
fn feed_corpus() {
    replay("feed");
}

#[test]
fn enrollment_corpus() {
    replay("enrollment");
}

#[test]
fn bridge_message_corpus() {
    replay("bridge_message");
}

#[test]
fn backbone_message_corpus() {
    replay("backbone_message");
}

#[test]
fn store_wal_corpus() {
    replay("store_wal");
}

#[test]
fn store_records_corpus() {
    replay("store_records");
}

/// Makes the store targets' seeds (`seed-*`, [`protocol::fuzzing::store_seeds`]) from a
/// real store that took writes of every kind (topics, entries with keys, headers and a
/// destination, entries of another origin, table documents, cursors, peers and their
/// acknowledgements, a forgotten peer, retention), while its log is still there, and
/// checks that each passes its target and stays small. With `TETHER_WRITE_SEEDS=1` it
/// also writes them into `fuzz/corpus/store_*/`.
#[tokio::test]
async fn seeds_from_a_real_store_pass_their_targets() {
    let write = std::env::var_os("TETHER_WRITE_SEEDS").is_some_and(|v| v == "1");
    let dir = tests::TempDir::new("fuzz-store-seeds").unwrap();
    let store = Store::open(dir.path(), StoreConfig::new(name("alpha"))).unwrap();
    let (reports, broadcasts) = (topic("reports"), topic("broadcasts"));
    let retention = Retention {
        max_entries: Some(4),
        ..Retention::default()
    };
    for (topic, scope, retention) in [
        (&reports, Scope::Core, retention),
        (&broadcasts, Scope::All, Retention::default()),
    ] {
        let config = TopicConfig {
            name: topic.clone(),
            scope,
            retention,
        };
        store.create_topic(config).await.unwrap();
    }
    for peer in ["hq", "bravo"] {
        let config = PeerConfig {
            name: name(peer),
            core: peer == "hq",
            topics: vec![reports.clone(), broadcasts.clone()],
        };
        store.set_peer(config).await.unwrap();
    }
    for seq in 1..=6u64 {
        let json = format!(r#"{{"report":{seq},"text":"all quiet at grid {seq}"}}"#);
        let append = Append {
            key: Some(format!("grid-{seq}").into_bytes()),
            to: seq.is_multiple_of(2).then(|| name("hq")),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            payload: json.into_bytes(),
        };
        store.append(&reports, append).await.unwrap();
    }
    let from_hq: Vec<Entry> = (1..=3u64)
        .map(|seq| Entry {
            id: EntryId {
                origin: name("hq"),
                seq: Seq(seq),
            },
            timestamp: Timestamp(1_700_000_000_000 + seq * 37),
            key: None,
            to: None,
            headers: vec![],
            payload: vec![seq as u8; 40],
        })
        .collect();
    let mut txn = Txn::new();
    txn.insert(&broadcasts, from_hq);
    let edges = TableName::new("edges").unwrap();
    txn.put(
        &edges,
        "bravo",
        serde_json::json!({"name": "bravo", "bytes": 4096}),
    );
    txn.put(
        &edges,
        "charlie",
        serde_json::json!(["a", 1, null, {"x": 2.5}]),
    );
    let consumer = ConsumerName::new("tiles").unwrap();
    txn.cursor(&consumer, &reports, Offset(3));
    store.commit(txn).await.unwrap();
    let mut txn = Txn::new();
    txn.delete(&edges, "charlie");
    txn.cursor(&consumer, &broadcasts, Offset(2));
    store.commit(txn).await.unwrap();
    let acked = VersionVector([(name("alpha"), Seq(5)), (name("hq"), Seq(2))].into());
    store
        .peer_acked(&name("hq"), &reports, acked)
        .await
        .unwrap();
    store.forget_peer(&name("bravo")).await.unwrap();
    store.enforce_retention().await.unwrap();

    let seeds = protocol::fuzzing::store_seeds(&store).unwrap();
    store.close().await.unwrap();
    assert!(
        seeds.len() < 64,
        "{} store seeds: keep the corpus small",
        seeds.len()
    );
    for (target, name, bytes) in &seeds {
        assert!(
            bytes.len() < 64 << 10,
            "{target}/{name}: {} bytes",
            bytes.len()
        );
        pass_and_write(target, name, bytes, write);
    }
    for target in ["store_wal", "store_records"] {
        assert!(
            seeds.iter().any(|(t, _, _)| *t == target),
            "no seed for {target}"
        );
    }
}

/// Runs a seed through its target and, with `write`, writes it into the target's corpus.
fn pass_and_write(target: &str, name: &str, bytes: &[u8], write: bool) {
    let (_, body) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
    body(bytes);
    if write {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        eprintln!("{target}/seed-{name}: {} bytes", bytes.len());
    }
}

/// Makes the seed corpora (files named `seed-*`) from the real encoders and checks that
/// each passes its target, so a change of format that the fuzz targets cannot take fails
/// here. With `TETHER_WRITE_SEEDS=1` it also writes them into `fuzz/corpus/*/` (do that
/// when a format changes, then commit them).
#[test]
fn seeds_from_the_real_encoders_pass_their_targets() {
    let write = std::env::var_os("TETHER_WRITE_SEEDS").is_some_and(|v| v == "1");
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push((target, name.to_owned(), bytes));
    };

    // The link: frames as a control stream carries them, the same through zstd, batches.
    let frames = link_frames();
    let mut stream = Vec::new();
    for frame in &frames {
        wire::encode(frame, &mut stream);
    }
    for piece in [255u8, 6] {
        add(
            "frames",
            &format!("stream-{piece}"),
            prefixed(piece, &stream),
        );
    }
    let mut deflate = Deflate::new(3).unwrap();
    let mut compressed = Vec::new();
    for frame in &frames {
        deflate.write(frame, &mut compressed).unwrap();
        deflate.flush(&mut compressed).unwrap();
    }
    // A link gone quiet ends its zstd frame; what follows is a new one.
    deflate.release(&mut compressed).unwrap();
    for frame in frames.iter().take(3) {
        deflate.write(frame, &mut compressed).unwrap();
        deflate.flush(&mut compressed).unwrap();
    }
    for piece in [255u8, 6] {
        add(
            "inflate",
            &format!("stream-{piece}"),
            prefixed(piece, &compressed),
        );
    }
    for (i, frame) in frames.iter().enumerate() {
        if let Frame::Batch(batch) = frame {
            add("batch", &format!("batch-{i}"), codec::encode(batch));
        }
    }

    // The mirror: manifests, deltas and fetches against the base the targets use.
    let base = base_manifest();
    for (name, target) in manifests() {
        add("manifest", &name, target.encode());
        add(
            "delta",
            &name,
            codec::encode(&Delta::between(base, &target)),
        );
        let plan = plan(base, &target, &|_| false);
        let positions = ChunkTable::first_positions(base);
        // The base's chunks, by position: what a fetch against it can name.
        let mut wanted: Vec<u64> = target
            .files()
            .flat_map(|(_, f)| f.chunks.iter())
            .filter_map(|c| positions.get(&c.hash).copied())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let runs = fetch_runs(&wanted);
        let from: Vec<(u32, u32)> = (0..wanted.len() as u32)
            .step_by(2)
            .map(|i| (i, 1))
            .collect();
        let mut mirror = Vec::new();
        let mut frames = vec![
            MirrorFrame::ReportEvery { bytes: 16 << 10 },
            MirrorFrame::Start {
                have_root: base.root(),
                have_version: base.version,
                target_root: Some(target.root()),
                max_rate: Some(1 << 20),
            },
        ];
        frames.extend(manifest_frames(&target, Some(base)));
        frames.extend(manifest_frames(&target, None));
        let fetch = MirrorFrame::Fetch { runs: runs.clone() };
        let fetch_from = MirrorFrame::FetchFrom {
            runs,
            from: from.clone(),
        };
        add("fetch", &format!("{name}-fetch"), codec::encode(&fetch));
        add("fetch", &format!("{name}-from"), codec::encode(&fetch_from));
        frames.extend([fetch, fetch_from]);
        for chunk in plan.fetch.iter().take(3) {
            let len = (chunk.len as usize).min(300);
            frames.push(MirrorFrame::Data {
                bytes: vec![0xa5; len],
            });
        }
        frames.extend([
            MirrorFrame::Received { bytes: 4096 },
            MirrorFrame::Gone {
                hash: Hash::of(b"gone"),
            },
            MirrorFrame::Received { bytes: 70_000 },
            MirrorFrame::Refused {
                reason: "no volume".into(),
            },
            MirrorFrame::Done,
        ]);
        for frame in &frames {
            wire::encode_value(frame, &mut mirror);
        }
        for piece in [255u8, 4] {
            add(
                "mirror_frames",
                &format!("{name}-{piece}"),
                prefixed(piece, &mirror),
            );
        }
    }

    // The configs: the files shipped and what --print-config prints, one with overrides.
    for (role, dir) in [(Role::Core, "core-node"), (Role::Edge, "edge-node")] {
        let file = std::fs::read(root().join(dir).join("config.dev.toml")).unwrap();
        add("config", dir, file.clone());
        let (config, settings) = Config::default_with::<mission::Settings>(role);
        let printed = config.to_toml_with(&settings);
        add("config", &format!("{dir}-printed"), printed.into_bytes());
        let mut with_env = file;
        with_env.extend_from_slice(
            b"\0TETHER_NODE__NAME=bravo\nTETHER_STORE__DISK_BUDGET=10GiB\n\
              TETHER_LINK__EDGES=alpha,bravo\nTETHER_LINK__KEEP_ALIVE=2s\n",
        );
        add("config", &format!("{dir}-env"), with_env);
    }
    add("config", "topics", CONFIG_TOPICS.as_bytes().to_vec());

    // Images: a demo feed picture, PNGs of each colour type, JPEGs (baseline, grey,
    // progressive, subsampled with restarts).
    let dir = tests::TempDir::new("fuzz-seeds").unwrap();
    let demo = core_node::demo_feed::generate(dir.path(), "http://127.0.0.1:8080/demo", 2).unwrap();
    let picture = std::fs::read(dir.path().join(&demo.files[0])).unwrap();
    add("image", "demo", picture);
    for (name, bytes) in images() {
        add("image", &name, bytes);
    }

    // Feeds: the demo document and one in NASA's shape with bad items among good ones.
    add("feed", "demo", demo.document);
    add("feed", "nasa", FEED.as_bytes().to_vec());

    // Messages from JetStream as the bridge takes them: what the bridge itself sends,
    // and an application's, to everyone and to one edge.
    for (i, frame) in link_frames().iter().enumerate() {
        let Frame::Batch(batch) = frame else { continue };
        for (j, entry) in batch
            .clone()
            .into_entries()
            .unwrap()
            .iter()
            .enumerate()
            .take(2)
        {
            let mut message = format!("tether-in.ORDERS.{}", entry.id.origin).into_bytes();
            for (name, value) in protocol::bridge::headers::of_entry(&topic("ORDERS"), entry) {
                message.extend_from_slice(format!("\n{name}: {value}").as_bytes());
            }
            message.extend_from_slice(b"\n\n");
            message.extend_from_slice(&entry.payload);
            add("bridge_message", &format!("entry-{i}-{j}"), message);
        }
    }
    add(
        "bridge_message",
        "application",
        b"tether-in.a.b\nTether-Key: order-7\nTether-Header: kind=report\n\n{\"n\": 7}".to_vec(),
    );

    // Backbone messages as a core publishes them: one origin's run of a batch each.
    for (i, frame) in link_frames().iter().enumerate() {
        let Frame::Batch(batch) = frame else { continue };
        let entries = batch.clone().into_entries().unwrap();
        let Some(origin) = entries.first().map(|e| e.id.origin.clone()) else {
            continue;
        };
        let run: Vec<_> = entries
            .into_iter()
            .filter(|e| e.id.origin == origin)
            .collect();
        let mut message = format!("tether-bb.{}.{origin}\n", batch.topic).into_bytes();
        message.extend(protocol::codec::encode(&protocol::wire::Batch::new(
            batch.topic.clone(),
            &run,
        )));
        add("backbone_message", &format!("run-{i}"), message);
    }

    for (target, name, bytes) in &seeds {
        pass_and_write(target, name, bytes, write);
    }
    assert!(seeds.len() >= TARGETS.len(), "a seed for every target");
}

/// `bytes` behind the byte that sets the size of the pieces they arrive in.
fn prefixed(piece: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![piece];
    out.extend_from_slice(bytes);
    out
}

fn name(text: &str) -> NodeName {
    NodeName::new(text).unwrap()
}

fn topic(text: &str) -> TopicName {
    TopicName::new(text).unwrap()
}

/// One of each link frame, with batches of plain entries and of entries with a key, a
/// destination and headers.
fn link_frames() -> Vec<Frame> {
    let entry = |origin: &str, seq: u64, payload: &[u8], extras: bool| Entry {
        id: EntryId {
            origin: name(origin),
            seq: Seq(seq),
        },
        timestamp: Timestamp(1_700_000_000_000 + seq * 37),
        key: extras.then(|| format!("key-{seq}").into_bytes()),
        to: (extras && seq.is_multiple_of(2)).then(|| name("alpha")),
        headers: if extras {
            vec![("content-type".into(), b"application/json".to_vec())]
        } else {
            vec![]
        },
        payload: payload.to_vec(),
    };
    let reports: Vec<Entry> = (1..=6u64)
        .map(|seq| {
            let origin = if seq.is_multiple_of(3) {
                "bravo"
            } else {
                "alpha"
            };
            let json = format!(r#"{{"report":{seq},"text":"all quiet at grid {seq}"}}"#);
            entry(origin, seq, json.as_bytes(), !seq.is_multiple_of(2))
        })
        .collect();
    let plain: Vec<Entry> = (40..44)
        .map(|seq| entry("hq", seq, &[seq as u8; 24], false))
        .collect();
    vec![
        Frame::Hello(Hello {
            version: wire::VERSION,
            node: name("alpha"),
            incarnation: 0x0123_4567_89ab_cdef,
            core: false,
            topics: vec![
                (topic("reports"), Scope::Core),
                (topic("broadcasts"), Scope::All),
            ],
            closed: vec![topic("broadcasts")],
            clock_ms: 1_765_000_000_000,
        }),
        Frame::Have {
            topic: topic("reports"),
            vector: vec![(name("alpha"), 41), (name("hq"), 7)],
        },
        Frame::Batch(Batch::new(topic("reports"), &reports)),
        Frame::Batch(Batch::new(topic("broadcasts"), &plain)),
        Frame::Skip {
            topic: topic("reports"),
            origin: name("bravo"),
            through: 12,
        },
        Frame::Pause,
        Frame::Resume,
        Frame::Backlog {
            entries: 10_000,
            bytes: 2_560_000,
        },
        Frame::Rules {
            classes: vec![
                (topic("reports"), protocol::entry::Priority::Urgent),
                (topic("broadcasts"), protocol::entry::Priority::Bulk),
            ],
            latest_value: vec![topic("positions")],
        },
    ]
}

/// Targets from the base manifest: one change of each kind a delta carries.
fn manifests() -> Vec<(String, Manifest)> {
    let base = base_manifest();
    let chunk = |name: &str, len: u32| ChunkRef {
        hash: Hash::of(name.as_bytes()),
        len,
    };
    let file = |chunks: Vec<ChunkRef>, whole: &str| {
        Node::File(FileNode::new(
            0o644,
            1_700_000_100_000_000_000,
            chunks,
            Hash::of(whole.as_bytes()),
        ))
    };
    let edit = |change: &dyn Fn(&mut BTreeMap<RelPath, Node>)| {
        let mut entries: BTreeMap<RelPath, Node> = base
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.node.clone()))
            .collect();
        change(&mut entries);
        Manifest {
            version: base.version + 1,
            entries: entries
                .into_iter()
                .map(|(path, node)| protocol::mirror::Entry { path, node })
                .collect(),
            ..base.clone()
        }
    };
    let p = |path: &str| RelPath::new(path).unwrap();
    let chunks_of = |path: &str| match base.entry(&p(path)).map(|e| &e.node) {
        Some(Node::File(f)) => f.chunks.clone(),
        _ => panic!("{path} is a file of the base"),
    };
    let video = chunks_of("video.bin");
    let mars = chunks_of("images/mars.png");
    vec![
        ("same".to_owned(), base.clone()),
        (
            "append".to_owned(),
            edit(&|m| {
                let mut chunks = video.clone();
                let last = chunks.pop().unwrap();
                chunks.push(chunk("video.bin+", last.len + 5_000));
                m.insert(p("video.bin"), file(chunks, "video.bin appended"));
            }),
        ),
        (
            "edit".to_owned(),
            edit(&|m| {
                let mut chunks = mars.clone();
                chunks[1] = chunk("mars edited", 90_000);
                chunks.insert(2, chunk("mars inserted", 40_000));
                m.insert(p("images/mars.png"), file(chunks, "mars edited"));
            }),
        ),
        (
            "move".to_owned(),
            edit(&|m| {
                let moon = m.remove(&p("images/moon.jpg")).unwrap();
                m.insert(p("archive"), Node::Dir { mode: 0o750 });
                m.insert(p("archive/moon.jpg"), moon.clone());
                m.insert(p("images/moon-copy.jpg"), moon);
                m.remove(&p("docs/empty"));
            }),
        ),
        (
            "new".to_owned(),
            edit(&|m| {
                m.insert(p("docs/a"), Node::Dir { mode: 0o700 });
                m.insert(p("docs/a/b.txt"), file(vec![chunk("b", 12)], "b"));
                m.insert(
                    p("docs/a/link"),
                    Node::Symlink {
                        target: "../notes.txt".into(),
                    },
                );
                m.insert(p("zeta"), file(vec![], ""));
                m.insert(p("images/mars.png"), file(mars.clone(), "mars"));
            }),
        ),
    ]
}

/// A config with topics of every scope and retention, and other keys set.
const CONFIG_TOPICS: &str = r#"[node]
name = "hq"
data_dir = "/var/lib/tether"

[store]
max_entry_bytes = 65536
disk_budget = "10 GiB"
retention_interval = "30s"

[link]
listen = "0.0.0.0:7000"
edges = ["alpha", "bravo"]
keep_alive = "5s"
idle_timeout = "2m"

[http]
listen = "0.0.0.0:8080"
token = "secret"

[[topics]]
name = "reports"
scope = "core"
max_age = "7d"

[[topics]]
name = "broadcasts"
scope = "all"
max_bytes = "64MiB"
max_entries = 100000

[[topics]]
name = "scratch"
scope = "local"
"#;

/// A NASA Image and Video Library document: good items and one of each kind of fault.
const FEED: &str = r#"{"collection": {"version": "1.0", "href": "https://images-api.nasa.gov/search?q=mars",
 "items": [
  {"href": "https://images-assets.nasa.gov/image/PIA00001/collection.json",
   "data": [{"center": "JPL", "title": "Mars Globe", "nasa_id": "PIA00001",
     "date_created": "1990-01-01T00:00:00Z", "media_type": "image",
     "keywords": ["Mars", "Viking"], "description": "A globe of Mars."}],
   "links": [{"href": "https://images-assets.nasa.gov/image/PIA00001/PIA00001~thumb.jpg",
     "rel": "preview", "render": "image"},
    {"href": "https://images-assets.nasa.gov/image/PIA00001/PIA00001~orig.jpg", "rel": "canonical"}]},
  {"data": [{"title": "Moon", "nasa_id": "../../etc/passwd", "media_type": "image"}],
   "links": [{"href": "file:///srv/moon image.png"}]},
  {"data": [{"title": "A video", "nasa_id": "VID1", "media_type": "video"}], "links": []},
  {"data": [{"title": 7, "nasa_id": "PIA00002", "media_type": "image"}],
   "links": [{"href": "https://example.org/x.png"}]},
  {"data": [{"title": "Dup", "nasa_id": "PIA00001", "media_type": "image"}],
   "links": [{"href": "https://example.org/dup.png"}]},
  {"data": [{"title": "No link", "nasa_id": "PIA00003", "media_type": "image",
     "keywords": null, "center": null}],
   "links": [{"href": "ftp://example.org/x.png"}, {"rel": "preview"}, 3]},
  [], {"data": []}, {"data": "x", "links": {}}
 ],
 "metadata": {"total_hits": 9}}}"#;

/// Small PNGs of every colour type and depth, and JPEGs of the kinds cameras write.
fn images() -> Vec<(String, Vec<u8>)> {
    let (w, h) = (24u32, 16u32);
    let rgb: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w, i / w);
            [(x * 10) as u8, (y * 15) as u8, ((x + y) * 6) as u8]
        })
        .collect();
    let mut out = Vec::new();
    let encode_png = |color: png::ColorType, depth: png::BitDepth, data: &[u8], palette: bool| {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, w, h);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if palette {
            encoder.set_palette(
                (0..16u8)
                    .flat_map(|i| [i * 16, 255 - i * 16, i])
                    .collect::<Vec<_>>(),
            );
            encoder.set_trns(vec![0u8, 128]);
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        bytes
    };
    let pixels = (w * h) as usize;
    let grey: Vec<u8> = rgb.chunks(3).map(|p| p[0]).collect();
    let grey_alpha: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[0], p[1]]).collect();
    let rgba: Vec<u8> = rgb
        .chunks(3)
        .flat_map(|p| [p[0], p[1], p[2], 200])
        .collect();
    let rgb16: Vec<u8> = rgb.iter().flat_map(|&v| [v, v]).collect();
    // 4-bit palette indexes, two a byte.
    let indexed: Vec<u8> = (0..pixels / 2).map(|i| (i % 256) as u8).collect();
    out.push((
        "png-rgb".to_owned(),
        encode_png(png::ColorType::Rgb, png::BitDepth::Eight, &rgb, false),
    ));
    out.push((
        "png-grey".to_owned(),
        encode_png(
            png::ColorType::Grayscale,
            png::BitDepth::Eight,
            &grey,
            false,
        ),
    ));
    out.push((
        "png-grey-alpha".to_owned(),
        encode_png(
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Eight,
            &grey_alpha,
            false,
        ),
    ));
    out.push((
        "png-rgba".to_owned(),
        encode_png(png::ColorType::Rgba, png::BitDepth::Eight, &rgba, false),
    ));
    out.push((
        "png-rgb16".to_owned(),
        encode_png(png::ColorType::Rgb, png::BitDepth::Sixteen, &rgb16, false),
    ));
    out.push((
        "png-indexed".to_owned(),
        encode_png(png::ColorType::Indexed, png::BitDepth::Four, &indexed, true),
    ));
    let encode_jpeg = |setup: &dyn Fn(&mut jpeg_encoder::Encoder<&mut Vec<u8>>),
                       grey_only: bool| {
        let mut bytes = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 80);
        setup(&mut encoder);
        if grey_only {
            encoder
                .encode(&grey, w as u16, h as u16, jpeg_encoder::ColorType::Luma)
                .unwrap();
        } else {
            encoder
                .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
                .unwrap();
        }
        bytes
    };
    out.push(("jpeg-baseline".to_owned(), encode_jpeg(&|_| {}, false)));
    out.push(("jpeg-grey".to_owned(), encode_jpeg(&|_| {}, true)));
    out.push((
        "jpeg-progressive".to_owned(),
        encode_jpeg(&|e| e.set_progressive(true), false),
    ));
    out.push((
        "jpeg-subsampled-restarts".to_owned(),
        encode_jpeg(
            &|e| {
                e.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
                e.set_restart_interval(2);
                e.set_optimized_huffman_tables(true);
            },
            false,
        ),
    ));
    out
}
