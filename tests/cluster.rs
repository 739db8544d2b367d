//! Cluster-core scenarios on real in-process nodes: replication, failover, snapshot catch-up,
//! full restart, online membership changes.

mod common;

use std::time::Duration;

use common::{ClusterOpts, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_through_follower_is_read_on_every_node() {
    let c = TestCluster::start(3).await;
    let follower = c.follower().await;
    let (status, doc) = c.put_refresh(follower, 42).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["revision"], 1);
    for (i, _) in c.running() {
        let (status, doc) = c.get(i, "/api/v1/settings").await;
        assert_eq!(status, 200, "{doc}");
        assert_eq!(doc["settings"]["refresh_interval_secs"], 42, "linearizable read on node {i}");
    }
    c.wait_for("local reads converge", Duration::from_secs(10), |c| async move {
        let mut all = true;
        for (i, _) in c.running() {
            let (_, doc) = c.get(i, "/api/v1/settings?consistency=local").await;
            all &= doc["settings"]["refresh_interval_secs"] == 42;
        }
        all
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_elects_a_new_one_and_writes_resume() {
    let mut c = TestCluster::start(3).await;
    let old = c.wait_leader().await;
    let old_id = c.nodes[old].id();
    assert_eq!(c.put_refresh(old, 10).await.0, 200);
    c.crash(old).await;
    c.wait_for("a new leader", Duration::from_secs(20), |c| async move {
        c.leader().is_some_and(|l| c.nodes[l].id() != old_id)
    })
    .await;
    for (i, _) in c.running() {
        let (status, doc) = c.put_refresh(i, 20 + i as u32).await;
        assert_eq!(status, 200, "write through survivor {i}: {doc}");
    }
    let (_, doc) = c.get(c.follower().await, "/api/v1/settings").await;
    assert_eq!(doc["revision"], 3, "one write before the crash, two after: {doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_the_purged_log_catches_up_through_a_snapshot() {
    let opts = ClusterOpts { snapshot_every_entries: 20, keep_logs_behind_snapshot: 5, ..Default::default() };
    let mut c = TestCluster::start_with(3, opts).await;
    let lagging = c.follower().await;
    c.crash(lagging).await;
    let writer = c.running().map(|(i, _)| i).next().unwrap();
    // Write until the leader has built a snapshot and purged the log behind it (purging waits
    // while a replication to the stopped node is in flight, so the count is not fixed).
    let mut written = 0;
    let purged = loop {
        written += 1;
        assert_eq!(c.put_refresh(writer, written).await.0, 200);
        let leader = c.wait_leader().await;
        let purged = c.nodes[leader].hub().replica.raft_metrics().purged.map(|l| l.index).unwrap_or(0);
        if written >= 60 && purged > 30 {
            break purged;
        }
        assert!(written < 1000, "leader never purged its log (purged up to {purged})");
    };
    c.restart(lagging).await;
    c.wait_for("lagging node catches up", Duration::from_secs(30), |c| async move {
        let (_, doc) = c.get(lagging, "/api/v1/settings?consistency=local").await;
        doc["revision"] == written
    })
    .await;
    let m = c.nodes[lagging].hub().replica.raft_metrics();
    assert!(m.snapshot.is_some_and(|s| s.index >= purged), "node installed a snapshot: {:?}", m.snapshot);
    let (_, doc) = c.get(lagging, "/api/v1/settings?consistency=local").await;
    assert_eq!(doc["settings"]["refresh_interval_secs"], written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_the_whole_cluster_keeps_every_acknowledged_write() {
    let mut c = TestCluster::start(3).await;
    for v in 1..=25 {
        let i = (v as usize) % 3;
        assert_eq!(c.put_refresh(i, v).await.0, 200);
    }
    for i in 0..3 {
        c.crash(i).await;
    }
    for i in 0..3 {
        c.restart(i).await;
    }
    c.wait_leader().await;
    for i in 0..3 {
        let (status, doc) = c.get(i, "/api/v1/settings").await;
        assert_eq!(status, 200, "{doc}");
        assert_eq!(doc["revision"], 25);
        assert_eq!(doc["settings"]["refresh_interval_secs"], 25);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_and_removing_nodes_online_loses_no_acknowledged_write() {
    let mut c = TestCluster::start(3).await;
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    let http = c.http.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            // `uncertain`: the last answered write after the last ack had an unknown outcome.
            let (mut acked, mut last_acked, mut uncertain) = (0u64, 0u32, false);
            for v in 1..=2000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let url = &urls[(v as usize) % 2]; // nodes 0 and 1 stay members
                let body = common::settings_with_refresh(v % 3000 + 1);
                let resp = http
                    .put(format!("{url}/api/v1/settings"))
                    .bearer_auth(common::TOKEN)
                    .json(&body)
                    .send()
                    .await;
                match resp.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        acked += 1;
                        last_acked = v % 3000 + 1;
                        uncertain = false;
                    }
                    Ok(503) => {}
                    _ => uncertain = true,
                }
            }
            (acked, last_acked, uncertain)
        })
    };
    let new = c.add_node(Some(c.nodes[0].url())).await;
    let new_id = c.nodes[new].id();
    c.wait_for("fourth node is a voter", Duration::from_secs(60), |c| async move {
        c.nodes[0]
            .hub()
            .replica
            .raft_metrics()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == new_id)
    })
    .await;
    let removed_id = c.nodes[2].id();
    let (status, body) = {
        let r = c
            .http
            .delete(format!("{}/api/v1/cluster/members/{removed_id}", c.nodes[1].url()))
            .bearer_auth(common::TOKEN)
            .send()
            .await
            .unwrap();
        common::split(r).await
    };
    assert_eq!(status, 200, "{body}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, last_acked, uncertain) = writer.await.unwrap();
    assert!(acked > 0, "some writes were acknowledged during the changes");
    // the removed node is told: it stops Raft, says so on /ready and will not start again on
    // its old data (it used to campaign for ever with a rising term)
    c.wait_for("the removed node knows it", Duration::from_secs(20), |c| async move {
        let r = c.http.get(format!("{}/api/v1/ready", c.nodes[2].url())).send().await;
        match r {
            Ok(r) => r.text().await.unwrap_or_default().contains("removed from the cluster"),
            Err(_) => false,
        }
    })
    .await;
    c.crash(2).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restarted = monsys::node::start_with_listener(c.nodes[2].config.clone(), listener).await;
    let err = restarted.err().expect("a removed node does not start on its old data").to_string();
    assert!(err.contains("removed from the cluster") && err.contains("--join"), "{err}");
    let (status, doc) = c.get(new, "/api/v1/settings").await;
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["revision"].as_u64().unwrap() >= acked,
        "revision {} < {acked} acknowledged writes",
        doc["revision"]
    );
    if !uncertain {
        assert_eq!(
            doc["settings"]["refresh_interval_secs"], last_acked,
            "last acknowledged write is the value"
        );
    }
    let voters: Vec<u64> =
        c.nodes[new].hub().replica.raft_metrics().membership_config.membership().voter_ids().collect();
    assert_eq!(voters.len(), 3);
    assert!(!voters.contains(&removed_id));

    // both changes are in the operator tenant's audit log, with who made them (written just
    // after each answer, once every member announces it can apply the event)
    // (the joins of the first nodes are audited too: wait for these two events themselves)
    let has = |events: &[serde_json::Value], t: &str, id: u64| {
        events.iter().any(|e| e["event_type"] == t && e["details"]["node_id"] == id)
    };
    let audit = common::wait_audit(&c, new, |events| {
        has(events, "cluster_member_added", new_id) && has(events, "cluster_member_removed", removed_id)
    })
    .await;
    let events: Vec<(String, String, u64)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"].as_str().unwrap().starts_with("cluster_member_"))
        .map(|e| {
            (
                e["event_type"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
                e["details"]["node_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(events.contains(&("cluster_member_added".into(), "cluster-secret".into(), new_id)), "{events:?}");
    assert!(
        events.contains(&("cluster_member_removed".into(), "admin-token".into(), removed_id)),
        "{events:?}"
    );
}

/// Concurrent writes are batched into shared entries by the leader; each keeps its own
/// compare-and-set outcome and its own revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_keep_their_own_outcomes() {
    let c = std::sync::Arc::new(TestCluster::start(3).await);
    c.wait_leader().await;
    let cas: Vec<_> = (0..40u32)
        .map(|k| {
            let c = c.clone();
            tokio::spawn(async move {
                c.put_settings(k as usize % 3, &common::settings_with_refresh(100 + k), Some(0)).await.0
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in cas {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "exactly one CAS on revision 0 wins: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| *s == 200 || *s == 412), "{statuses:?}");

    let puts: Vec<_> = (0..40u32)
        .map(|k| {
            let c = c.clone();
            tokio::spawn(async move { c.put_refresh(k as usize % 3, 200 + k).await })
        })
        .collect();
    let mut revisions = Vec::new();
    for t in puts {
        let (status, doc) = t.await.unwrap();
        assert_eq!(status, 200, "{doc}");
        revisions.push(doc["revision"].as_u64().unwrap());
    }
    revisions.sort();
    assert_eq!(revisions, (2..=41).collect::<Vec<_>>(), "every write got its own revision");
    let (_, doc) = c.get(1, "/api/v1/settings").await;
    assert_eq!(doc["revision"], 41);
}

/// Gossip keeps its own time: with every worker of the runtime the nodes share stuck for
/// 5 s (an overload, at its worst), no node sees another go dead. When gossip ran on those
/// workers, its failure detector found every peer silent for 5 s and the live set flapped,
/// which moves agents' placement exactly when there is no CPU to spare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_liveness_survives_a_stalled_runtime() {
    let c = TestCluster::start(3).await;
    c.wait_for("gossip sees every voter", Duration::from_secs(20), |c| async move {
        c.running().all(|(_, n)| n.hub().replica.live_voters().len() == 3)
    })
    .await;
    let mut live: Vec<_> = c.running().map(|(_, n)| n.hub().replica.live().clone()).collect();
    for rx in &mut live {
        rx.mark_unchanged();
    }
    // stall both workers at once (the test body runs on a thread of its own)
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let stalls: Vec<_> = (0..2)
        .map(|_| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait();
                std::thread::sleep(Duration::from_secs(5));
            })
        })
        .collect();
    barrier.wait();
    for s in stalls {
        s.await.unwrap();
    }
    // give a flap time to surface after the workers are back
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, rx) in live.iter().enumerate() {
        let now = rx.borrow().keys().copied().collect::<Vec<_>>();
        assert!(!rx.has_changed().unwrap(), "node {} saw the live set change; now {now:?}", i + 1);
        assert_eq!(now, vec![1, 2, 3]);
    }
}

/// Adding a node checks the caller, not the forwarding node: a follower used to vouch with its
/// own cluster secret for any caller, so anyone could add a node through a follower. The node
/// to add must answer with the cluster's secret and have no log of its own: one that had
/// started a cluster of its own was added and, its entries sitting at the same terms and
/// indexes as the cluster's, served a mix of both (its own admin token among them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_callers_with_credentials_add_only_pristine_nodes() {
    use serde_json::json;
    let mut c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = c.follower().await;
    let members = format!("{}/api/v1/cluster/members", c.nodes[follower].url());
    let join = json!({ "id": 77, "api_addr": "127.0.0.1:1", "gossip_addr": "127.0.0.1:2" });

    let (s, b) = common::split(c.http.post(&members).json(&join).send().await.unwrap()).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("unauthorized")), "no credentials: {b}");
    let wrong = c
        .http
        .post(&members)
        .header("x-monsys-cluster-secret", "wrong-wrong-wrong-wrong")
        .json(&join)
        .send()
        .await
        .unwrap();
    let (s, b) = common::split(wrong).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("unauthorized")), "wrong secret: {b}");
    // with the admin token, but nothing answers at the address: refused before anything changes
    let (s, b) =
        common::split(c.http.post(&members).bearer_auth(common::TOKEN).json(&join).send().await.unwrap())
            .await;
    assert_eq!((s, b["code"].as_str()), (503, Some("unavailable")), "unreachable node: {b}");
    assert_eq!(
        monsys::cluster::status::status(&c.nodes[leader].hub().replica).members.len(),
        3,
        "nothing was added"
    );

    // a node that started a cluster of its own (same secret, no --join)
    let stray = c.add_node(None).await;
    c.wait_for("the stray node leads its own cluster", Duration::from_secs(20), |c| async move {
        c.nodes[stray].hub().replica.raft_metrics().current_leader == Some(c.nodes[stray].id())
    })
    .await;
    let cfg = &c.nodes[stray].config;
    let join = json!({
        "id": c.nodes[stray].id(), "api_addr": cfg.api_addr.to_string(), "gossip_addr": cfg.gossip_addr.to_string(),
    });
    let r = c.http.post(&members).bearer_auth(common::TOKEN).json(&join).send().await.unwrap();
    let (s, b) = common::split(r).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict")), "{b}");
    assert!(b["error"].as_str().unwrap().contains("Raft log of its own"), "{b}");
    assert_eq!(
        monsys::cluster::status::status(&c.nodes[leader].hub().replica).members.len(),
        3,
        "nothing was added"
    );
}

