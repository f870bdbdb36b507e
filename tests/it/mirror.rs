//! Crash safety of the edge's mirror (issue 5): a child (`mirror-apply`) mirrors tree A,
//! then B, then A, ... into one mirror directory and is killed with SIGKILL at random
//! points of its applies. After every kill, what readers see through `current` must be
//! exactly the empty start, tree A or tree B, never a mix, both before and after the
//! mirror is reopened (recovery).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use protocol::mirror::{ChunkParams, Limits, Manifest, Node, ReplicaVolume, SourceVolume};
use tests::{Rng, TempDir};

/// Kill/reopen rounds; `TETHER_MIRROR_KILL_ROUNDS` sets more for a longer soak.
fn rounds() -> u64 {
    std::env::var("TETHER_MIRROR_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[test]
fn a_killed_apply_leaves_the_old_or_the_new_tree() {
    let seed = std::env::var("TETHER_MIRROR_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(Rng::seed_from_clock);
    eprintln!("mirror kill test seed {seed} (set TETHER_MIRROR_KILL_SEED to replay)");
    let mut rng = Rng::new(seed);
    let dir = TempDir::new("mirror-kill").unwrap();
    let (a, b, edge) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("edge"),
    );
    trees(&a, &b, &mut rng);
    let expected = [vec![], describe_tree(&a), describe_tree(&b)];
    assert_ne!(expected[1], expected[2]);

    let mut seen = [0u32; 3];
    for round in 0..rounds() {
        // Each apply prints about 70 lines; this kills anywhere in the first few applies.
        let kill_after = rng.range(1, 250);
        let mut child = Command::new(env!("CARGO_BIN_EXE_mirror-apply"))
            .args([&edge, &a, &b])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mirror-apply");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut read = 0;
        while read < kill_after {
            if lines.next().is_none() {
                break;
            }
            read += 1;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(
            read, kill_after,
            "round {round}: child stopped early ({status}): {stderr}"
        );

        // What a reader sees now, before any recovery.
        let now = describe_tree(&edge.join("current"));
        let which = expected.iter().position(|e| *e == now);
        assert!(which.is_some(), "round {round}: a mixed tree: {now:?}");
        // And after the mirror is reopened.
        let replica = ReplicaVolume::open(&edge, Limits::default()).unwrap();
        assert_eq!(describe_tree(&replica.current_dir()), now, "round {round}");
        assert_eq!(describe(replica.current()), now, "round {round}");
        seen[which.unwrap_or(0)] += 1;
    }
    eprintln!(
        "{} rounds: empty {}, A {}, B {}",
        rounds(),
        seen[0],
        seen[1],
        seen[2]
    );
    assert!(seen[1] + seen[2] > 0, "no apply ever completed");
}

/// Two trees that share most of their content: B edits a large file, renames a
/// directory, deletes and adds files, and changes a symlink.
fn trees(a: &Path, b: &Path, rng: &mut Rng) {
    let mut big = vec![0u8; 2 << 20];
    rng.fill(&mut big);
    let mut smalls = Vec::new();
    for _ in 0..20 {
        let mut s = vec![0u8; rng.range(0, 20_000) as usize];
        rng.fill(&mut s);
        smalls.push(s);
    }
    for (root, edited) in [(a, false), (b, true)] {
        let mut big = big.clone();
        if edited {
            rng.fill(&mut big[1 << 20..(1 << 20) + 4096]);
        }
        write(root, "media/big.bin", &big);
        let docs = if edited { "papers" } else { "docs" };
        for (i, s) in smalls.iter().enumerate() {
            if edited && i % 5 == 0 {
                continue;
            }
            write(root, &format!("{docs}/s{i:02}"), s);
        }
        if edited {
            write(root, "new/added.txt", b"only in B");
        }
        fs::create_dir_all(root.join("empty")).unwrap();
        let target = if edited { "s01" } else { "s02" };
        symlink(target, root.join(docs).join("link")).unwrap();
    }
}

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A tree as (path, kind and content hash or link target), scanned from disk.
fn describe_tree(root: &Path) -> Vec<(String, String)> {
    let mut volume = SourceVolume::unwatched(root, ChunkParams::default()).unwrap();
    let snapshot = volume.manifest().unwrap();
    assert!(volume.problems().is_empty(), "{:?}", volume.problems());
    describe(&snapshot.manifest)
}

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
