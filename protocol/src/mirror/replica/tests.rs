//! The edge's mirror on real files: mirrors from a real source directory, resume, bad
//! manifests, damaged chunks, a full disk, and a stop after every step of an apply.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use super::*;
use crate::codec;
use crate::mirror::Entry;
use crate::mirror::scan::tests::{Scratch, random, write_old};
use crate::mirror::source::SourceVolume;

/// A core volume and an edge mirror in one scratch directory.
struct Pair {
    dir: Scratch,
    source: SourceVolume,
}

impl Pair {
    fn new(what: &str) -> Pair {
        let dir = Scratch::new(what);
        fs::create_dir(dir.0.join("src")).unwrap();
        let source = SourceVolume::unwatched(dir.0.join("src"), ChunkParams::default()).unwrap();
        Pair { dir, source }
    }

    fn src(&self) -> PathBuf {
        self.dir.0.join("src")
    }

    fn edge(&self) -> PathBuf {
        self.dir.0.join("edge")
    }

    fn open(&self) -> ReplicaVolume {
        ReplicaVolume::open(&self.edge(), Limits::default()).unwrap()
    }

    /// The core's manifest now.
    fn manifest(&mut self) -> Manifest {
        self.source.manifest().unwrap().manifest.clone()
    }

    /// Begins a mirror of the source's current state and receives every chunk; returns
    /// the plan and the target.
    fn fetch(&mut self, replica: &mut ReplicaVolume) -> (Plan, Manifest) {
        let target = self.manifest();
        let plan = replica.begin(target.clone()).unwrap();
        for chunk in &plan.fetch {
            let bytes = self.source.read_chunk(&chunk.hash).unwrap();
            replica.receive(&chunk.hash, &bytes).unwrap();
        }
        (plan, target)
    }

    /// Mirrors the source now: fetch and apply.
    fn mirror(&mut self, replica: &mut ReplicaVolume) -> (Plan, Manifest) {
        let (plan, target) = self.fetch(replica);
        replica.apply().unwrap();
        (plan, target)
    }
}

/// What a tree holds, without modes and times: path, kind, content hash or link target.
fn describe(manifest: &Manifest) -> Vec<(String, String)> {
    manifest
        .entries
        .iter()
        .map(|e| {
            let what = match &e.node {
                Node::Dir { .. } => "dir".to_string(),
                Node::File(f) => format!("file {}", f.hash()),
                Node::Symlink { target } => format!("link {target}"),
            };
            (e.path.to_string(), what)
        })
        .collect()
}

/// The tree readers see through `current`, scanned from disk.
fn on_disk(replica: &ReplicaVolume) -> Vec<(String, String)> {
    let mut scan = SourceVolume::unwatched(replica.current_dir(), ChunkParams::default()).unwrap();
    let snapshot = scan.manifest().unwrap();
    assert!(scan.problems().is_empty(), "{:?}", scan.problems());
    describe(&snapshot.manifest)
}

