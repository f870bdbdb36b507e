//! Volume mirroring end to end (issue 5): a real core serving its mission volume and a
//! real edge mirroring it over QUIC (`protocol::link::Mirror`), directly on loopback or
//! through the link emulator where the link matters (the outage).
//!
//! Each test changes the core's volume, waits until the core's watcher has seen the
//! change (`MirrorSource::settled`, woken by the watcher's events), presses "Mirror"
//! (`Mirror::start`) and waits on the mirror's status watch for the end of the run; then
//! it compares the edge's `current` tree with the volume, file by file, and checks what
//! crossed. Nothing sleeps to wait for an event; data is a few MB at most.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use protocol::link::{MAX_REFETCH, Mirror, MirrorSettings};
use protocol::mirror::{
    ChunkParams, ChunkTable, Limits, Manifest, ManifestAssembly, MirrorFrame, MirrorState,
    MirrorStatus,
};
use protocol::tls;
use protocol::wire::{Frame, FrameReader, Hello, encode, encode_value};
use tests::Rng;
use tests::cluster::{Cluster, mirror_finished, name, wait_link};
use tests::emulator::{Link, Profile};

/// How long one mirror run may take before the test fails (a few MB on loopback).
const PATIENCE: Duration = Duration::from_secs(60);

async fn mirroring(settings: MirrorSettings) -> Cluster {
    let transport = tls::transport_config(tls::Timeouts::default());
    let (cluster, _) = Cluster::start_mirroring("alpha", None, None, settings, transport)
        .await
        .unwrap();
    cluster
}

fn mirror(cluster: &Cluster) -> &Mirror {
    cluster.edge("alpha").mirror.as_ref().unwrap()
}

/// `len` pseudo-random bytes from `seed` (incompressible, as images are).
fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    Rng::new(seed).fill(&mut buf);
    buf
}

