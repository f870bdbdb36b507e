//! Replication over real QUIC on 127.0.0.1 between a core and edges (issue 3).

use std::collections::HashMap;
use std::time::Duration;

use protocol::entry::{Append, NodeName, Record, Scope};
use protocol::log::Store;
use tests::cluster::{Cluster, all, name, topic, wait_for_count};

const PATIENCE: Duration = Duration::from_secs(30);

/// Checks that `records` hold each identity once and each origin's sequences in order.
fn check_once_in_order(records: &[Record]) -> HashMap<NodeName, u64> {
    let mut last: HashMap<NodeName, u64> = HashMap::new();
    for r in records {
        let seen = last.entry(r.entry.id.origin.clone()).or_default();
        assert!(r.entry.id.seq.0 > *seen, "{:?} after seq {seen}: a duplicate or out of order", r.entry.id);
        *seen = r.entry.id.seq.0;
    }
    last
}

async fn append_n(store: &Store, t: &str, n: usize, to: Option<&str>) {
    for i in 0..n {
        let mut a = Append::new(format!("{} {i}", store.node()));
        if let Some(to) = to {
            a = a.to(name(to));
        }
        store.append(&topic(t), a).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_and_two_edges_converge_by_scope_and_destination() {
    let topics = [("broadcast", Scope::All), ("reports", Scope::Core), ("scratch", Scope::Local)];
    let cluster = Cluster::start(&["alpha", "bravo"], &topics).await.unwrap();
    let (hq, alpha, bravo) = (&cluster.core.store, &cluster.edge("alpha").store, &cluster.edge("bravo").store);

    // Every node appends to every topic; the core also sends one private entry to alpha.
    for store in [hq, alpha, bravo] {
        append_n(store, "broadcast", 50, None).await;
        append_n(store, "reports", 20, None).await;
        append_n(store, "scratch", 5, None).await;
    }
    append_n(hq, "broadcast", 3, Some("alpha")).await;
    append_n(alpha, "broadcast", 2, Some("bravo")).await;

    // all: everything everywhere, except private entries: only at their origin, their
    // destination and the core. core: the core gets every edge's reports; edges keep their own only.
    let b = topic("broadcast");
    wait_for_count(hq, &b, 150 + 3 + 2, PATIENCE).await.unwrap();
    wait_for_count(alpha, &b, 150 + 3 + 2, PATIENCE).await.unwrap();
    wait_for_count(bravo, &b, 150 + 2, PATIENCE).await.unwrap();
    wait_for_count(hq, &topic("reports"), 60, PATIENCE).await.unwrap();

    for (store, expect) in [(hq, 155), (alpha, 155), (bravo, 152)] {
        let records = all(store, &b);
        assert_eq!(records.len(), expect, "{}", store.node());
        let last = check_once_in_order(&records);
        assert_eq!(last.len(), 3, "three origins at {}", store.node());
        for r in &records {
            if let Some(to) = &r.entry.to {
                let here = store.node();
                let allowed = to == here || here.as_str() == "hq" || r.entry.id.origin == *here;
                assert!(allowed, "{here} holds {:?}, which is for {to}", r.entry.id);
            }
        }
    }
    check_once_in_order(&all(hq, &topic("reports")));
    for edge in [alpha, bravo] {
        let reports = all(edge, &topic("reports"));
        assert_eq!(reports.len(), 20, "{} holds others' reports", edge.node());
        assert!(reports.iter().all(|r| r.entry.id.origin == *edge.node()));
        assert_eq!(all(edge, &topic("scratch")).len(), 5);
    }
    assert_eq!(all(hq, &topic("scratch")).len(), 5);

    // Vectors agree where the entries do.
    let hq_vector = hq.vector(&b).unwrap();
    let alpha_vector = alpha.vector(&b).unwrap();
    assert_eq!(hq_vector.get(&name("bravo")), alpha_vector.get(&name("bravo")));

    // Status: each edge's link to the core is up and has carried entries both ways.
    let status = cluster.edge("alpha").link("hq").status();
    assert!(status.connected);
    assert!(status.topics.iter().any(|t| t.topic == b && t.out && t.entries >= 52));
    assert!(status.topics.iter().any(|t| t.topic == b && !t.out && t.entries >= 101));
}