fn fill(root: &Path) {
    write_old(root, "images/big.bin", &random(3 << 20, 1));
    write_old(root, "images/small.jpg", &random(5000, 2));
    write_old(root, "docs/readme.txt", b"read me");
    write_old(root, "docs/empty", b"");
    write_old(root, "tool.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    symlink("../images/small.jpg", root.join("docs/photo")).unwrap();
}

#[test]
fn first_mirror_then_edits_renames_and_deletions() {
    let mut pair = Pair::new("replica");
    fill(&pair.src());
    let mut replica = pair.open();
    assert!(
        on_disk(&replica).is_empty(),
        "an empty v0 before the first mirror"
    );

    let (plan, target) = pair.mirror(&mut replica);
    assert_eq!(on_disk(&replica), describe(&target));
    assert_eq!(plan.fetch_bytes, (3 << 20) + 5000 + 7 + 18);
    let tool = fs::metadata(replica.current_dir().join("tool.sh")).unwrap();
    assert_eq!(
        tool.permissions().mode() & 0o777,
        0o555,
        "executable, read-only"
    );

    // Nothing changed: nothing to fetch, nothing to do.
    let again = pair.manifest();
    assert!(replica.begin(again).unwrap().is_empty());

    // An edit inside the big file, a rename, a move, a deletion, a new file.
    let src = pair.src();
    let mut big = random(3 << 20, 1);
    big[1 << 20..(1 << 20) + 4096].copy_from_slice(&random(4096, 9));
    write_old(&src, "images/big.bin", &big);
    fs::rename(src.join("images/small.jpg"), src.join("images/renamed.jpg")).unwrap();
    fs::rename(src.join("docs"), src.join("archive")).unwrap();
    fs::remove_file(src.join("tool.sh")).unwrap();
    fs::remove_file(src.join("archive/photo")).unwrap();
    write_old(&src, "new.txt", b"new");
    let (plan, target) = pair.mirror(&mut replica);
    assert!(
        plan.fetch_bytes <= 3 * (256 << 10) + 3,
        "{} bytes",
        plan.fetch_bytes
    );
    assert!(plan.delete.iter().any(|p| p.as_str() == "tool.sh"));
    assert_eq!(on_disk(&replica), describe(&target));

    // The previous version is kept for readers, older ones deleted.
    let versions: Vec<String> = fs::read_dir(pair.edge().join("versions"))
        .unwrap()
        .map(|i| i.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".manifest"))
        .collect();
    let mut versions = versions;
    versions.sort();
    assert_eq!(versions, ["v1", "v2"]);
    assert!(
        fs::read_dir(pair.edge().join("spool/chunks"))
            .unwrap()
            .next()
            .is_none()
    );

    // A reopened mirror reads the same state.
    drop(replica);
    let replica = pair.open();
    assert_eq!(describe(replica.current()), describe(&target));
}

#[test]
fn many_small_files_one_batch_each_megabyte() {
    let mut pair = Pair::new("small");
    for i in 0..500 {
        write_old(
            &pair.src(),
            &format!("d{}/f{i}", i % 7),
            &random(4096, 100 + i),
        );
    }
    let mut replica = pair.open();
    let (plan, target) = pair.fetch(&mut replica);
    assert_eq!(plan.fetch.len(), 500);
    assert_eq!(plan.batches(1 << 20, 4096).count(), 2);
    let applied = replica.apply().unwrap();
    assert_eq!(applied.written, 500);
    assert_eq!(on_disk(&replica), describe(&target));

    // Moving every file costs no chunk, and the apply links instead of writing.
    let src = pair.src();
    fs::create_dir(src.join("moved")).unwrap();
    for d in 0..7 {
        fs::rename(src.join(format!("d{d}")), src.join(format!("moved/d{d}"))).unwrap();
    }
    let target = pair.manifest();
    let plan = replica.begin(target.clone()).unwrap();
    assert_eq!(plan.fetch_bytes, 0);
    let applied = replica.apply().unwrap();
    assert_eq!((applied.linked, applied.written), (500, 0));
    assert_eq!(on_disk(&replica), describe(&target));
}

/// The module doc's apply order, checked on the syncs themselves: every written file
/// (more than one batch of them) is synced before its directory, and every directory
/// before the swap that publishes it.
#[test]
fn the_swap_comes_after_every_written_file_and_directory_is_durable() {
    use crate::mirror::spool::trace::{Event, under};
    let mut pair = Pair::new("apply-order");
    let files = SYNC_EVERY + 20;
    for i in 0..files {
        write_old(
            &pair.src(),
            &format!("d{}/f{i}", i % 3),
            &random(100, i as u64),
        );
    }
    let mut replica = pair.open();
    let (_, target) = pair.mirror(&mut replica);
    let events = under(&pair.edge());
    let swap = events
        .iter()
        .position(|e| *e == Event::Swapped(version_dir(&pair.edge(), 1)))
        .expect("swapped to v1");
    let staged = pair.edge().join("staging/v1");
    let synced_at = |path: &Path| {
        events[..swap]
            .iter()
            .position(|e| *e == Event::Synced(path.to_path_buf()))
    };
    let mut written = 0;
    for entry in &target.entries {
        let path = entry.path.under(&staged);
        let Some(at) = synced_at(&path) else {
            panic!("{} not synced before the swap", entry.path);
        };
        if let Node::File(_) = entry.node {
            written += 1;
            let parent = path.parent().unwrap();
            let dir_at = synced_at(parent).expect("its directory synced before the swap");
            assert!(at < dir_at, "{} synced after its directory", entry.path);
        }
    }
    assert_eq!(written, files);
    assert!(
        synced_at(&staged).is_some(),
        "the root synced before the swap"
    );
}