fn put(volume: &Path, path: &str, bytes: &[u8]) {
    let path = volume.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Waits until the core's watcher saw every change to its volume.
async fn settle(cluster: &Cluster) {
    let source = cluster.core.source.as_ref().unwrap();
    source.settled(PATIENCE).await.unwrap();
}

/// Presses "Mirror" once the volume is settled and waits for the run to end; returns
/// the status and the run's bytes on the link (mirror stream, both ways).
async fn mirror_now(cluster: &Cluster) -> (MirrorStatus, u64) {
    settle(cluster).await;
    let mirror = mirror(cluster);
    let before = mirror.status().bytes_on_link;
    mirror.start().unwrap();
    let status = mirror_finished(mirror, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes = status.bytes_on_link - before;
    (status, bytes)
}

/// Every path under `dir`: files with their bytes, directories as `None`.
fn tree(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The edge's `current` equals the core's volume.
fn assert_mirrored(cluster: &Cluster, context: &str) {
    let (core, edge) = (
        tree(&cluster.volume()),
        tree(&mirror(cluster).current_dir()),
    );
    assert!(
        core == edge,
        "{context}: the mirror differs from the volume: core {:?}, edge {:?}",
        core.keys().collect::<Vec<_>>(),
        edge.keys().collect::<Vec<_>>()
    );
}

fn assert_done(status: &MirrorStatus, context: &str) {
    assert_eq!(status.state, MirrorState::Done, "{context}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_mirror_copies_the_volume_and_no_change_costs_almost_nothing() {
    let cluster = mirroring(MirrorSettings::default()).await;
    let volume = cluster.volume();
    put(&volume, "maps/sector-7.tif", &random(1, 1_500_000));
    put(&volume, "maps/sector-8.tif", &random(2, 300_000));
    put(&volume, "briefing.txt", b"proceed to the ridge at dawn\n");
    put(&volume, "empty.bin", b"");
    std::fs::create_dir_all(volume.join("inbox/empty")).unwrap();
    // A mirror runs only when asked: nothing has crossed yet.
    assert_eq!(mirror(&cluster).status().state, MirrorState::Idle);

    let (first, bytes) = mirror_now(&cluster).await;
    assert_done(&first, "first");
    assert_mirrored(&cluster, "first");
    let payload = 1_800_000 + 29;
    assert_eq!(first.bytes_done, payload, "{first:?}");
    assert!(
        bytes < payload + payload / 50,
        "{bytes} bytes on the link for {payload}"
    );
    assert!(first.last_success.is_some() && first.last_error.is_none());

    let (again, bytes) = mirror_now(&cluster).await;
    assert_done(&again, "no change");
    assert_eq!(again.bytes_todo, 0, "{again:?}");
    assert!(bytes < 1000, "{bytes} bytes on the link for no change");
    assert_mirrored(&cluster, "no change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_inside_a_large_file_and_an_append_cost_a_few_chunks() {
    let cluster = mirroring(MirrorSettings::default()).await;
    let volume = cluster.volume();
    let mut big = random(3, 4 << 20);
    put(&volume, "imagery/mosaic.raw", &big);
    assert_done(&mirror_now(&cluster).await.0, "first");

    // 4 KiB overwritten in the middle: one or two chunks (64 KiB average) change.
    big[2 << 20..(2 << 20) + 4096].copy_from_slice(&random(4, 4096));
    put(&volume, "imagery/mosaic.raw", &big);
    let (edit, bytes) = mirror_now(&cluster).await;
    assert_done(&edit, "edit");
    assert_mirrored(&cluster, "edit");
    assert!(
        edit.bytes_done <= 3 * (256 << 10) && bytes < edit.bytes_done + 4096,
        "an edit of 4 KiB fetched {} bytes, {bytes} on the link",
        edit.bytes_done
    );
    assert!(edit.bytes_reused > 3 << 20, "{edit:?}");

    // 1 MiB appended: only the appended bytes are fetched. The old last chunk, cut at
    // the old end of the file, is the start of a longer chunk now: the edge asks for
    // the rest of that one only and rebuilds it.
    let size = big.len() as u64;
    big.extend_from_slice(&random(5, 1 << 20));
    put(&volume, "imagery/mosaic.raw", &big);
    let (append, bytes) = mirror_now(&cluster).await;
    assert_done(&append, "append");
    assert_mirrored(&cluster, "append");
    assert!(
        append.bytes_done == 1 << 20 && bytes < append.bytes_done * 102 / 100,
        "an append of 1 MiB fetched {} bytes, {bytes} on the link",
        append.bytes_done
    );
    assert_eq!(append.bytes_reused, size, "{append:?}");
    assert_eq!(append.refetched, 0, "{append:?}");

    // The same, with the first chunk bytes the core sends damaged on the way: the rest
    // of the extended chunk, which then fails its hash once rebuilt. The edge fetches
    // that chunk whole, and the mirror ends verified.
    let size = big.len() as u64;
    big.extend_from_slice(&random(6, 300_000));
    put(&volume, "imagery/mosaic.raw", &big);
    cluster.core.source.as_ref().unwrap().corrupt_next(1);
    let (fallback, _) = mirror_now(&cluster).await;
    assert_done(&fallback, "append, rest damaged");
    assert_mirrored(&cluster, "append, rest damaged");
    assert_eq!(fallback.refetched, 1, "{fallback:?}");
    // The prefix counts as fetched, not reused, once the chunk came whole.
    let prefix = fallback.bytes_done - 300_000;
    assert!(prefix > 0 && prefix <= 256 << 10, "{fallback:?}");
    assert_eq!(fallback.bytes_todo, fallback.bytes_done, "{fallback:?}");
    assert_eq!(fallback.bytes_reused, size - prefix, "{fallback:?}");
}

/// What a hostile edge sees of its mirror stream: a frame, the core's reset, or the
/// end.
async fn next_frame(
    recv: &mut quinn::RecvStream,
    reader: &mut FrameReader,
) -> Result<Option<MirrorFrame>, quinn::ReadError> {
    loop {
        if let Some(frame) = reader.next_value::<MirrorFrame>().unwrap() {
            return Ok(Some(frame));
        }
        match recv.read_chunk(64 << 10, true).await? {
            Some(chunk) => reader.push(&chunk.bytes),
            None => return Ok(None),
        }
    }
}

/// Opens a mirror stream on `conn` and reads the core's manifest: the stream, its
/// reader and the manifest.
async fn hostile_start(
    conn: &quinn::Connection,
) -> (quinn::SendStream, quinn::RecvStream, FrameReader, Manifest) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let empty = Manifest::empty(ChunkParams::default());
    let mut bytes = Vec::new();
    let start = MirrorFrame::Start {
        have_root: empty.root(),
        have_version: 0,
        target_root: None,
        max_rate: None,
    };
    encode_value(&start, &mut bytes);
    send.write_all(&bytes).await.unwrap();
    let (mut reader, mut assembly) = (FrameReader::default(), ManifestAssembly::default());
    let limits = Limits::default();
    loop {
        match next_frame(&mut recv, &mut reader).await.unwrap() {
            Some(MirrorFrame::Manifest {
                root,
                base,
                total,
                last,
                bytes,
            }) => {
                if assembly
                    .push(root, base, total, last, &bytes, &limits)
                    .unwrap()
                {
                    break;
                }
            }
            Some(MirrorFrame::ReportEvery { .. }) => {}
            other => panic!("no manifest: {other:?}"),
        }
    }
    let manifest = assembly.finish(&[&empty], &limits).unwrap();
    (send, recv, reader, manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_from_an_offset_past_its_chunk_is_refused_and_the_core_serves_on() {
    let mut cluster = mirroring(MirrorSettings::default()).await;
    let content = random(14, 100_000);
    put(&cluster.volume(), "one.bin", &content);
    settle(&cluster).await;
    // A hostile edge in alpha's place, speaking the protocol by hand.
    cluster.edges.clear();
    let endpoint = Cluster::endpoint_for(cluster.ca(), "alpha").unwrap();
    let peer = tls::connect(&endpoint, cluster.core_addr(), &name("hq"))
        .await
        .unwrap();
    let conn = peer.connection;
    let (mut control, mut control_recv) = conn.open_bi().await.unwrap();
    let mut bytes = Vec::new();
    let hello = Frame::Hello(Hello {
        incarnation: 1,
        closed: vec![],
        version: protocol::wire::VERSION,
        node: name("alpha"),
        core: false,
        topics: Vec::new(),
        clock_ms: 0,
    });
    encode(&hello, &mut bytes);
    control.write_all(&bytes).await.unwrap();
    let mut control_reader = FrameReader::default();
    loop {
        let chunk = control_recv.read_chunk(4096, true).await.unwrap().unwrap();
        control_reader.push(&chunk.bytes);
        if let Some(frame) = control_reader.next_value::<Frame>().unwrap() {
            assert!(matches!(frame, Frame::Hello(_)), "{frame:?}");
            break;
        }
    }

    // The first chunk of the file, from its last byte on, then from its end.
    let (mut send, mut recv, mut reader, manifest) = hostile_start(&conn).await;
    let first = ChunkTable::new(&manifest).get(&manifest, 0).unwrap();
    let fetch = |offset: u32| {
        let mut bytes = Vec::new();
        let frame = MirrorFrame::FetchFrom {
            runs: vec![(0, 1)],
            from: vec![(0, offset)],
        };
        encode_value(&frame, &mut bytes);
        bytes
    };
    send.write_all(&fetch(first.len - 1)).await.unwrap();
    let last_byte = loop {
        match next_frame(&mut recv, &mut reader).await.unwrap() {
            Some(MirrorFrame::Data { bytes }) => break bytes,
            Some(MirrorFrame::ReportEvery { .. }) => {}
            other => panic!("no data: {other:?}"),
        }
    };
    assert_eq!(
        last_byte,
        content[first.len as usize - 1..first.len as usize]
    );
    send.write_all(&fetch(first.len)).await.unwrap();
    let refused = loop {
        match next_frame(&mut recv, &mut reader).await {
            Ok(Some(MirrorFrame::ReportEvery { .. })) => {}
            other => break other,
        }
    };
    assert!(
        matches!(refused, Err(quinn::ReadError::Reset(_))),
        "the core served an offset past its chunk: {refused:?}"
    );

    // The session goes on: a new stream is served, from an offset inside the chunk.
    let (mut send, mut recv, mut reader, _) = hostile_start(&conn).await;
    send.write_all(&fetch(1000)).await.unwrap();
    let rest = loop {
        match next_frame(&mut recv, &mut reader).await.unwrap() {
            Some(MirrorFrame::Data { bytes }) => break bytes,
            Some(MirrorFrame::ReportEvery { .. }) => {}
            other => panic!("no data: {other:?}"),
        }
    };
    assert_eq!(rest, content[1000..first.len as usize]);
    assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_in_the_middle_of_a_large_file_costs_a_few_chunks() {
    let cluster = mirroring(MirrorSettings::default()).await;
    let volume = cluster.volume();
    let big = random(11, 4 << 20);
    put(&volume, "imagery/strip.raw", &big);
    assert_done(&mirror_now(&cluster).await.0, "first");

    // 1 KiB inserted in the middle: every byte after it moves, yet content-defined
    // boundaries resynchronise within a chunk or two.
    let middle = big.len() / 2;
    let mut inserted = big[..middle].to_vec();
    inserted.extend_from_slice(&random(12, 1024));
    inserted.extend_from_slice(&big[middle..]);
    put(&volume, "imagery/strip.raw", &inserted);
    let (insert, bytes) = mirror_now(&cluster).await;
    assert_done(&insert, "insert");
    assert_mirrored(&cluster, "insert");
    assert!(
        insert.bytes_done <= 3 * (256 << 10) && bytes < insert.bytes_done + 4096,
        "an insert of 1 KiB fetched {} bytes, {bytes} on the link",
        insert.bytes_done
    );
    assert!(insert.bytes_reused > 3 << 20, "{insert:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_cut_by_an_edge_restart_resumes_by_itself_without_resending() {
    // The core caps chunks at 1 MB/s, so that the restart lands mid-run.
    let (mut cluster, _) = Cluster::start_mirroring(
        "alpha",
        None,
        Some(1_000_000),
        MirrorSettings::default(),
        tls::transport_config(tls::Timeouts::default()),
    )
    .await
    .unwrap();
    let volume = cluster.volume();
    let payload = 3_000_000u64;
    put(&volume, "video/patrol.mp4", &random(13, payload as usize));
    settle(&cluster).await;
    mirror(&cluster).start().unwrap();
    let mut watch = mirror(&cluster).watch();
    let half = tokio::time::timeout(
        PATIENCE,
        watch.wait_for(|s| s.bytes_todo > 0 && s.bytes_done * 2 >= s.bytes_todo),
    )
    .await;
    assert!(
        half.is_ok(),
        "never half way: {:?}",
        mirror(&cluster).status()
    );
    drop(half);
    drop(watch);
    let before = mirror(&cluster).status();
    assert!(before.bytes_done < payload, "{before:?}");

    // The edge node stops (links cut, store closed, mirror task gone) and starts again
    // on the same directories; nobody presses "Mirror" again.
    cluster.restart_edge("alpha").await.unwrap();
    let restarted = mirror(&cluster).status();
    assert_eq!(restarted.state, MirrorState::Interrupted, "{restarted:?}");
    assert!(
        mirror(&cluster).started(),
        "the operator's start was forgotten"
    );

    let done = mirror_finished(mirror(&cluster), PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_done(&done, "resumed after the restart");
    assert_mirrored(&cluster, "resumed after the restart");
    // Only what was not verified before the restart was planned and fetched again.
    let left = payload - before.bytes_done;
    assert!(
        done.bytes_todo <= left && done.bytes_done == done.bytes_todo,
        "{} bytes verified before the restart, then {done:?}",
        before.bytes_done
    );
    assert!(
        done.bytes_on_link < left + left / 50 + 8192,
        "{} bytes on the link after the restart for {left} left of {payload}",
        done.bytes_on_link
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_directory_costs_no_chunk_and_deletions_are_mirrored() {
    let cluster = mirroring(MirrorSettings::default()).await;
    let volume = cluster.volume();
    for i in 0..30 {
        put(
            &volume,
            &format!("survey/day1/photo-{i:03}.jpg"),
            &random(100 + i, 20_000),
        );
    }
    put(&volume, "notes/keep.txt", b"keep");
    put(&volume, "notes/drop.txt", b"drop");
    assert_done(&mirror_now(&cluster).await.0, "first");

    std::fs::create_dir_all(volume.join("archive")).unwrap();
    std::fs::rename(volume.join("survey/day1"), volume.join("archive/day1")).unwrap();
    let (moved, bytes) = mirror_now(&cluster).await;
    assert_done(&moved, "move");
    assert_mirrored(&cluster, "move");
    assert_eq!(moved.bytes_todo, 0, "a move fetched chunks: {moved:?}");
    assert!(
        bytes < 8_000,
        "{bytes} bytes on the link for a move of 30 files"
    );

    std::fs::remove_file(volume.join("notes/drop.txt")).unwrap();
    std::fs::remove_dir_all(volume.join("archive")).unwrap();
    let (deleted, _) = mirror_now(&cluster).await;
    assert_done(&deleted, "deletions");
    assert_mirrored(&cluster, "deletions");
    assert_eq!(deleted.bytes_todo, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_travel_batched() {
    let cluster = mirroring(MirrorSettings::default()).await;
    let volume = cluster.volume();
    let (files, size) = (800u64, 4096usize);
    for i in 0..files {
        put(
            &volume,
            &format!("cards/{:02}/card-{i:04}.bin", i % 16),
            &random(1000 + i, size),
        );
    }
    let payload = files * size as u64;
    let (status, bytes) = mirror_now(&cluster).await;
    assert_done(&status, "small files");
    assert_mirrored(&cluster, "small files");
    assert_eq!(status.bytes_done, payload);
    // Chunk framing (~40 B each), requests (32 B per chunk) and the manifest (~100 B per
    // file): under 5 % of 4 KiB files.
    assert!(
        bytes <= payload * 105 / 100,
        "{bytes} bytes on the link for {payload} bytes in {files} files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_at_half_interrupts_and_the_mirror_resumes_without_resending() {
    // A capped mirror (1 MB/s at the core) through the emulator, the edge's QUIC idle
    // timeout cut to 3 s so that an outage ends the connection: the run is interrupted
    // and resumes on the next one by itself.
    let transport = tls::transport_config(tls::Timeouts {
        keep_alive: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(3),
    });
    let (cluster, relay) = Cluster::start_mirroring(
        "alpha",
        Some(Profile::named("lan").unwrap()),
        Some(1_000_000),
        MirrorSettings::default(),
        transport,
    )
    .await
    .unwrap();
    let relay: Link = relay.unwrap();
    let volume = cluster.volume();
    let payload = 3_000_000u64;
    put(&volume, "video/recon.mp4", &random(7, payload as usize));
    settle(&cluster).await;
    let mirror = mirror(&cluster);
    mirror.start().unwrap();

    let mut watch = mirror.watch();
    let half = tokio::time::timeout(
        PATIENCE,
        watch.wait_for(|s| s.bytes_todo > 0 && s.bytes_done * 2 >= s.bytes_todo),
    )
    .await;
    assert!(half.is_ok(), "never half way: {:?}", mirror.status());
    drop(half);
    relay.down();
    let interrupted = tokio::time::timeout(
        PATIENCE,
        watch.wait_for(|s| s.state == MirrorState::Interrupted),
    )
    .await;
    assert!(
        interrupted.is_ok(),
        "not interrupted: {:?}",
        mirror.status()
    );
    drop(interrupted);
    let before = mirror.status();
    assert!(before.bytes_done < payload, "{before:?}");
    wait_link(
        &cluster.core.link("alpha"),
        "down at the core",
        PATIENCE,
        |s| !s.connected,
    )
    .await
    .unwrap();
    relay.up();

    let done = mirror_finished(mirror, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_done(&done, "resumed");
    assert_mirrored(&cluster, "resumed");
    // What was verified before the outage was not planned again.
    assert_eq!(done.bytes_todo, payload, "{done:?}");
    assert_eq!(done.bytes_done, payload, "{done:?}");
    let counters = relay.counters();
    let delivered = counters.c2e.delivered.bytes;
    assert!(
        delivered < payload + payload / 10,
        "{delivered} bytes delivered to the edge for {payload}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_chunk_is_refetched_and_never_published() {
    let cluster = mirroring(MirrorSettings::default()).await;
    let volume = cluster.volume();
    put(&volume, "a.bin", &random(8, 600_000));
    let source = cluster.core.source.as_ref().unwrap();

    source.corrupt_next(2);
    let (status, _) = mirror_now(&cluster).await;
    assert_done(&status, "corrupted twice");
    assert_eq!(status.refetched, 2, "{status:?}");
    assert_mirrored(&cluster, "corrupted twice");

    // A chunk that keeps arriving damaged fails the mirror; the old state stays.
    let old = tree(&mirror(&cluster).current_dir());
    // One chunk (under the chunker's 16 KiB minimum), damaged every time.
    put(&volume, "b.bin", &random(9, 10_000));
    source.corrupt_next(MAX_REFETCH + 1);
    let (status, _) = mirror_now(&cluster).await;
    assert_eq!(status.state, MirrorState::Failed, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("failed its hash"),
        "{status:?}"
    );
    assert_eq!(tree(&mirror(&cluster).current_dir()), old);
    // The next mirror completes.
    let (status, _) = mirror_now(&cluster).await;
    assert_done(&status, "after the failure");
    assert_mirrored(&cluster, "after the failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_manifest_is_refused_with_nothing_lost() {
    let settings = MirrorSettings {
        limits: Limits {
            max_file_size: 1 << 20,
            ..Limits::default()
        },
        ..MirrorSettings::default()
    };
    let cluster = mirroring(settings).await;
    let volume = cluster.volume();
    put(&volume, "ok.txt", b"fine");
    assert_done(&mirror_now(&cluster).await.0, "first");
    let good = tree(&mirror(&cluster).current_dir());

    // A file over the edge's limit.
    put(&volume, "huge.bin", &random(10, 2 << 20));
    let (status, _) = mirror_now(&cluster).await;
    assert_eq!(status.state, MirrorState::Failed, "{status:?}");
    let error = status.last_error.clone().unwrap_or_default();
    assert!(error.contains("huge.bin"), "{error}");
    assert_eq!(tree(&mirror(&cluster).current_dir()), good);

    // Names equal but for case (an exFAT card at the edge would merge them).
    std::fs::remove_file(volume.join("huge.bin")).unwrap();
    put(&volume, "Report.txt", b"one");
    put(&volume, "REPORT.txt", b"two");
    let (status, _) = mirror_now(&cluster).await;
    assert_eq!(status.state, MirrorState::Failed, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("REPORT.txt"),
        "{status:?}"
    );
    assert_eq!(tree(&mirror(&cluster).current_dir()), good);

    std::fs::remove_file(volume.join("REPORT.txt")).unwrap();
    let (status, _) = mirror_now(&cluster).await;
    assert_done(&status, "fixed");
    assert_mirrored(&cluster, "fixed");
}
