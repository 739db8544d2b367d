//! Draining a node: the drain request travels to the node, the node stops counting itself
//! live, readiness says so, and the cluster keeps taking writes once it is gone.

mod common;

use std::time::Duration;

use common::{TOKEN, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_follower_leaves_placement_and_the_cluster_keeps_writing() {
    let mut c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let drained = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let id = c.nodes[drained].id();

    // asked through another node: relayed to the drained one
    let r = c
        .http
        .post(format!("{}/api/v1/cluster/members/{id}/drain", c.nodes[other].url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (code, body) = common::split(r).await;
    assert_eq!(code, 202, "{body}");
    let handle = c.nodes[drained].handle.as_ref().unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle.drain_requested())
        .await
        .expect("the drained node heard the request");

    let took = handle.drain().await;
    assert!(took < Duration::from_secs(5), "drain took {took:?}");
    let r = c.http.get(format!("{}/api/v1/ready", c.nodes[drained].url())).send().await.unwrap();
    let (code, body) = common::split(r).await;
    assert_eq!(code, 503, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("draining")), "{body}");
    common::eventually(
        "the others no longer count the drained node live",
        Duration::from_secs(10),
        || async {
            let (_, status) = c.get(other, "/api/v1/cluster").await;
            let members = status["members"].as_array().cloned().unwrap_or_default();
            members.iter().any(|m| m["id"] == id && m["live"] == false).then_some(())
        },
    )
    .await;
    c.crash(drained).await;

    let (code, body) = c.put_refresh(other, 77).await;
    assert_eq!(code, 200, "{body}");

    // an unknown node: 404
    let r = c
        .http
        .post(format!("{}/api/v1/cluster/members/99/drain", c.nodes[other].url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_leader_hands_over_leadership_before_it_stops() {
    let mut c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let old_id = c.nodes[leader].id();
    let handle = c.nodes[leader].handle.as_ref().unwrap();
    handle.drain().await;
    // before it stops, another node already leads
    let other = (leader + 1) % 3;
    let (_, status) = c.get(other, "/api/v1/cluster").await;
    let new_leader = status["leader"].as_u64();
    assert!(new_leader.is_some_and(|l| l != old_id), "leadership moved during the drain: {status}");
    c.crash(leader).await;
    let (code, body) = c.put_refresh(other, 78).await;
    assert_eq!(code, 200, "{body}");
}