/// A leader can remove itself: the change is audited (by the new leader, the old one having
/// stepped down before the event was written: it used to be lost), the old leader stops
/// calling itself leader (openraft keeps its vote, so it used to answer leader-routed requests
/// itself with 503) and knows it was removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_removes_itself_is_audited_and_steps_aside() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let leader_id = c.nodes[leader].id();
    let r = c
        .http
        .delete(format!("{}/api/v1/cluster/members/{leader_id}", c.nodes[leader].url()))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    let (status, body) = common::split(r).await;
    assert_eq!(status, 200, "{body}");
    let other = (leader + 1) % 3;
    c.wait_for(
        "the old leader steps aside and knows it was removed",
        Duration::from_secs(20),
        |c| async move {
            let ready = c.http.get(format!("{}/api/v1/ready", c.nodes[leader].url())).send().await;
            let removed = match ready {
                Ok(r) => r.text().await.unwrap_or_default().contains("removed from the cluster"),
                Err(_) => false,
            };
            removed && !c.nodes[leader].hub().replica.is_leader()
        },
    )
    .await;
    let removed = |e: &serde_json::Value| {
        e["event_type"] == "cluster_member_removed" && e["details"]["node_id"] == leader_id
    };
    let audit = common::wait_audit(&c, other, |events| events.iter().any(removed)).await;
    assert!(
        audit["events"].as_array().is_some_and(|events| events.iter().any(removed)),
        "no cluster_member_removed event for node {leader_id}: {audit}"
    );
}
