//! Partitions between in-process nodes, injected with the cluster's fault table
//! (`common::faults`): an isolated leader and an isolated minority. What must hold: no
//! acknowledged write is lost, a node cut off from the quorum never acknowledges a write or
//! serves a linearizable read, and a healed node catches up.

mod common;

use std::time::Duration;

use common::{TestCluster, eventually, settings_with_refresh};
use monsys::cluster::links::Link;

/// The leader the nodes `of` agree on, if they all name the same one.
fn leader_among(c: &TestCluster, of: &[usize]) -> Option<u64> {
    let mut leaders = of.iter().map(|i| c.nodes[*i].hub().replica.raft_metrics().current_leader);
    let first = leaders.next()??;
    leaders.all(|l| l == Some(first)).then_some(first)
}

/// Node `i`'s own applied settings (a local read, no forwarding).
async fn local_refresh(c: &TestCluster, i: usize) -> (u64, u64) {
    let (status, doc) = c.get(i, "/api/v1/settings?consistency=local").await;
    assert_eq!(status, 200, "{doc}");
    (doc["revision"].as_u64().unwrap(), doc["settings"]["refresh_interval_secs"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_leader_is_replaced_and_acknowledges_nothing() {
    let c = TestCluster::start(3).await;
    let old = c.wait_leader().await;
    let old_id = c.nodes[old].id();
    let rest: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    assert_eq!(c.put_refresh(old, 11).await.0, 200);

    c.faults.partition(&c.addrs(&[old]), &c.addrs(&rest));
    let new_id = eventually("the majority to elect another leader", Duration::from_secs(20), || async {
        leader_among(&c, &rest).filter(|l| *l != old_id)
    })
    .await;
    let (status, doc) = c.put_refresh(rest[0], 22).await;
    assert_eq!(status, 200, "a write through the majority: {doc}");
    assert_eq!(doc["revision"], 2);

    // the old leader cannot reach a quorum: no linearizable read, no acknowledged write
    let (status, doc) = c.get(old, "/api/v1/settings").await;
    assert_eq!(status, 503, "a linearizable read at the cut-off leader: {doc}");
    let (status, doc) = c.put_settings(old, &settings_with_refresh(33), None).await;
    assert!(status == 503 || status == 504, "a write at the cut-off leader answered {status}: {doc}");
    assert_eq!(local_refresh(&c, old).await, (1, 11), "the cut-off leader applied nothing new");

    c.faults.heal();
    eventually(
        "every node to follow the new leader and apply its write",
        Duration::from_secs(20),
        || async {
            let mut done = leader_among(&c, &[0, 1, 2]).is_some_and(|l| l != old_id);
            for i in 0..3 {
                done &= local_refresh(&c, i).await == (2, 22);
            }
            done.then_some(())
        },
    )
    .await;
    let (status, doc) = c.get(old, "/api/v1/settings").await;
    assert_eq!(
        (status, doc["revision"].as_u64()),
        (200, Some(2)),
        "the write the cut-off leader took was never applied: {doc}"
    );
    assert_ne!(new_id, old_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_partition_refuses_writes_and_catches_up_after_healing() {
    let c = TestCluster::start(3).await;
    let cut = c.follower().await;
    let majority: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
    c.faults.partition(&c.addrs(&[cut]), &c.addrs(&majority));

    for (n, i) in majority.iter().cycle().take(6).enumerate() {
        let (status, doc) = c.put_refresh(*i, 100 + n as u32).await;
        assert_eq!(status, 200, "write {n} through node {i} of the majority: {doc}");
    }
    // the cut-off node cannot reach the leader: certainly not applied, and said at once
    let started = std::time::Instant::now();
    let (status, doc) = c.put_settings(cut, &settings_with_refresh(7), None).await;
    assert_eq!(status, 503, "a write through the minority: {doc}");
    assert!(started.elapsed() < Duration::from_secs(5), "refused without waiting out a timeout");
    let (status, doc) = c.get(cut, "/api/v1/settings").await;
    assert_eq!(status, 503, "a linearizable read through the minority: {doc}");
    assert_eq!(local_refresh(&c, cut).await, (0, 15), "the minority saw none of the writes");

    c.faults.heal();
    eventually("the healed node to catch up", Duration::from_secs(20), || async {
        (local_refresh(&c, cut).await == (6, 105)).then_some(())
    })
    .await;
    let (status, doc) = c.get(cut, "/api/v1/settings").await;
    assert_eq!((status, doc["revision"].as_u64()), (200, Some(6)), "{doc}");
}

#[test]
fn a_partition_cuts_both_ways_and_heals() {
    let f = common::faults::Faults::default();
    let (a, b, c) = ("a:1".to_string(), "b:2".to_string(), "c:3".to_string());
    f.partition(std::slice::from_ref(&a), std::slice::from_ref(&b));
    f.delay(&a, &c, Duration::from_millis(5));
    assert_eq!(f.links_of(&a).link(&b), Link::Down);
    assert_eq!(f.links_of(&b).link(&a), Link::Down);
    assert_eq!(f.links_of(&a).link(&c), Link::Slow(Duration::from_millis(5)));
    assert_eq!(f.links_of(&c).link(&a), Link::Up);
    f.drop_messages(&c, &b, 1.0);
    assert_eq!(f.links_of(&c).link(&b), Link::Down);
    f.heal();
    assert_eq!(f.links_of(&a).link(&b), Link::Up);
}
