//! The cluster version on a running cluster: what `GET /api/v1/cluster` shows, finalize, and
//! features that stay on while a member is down once the version is finalized.

mod common;

use std::time::Duration;

use common::{TOKEN, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_cluster_runs_this_builds_version_and_every_member_shows_it() {
    let c = TestCluster::start(3).await;
    let newest = monsys_raft::cluster_version::CLUSTER_VERSION;
    for i in 0..3 {
        let status =
            common::eventually("every member announces its formats", Duration::from_secs(20), || async {
                let (code, status) = c.get(i, "/api/v1/cluster").await;
                assert_eq!(code, 200, "{status}");
                let members = status["members"].as_array().cloned().unwrap_or_default();
                (members.len() == 3 && members.iter().all(|m| m["formats"]["cluster"]["max"] == newest))
                    .then_some(status)
            })
            .await;
        assert_eq!(status["active_version"], newest, "{status}");
        assert!(status.get("finalizable_to").is_none(), "nothing to finalize: {status}");
        let formats = &status["members"][0]["formats"];
        assert_eq!(formats["data_dir"]["max"], monsys_raft::data_format::DATA_FORMAT, "{formats}");
    }

    // finalizing a cluster already at the newest version is a no-op that says so
    let r = c
        .http
        .post(format!("{}/api/v1/cluster/finalize-upgrade", c.nodes[1].url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (code, body) = common::split(r).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, serde_json::json!({ "active_version": newest, "previous_version": newest }));

    // without credentials: refused
    let r =
        c.http.post(format!("{}/api/v1/cluster/finalize-upgrade", c.nodes[0].url())).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_member_down_finalize_is_refused_and_features_stay_on() {
    let mut c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    let down = (leader + 1) % 3;
    c.crash(down).await;
    let up = (leader + 2) % 3;
    common::eventually("gossip drops the stopped member", Duration::from_secs(30), || async {
        let (_, status) = c.get(up, "/api/v1/cluster").await;
        let members = status["members"].as_array().cloned().unwrap_or_default();
        members.iter().any(|m| m["live"] == false).then_some(())
    })
    .await;

    let r = c
        .http
        .post(format!("{}/api/v1/cluster/finalize-upgrade", c.nodes[up].url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (code, body) = common::split(r).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["code"], "not_all_members_support", "{body}");

    // the settings write is still audited: the feature is part of the finalized version, so a
    // member being down does not switch it off (before cluster versions, it did)
    let (code, body) = c.put_refresh(up, 42).await;
    assert_eq!(code, 200, "{body}");
    let revision = body["revision"].clone();
    let audit = common::wait_audit(&c, up, |events| {
        events.iter().any(|e| e["event_type"] == "settings_changed" && e["details"]["revision"] == revision)
    })
    .await;
    let events = audit["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["event_type"] == "settings_changed" && e["details"]["revision"] == revision),
        "no settings_changed event for revision {revision} while a member was down: {audit}"
    );
}