/// Files of one spooled chunk are the spool's files, linked: two files of the same bytes
/// keep their own mode and mtime (the second is copied), a file its owner cannot read is
/// copied, and the version outlives the spool.
#[test]
fn files_of_one_chunk_are_linked_from_the_spool_each_with_its_own_mode_and_mtime() {
    use std::os::unix::fs::MetadataExt;
    let mut pair = Pair::new("spool-link");
    let src = pair.src();
    let same = random(5000, 7);
    write_old(&src, "a", &same);
    write_old(&src, "b", &same);
    write_old(&src, "hidden", &random(3000, 8));
    let newer = std::time::SystemTime::now() - Duration::from_secs(60);
    File::options()
        .write(true)
        .open(src.join("b"))
        .unwrap()
        .set_modified(newer)
        .unwrap();
    fs::set_permissions(src.join("b"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(src.join("hidden"), fs::Permissions::from_mode(0o200)).unwrap();
    let mut replica = pair.open();
    let (_, target) = pair.fetch(&mut replica);
    let spool_inode = |name: &str| {
        let hash = match &target
            .entries
            .iter()
            .find(|e| e.path.as_str() == name)
            .unwrap()
            .node
        {
            Node::File(f) => f.hash(),
            _ => unreachable!(),
        };
        fs::metadata(pair.edge().join("spool/chunks").join(hash.to_string()))
            .unwrap()
            .ino()
    };
    let (a_inode, hidden_inode) = (spool_inode("a"), spool_inode("hidden"));
    let applied = replica.apply().unwrap();
    assert_eq!(applied.written, 3);
    let current = replica.current_dir();
    let meta = |name: &str| fs::metadata(current.join(name)).unwrap();
    assert_eq!(meta("a").ino(), a_inode, "a is the spool's file");
    assert_ne!(meta("b").ino(), a_inode, "b has its own inode");
    assert_ne!(meta("hidden").ino(), hidden_inode, "hidden is copied");
    assert_eq!(meta("a").permissions().mode() & 0o777, 0o444);
    assert_eq!(meta("b").permissions().mode() & 0o777, 0o555);
    assert_eq!(meta("hidden").permissions().mode() & 0o777, 0);
    for name in ["a", "b"] {
        assert_eq!(
            meta(name).modified().unwrap(),
            fs::metadata(src.join(name)).unwrap().modified().unwrap(),
            "{name}'s mtime"
        );
        assert_eq!(fs::read(current.join(name)).unwrap(), same);
    }
    assert_eq!(meta("a").nlink(), 1, "the spool let go of it");
    assert_eq!(describe(replica.current()), describe(&target));
}

#[test]
fn a_restart_resumes_without_refetching() {
    let mut pair = Pair::new("resume");
    fill(&pair.src());
    let mut replica = pair.open();
    let target = pair.manifest();
    let plan = replica.begin(target.clone()).unwrap();
    let (first, rest) = plan.fetch.split_at(plan.fetch.len() / 2);
    for chunk in first {
        let bytes = pair.source.read_chunk(&chunk.hash).unwrap();
        replica.receive(&chunk.hash, &bytes).unwrap();
    }
    replica.sync().unwrap();
    drop(replica); // the outage, or a restart

    let mut replica = pair.open();
    assert_eq!(replica.target(), Some(&target));
    let resumed = replica.plan().unwrap();
    assert_eq!(resumed.fetch, rest);
    assert_eq!(replica.missing(), rest.len());
    assert!(matches!(replica.apply(), Err(ApplyError::Missing { .. })));
    for chunk in rest {
        let bytes = pair.source.read_chunk(&chunk.hash).unwrap();
        replica.receive(&chunk.hash, &bytes).unwrap();
    }
    replica.apply().unwrap();
    assert_eq!(on_disk(&replica), describe(&target));
    assert!(replica.target().is_none());
}

/// Receives what `plan` asks for from `pair`'s source: a chunk with a prefix as its rest.
fn receive_planned(pair: &Pair, replica: &mut ReplicaVolume, plan: &Plan) {
    for chunk in &plan.fetch {
        let bytes = pair.source.read_chunk(&chunk.hash).unwrap();
        match plan.prefixes.get(&chunk.hash) {
            Some(prefix) => {
                let rest = &bytes[prefix.chunk.len as usize..];
                replica.receive_rest(&chunk.hash, rest).unwrap();
            }
            None => replica.receive(&chunk.hash, &bytes).unwrap(),
        }
    }
}

#[test]
fn an_append_is_rebuilt_from_the_old_last_chunk_and_the_rest_even_after_a_restart() {
    let mut pair = Pair::new("append");
    let old = random(3 << 20, 30);
    write_old(&pair.src(), "log.bin", &old);
    let mut replica = pair.open();
    pair.mirror(&mut replica);

    let mut new = old.clone();
    new.extend_from_slice(&random(300_000, 31));
    write_old(&pair.src(), "log.bin", &new);
    let target = pair.manifest();
    let plan = replica.begin(target.clone()).unwrap();
    assert_eq!(plan.fetch_bytes, 300_000, "only the appended bytes");
    assert_eq!(plan.reuse_bytes, 3 << 20);
    assert_eq!(plan.prefixes.len(), 1);
    // A rest for a chunk the plan fetches whole is not taken.
    let whole = plan
        .fetch
        .iter()
        .find(|c| !plan.prefixes.contains_key(&c.hash))
        .unwrap();
    assert!(matches!(
        replica.receive_rest(&whole.hash, b"x"),
        Err(ReceiveError::NoPrefix(_))
    ));

    // Stopped before the rest arrived (the edge restarts): the resumed plan asks for
    // it from the same offset again.
    drop(replica);
    let mut replica = pair.open();
    let resumed = replica.plan().unwrap();
    assert_eq!(resumed.prefixes, plan.prefixes);
    assert_eq!(resumed.fetch_bytes, plan.fetch_bytes);
    receive_planned(&pair, &mut replica, &resumed);
    assert_eq!(replica.missing(), 0);
    replica.apply().unwrap();
    assert_eq!(on_disk(&replica), describe(&target));
    assert_eq!(
        fs::read(replica.current_dir().join("log.bin")).unwrap(),
        new
    );
}

#[test]
fn a_prefix_that_is_not_the_chunk_start_falls_back_to_the_whole_chunk() {
    let mut pair = Pair::new("prefix");
    let (a, b) = (random(2 << 20, 32), random(1 << 20, 33));
    write_old(&pair.src(), "a.bin", &a);
    write_old(&pair.src(), "b.bin", &b);
    let mut replica = pair.open();
    pair.mirror(&mut replica);

    // a.bin: its last byte rewritten, then appended to. The chunks before its last one
    // are the same, so the plan takes its old last chunk for the new one's start; the
    // rebuilt chunk fails its hash.
    let mut a2 = a.clone();
    *a2.last_mut().unwrap() ^= 0xff;
    a2.extend_from_slice(&random(200_000, 34));
    // b.bin: a plain append, but its old last chunk rotted on the edge's disk.
    let mut b2 = b.clone();
    b2.extend_from_slice(&random(200_000, 35));
    write_old(&pair.src(), "a.bin", &a2);
    write_old(&pair.src(), "b.bin", &b2);
    let target = pair.manifest();
    let plan = replica.begin(target.clone()).unwrap();
    assert_eq!(plan.prefixes.len(), 2, "{:?}", plan.prefixes);
    let b_old = replica.current_dir().join("b.bin");
    fs::set_permissions(&b_old, fs::Permissions::from_mode(0o644)).unwrap();
    let mut rotten = fs::read(&b_old).unwrap();
    *rotten.last_mut().unwrap() ^= 0xff;
    fs::write(&b_old, &rotten).unwrap();

    let wanted = replica.missing();
    for (hash, prefix) in &plan.prefixes {
        let bytes = pair.source.read_chunk(hash).unwrap();
        let got = replica.receive_rest(hash, &bytes[prefix.chunk.len as usize..]);
        match prefix.path.as_str() {
            "a.bin" => assert!(
                matches!(
                    got,
                    Err(ReceiveError::Spool(SpoolError::HashMismatch { .. }))
                ),
                "{got:?}"
            ),
            _ => assert!(matches!(got, Err(ReceiveError::Prefix { .. })), "{got:?}"),
        }
    }
    assert_eq!(
        replica.missing(),
        wanted,
        "both still wanted, nothing spooled"
    );
    // Fetched whole, they complete the mirror, verified.
    for chunk in &plan.fetch {
        let bytes = pair.source.read_chunk(&chunk.hash).unwrap();
        replica.receive(&chunk.hash, &bytes).unwrap();
    }
    replica.apply().unwrap();
    assert_eq!(on_disk(&replica), describe(&target));
    assert_eq!(fs::read(replica.current_dir().join("a.bin")).unwrap(), a2);
    assert_eq!(fs::read(replica.current_dir().join("b.bin")).unwrap(), b2);
}

#[test]
fn corrupted_and_unasked_chunks_are_refused() {
    let mut pair = Pair::new("corrupt");
    fill(&pair.src());
    let mut replica = pair.open();
    let plan = replica.begin(pair.manifest()).unwrap();
    let chunk = plan.fetch[0];
    let mut bytes = pair.source.read_chunk(&chunk.hash).unwrap();
    bytes[0] ^= 0xff;
    assert!(matches!(
        replica.receive(&chunk.hash, &bytes),
        Err(ReceiveError::Spool(SpoolError::HashMismatch { .. }))
    ));
    assert_eq!(replica.missing(), plan.fetch.len(), "still wanted");
    assert!(matches!(
        replica.receive(&Hash::of(b"x"), b"x"),
        Err(ReceiveError::NotWanted(_))
    ));

    // A spooled chunk damaged on disk is caught at apply, never published, and wanted
    // again.
    for c in &plan.fetch {
        let bytes = pair.source.read_chunk(&c.hash).unwrap();
        replica.receive(&c.hash, &bytes).unwrap();
    }
    replica.sync().unwrap();
    let victim = plan.fetch[1].hash;
    fs::write(
        pair.edge().join("spool/chunks").join(victim.to_string()),
        b"rot",
    )
    .unwrap();
    assert!(matches!(replica.apply(), Err(ApplyError::Chunk { .. })));
    assert!(on_disk(&replica).is_empty());
    assert_eq!(replica.missing(), 1);
    let bytes = pair.source.read_chunk(&victim).unwrap();
    replica.receive(&victim, &bytes).unwrap();
    replica.apply().unwrap();
}

#[test]
fn bad_manifests_are_refused_and_change_nothing() {
    let mut pair = Pair::new("bad");
    fill(&pair.src());
    let mut replica = pair.open();
    let (_, good) = pair.mirror(&mut replica);
    let before = on_disk(&replica);

    let evil_path = |path: &str| Entry {
        path: codec::decode(&codec::encode(path), "path").unwrap(),
        node: Node::Dir { mode: 0o755 },
    };
    let mut cases: Vec<(Manifest, &str)> = Vec::new();
    for (path, rule) in [
        ("../escape", "`.` or `..` component"),
        ("/etc", "absolute path"),
        ("a//b", "empty component"),
        ("nul\0", "NUL byte"),
        ("..\\..\\x", "backslash"),
    ] {
        let mut m = good.clone();
        m.entries.insert(0, evil_path(path));
        cases.push((m, rule));
    }
    let mut link_out = good.clone();
    link_out.entries.push(Entry {
        path: RelPath::new("zz").unwrap(),
        node: Node::Symlink {
            target: "../../etc/passwd".into(),
        },
    });
    cases.push((link_out, "target escapes"));
    let mut dup = good.clone();
    dup.entries.push(dup.entries.last().unwrap().clone());
    cases.push((dup, "listed twice"));
    let mut case = good.clone();
    case.entries.push(Entry {
        path: RelPath::new("TOOL.SH").unwrap(),
        node: Node::Dir { mode: 0o755 },
    });
    case.entries.sort_by(|a, b| a.path.cmp(&b.path));
    cases.push((case, "collides with"));
    let mut lying = good.clone();
    for e in &mut lying.entries {
        if let Node::File(f) = &mut e.node
            && f.size > 0
        {
            f.size += 1;
        }
    }
    cases.push((lying, "do not add up"));

    for (manifest, rule) in cases {
        // As bytes from the peer, and as a value.
        let bytes = manifest.encode();
        let err = Manifest::decode(&bytes, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains(rule), "{err} lacks {rule}");
        let err = replica.begin(manifest).unwrap_err();
        assert!(err.to_string().contains(rule), "{err} lacks {rule}");
        assert!(replica.target().is_none());
        assert!(!pair.edge().join("target.manifest").exists());
        assert_eq!(on_disk(&replica), before);
    }

    // Over a size limit.
    drop(replica);
    let tight = Limits {
        max_file_size: 1 << 20,
        ..Limits::default()
    };
    let mut replica = ReplicaVolume::open(&pair.edge(), tight).unwrap();
    let err = replica.begin(good).unwrap_err().to_string();
    assert!(
        err.contains("images/big.bin") && err.contains("over the limit"),
        "{err}"
    );
}

#[test]
fn a_full_disk_fails_cleanly_and_keeps_the_previous_version() {
    let mut pair = Pair::new("full");
    write_old(&pair.src(), "a", b"first");
    let mut replica = pair.open();
    pair.mirror(&mut replica);
    let before = on_disk(&replica);

    fill(&pair.src());
    let (_, target) = pair.fetch(&mut replica);
    let mut writes = 0;
    let mut full = |at: ApplyStep<'_>| {
        if matches!(at, ApplyStep::Write { .. }) {
            writes += 1;
            if writes == 3 {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
        }
        Ok(())
    };
    let err = replica.apply_with(&mut full).unwrap_err();
    assert!(matches!(err, ApplyError::DiskFull { .. }), "{err}");
    assert_eq!(on_disk(&replica), before);
    assert!(
        fs::read_dir(pair.edge().join("staging"))
            .unwrap()
            .next()
            .is_none()
    );

    // Space again: the same mirror completes from the spool, nothing fetched.
    assert_eq!(replica.missing(), 0);
    replica.apply().unwrap();
    assert_eq!(on_disk(&replica), describe(&target));
}

#[test]
fn a_stop_at_any_step_leaves_the_old_or_the_new_version() {
    let mut pair = Pair::new("steps");
    fill(&pair.src());
    let mut replica = pair.open();
    let (_, old) = pair.mirror(&mut replica);
    drop(replica);
    let src = pair.src();
    fs::remove_file(src.join("docs/readme.txt")).unwrap();
    write_old(&src, "images/big.bin", &random(3 << 20, 77));
    write_old(&src, "more/new", b"new");
    let new = pair.manifest();
    let (old, new) = (describe(&old), describe(&new));

    let mut stop_at = 0;
    loop {
        let mut replica = pair.open();
        assert_eq!(on_disk(&replica), old, "after reopen, step {stop_at}");
        pair.fetch(&mut replica);
        let mut steps = 0;
        let mut committed = false;
        let result = replica.apply_with(&mut |at| {
            committed |= matches!(at, ApplyStep::Clean);
            steps += 1;
            if steps == stop_at + 1 {
                return Err(io::Error::other("stopped"));
            }
            Ok(())
        });
        let tree = on_disk(&replica);
        match result {
            Ok(_) => {
                assert_eq!(tree, new);
                break;
            }
            Err(_) if committed => assert_eq!(tree, new, "stopped after the commit"),
            Err(_) => assert_eq!(tree, old, "stopped at step {stop_at}"),
        }
        // A stop is a crash: reopen recovers to exactly one of the two.
        drop(replica);
        let reopened = pair.open();
        let tree = on_disk(&reopened);
        assert!(
            tree == old || tree == new,
            "mixed tree after step {stop_at}"
        );
        if tree == new {
            // Committed: every later step is cleaning up.
            break;
        }
        stop_at += 1;
    }
    assert!(stop_at > 10, "only {stop_at} steps tried");
}
