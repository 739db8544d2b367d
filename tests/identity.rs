//! Identity and access through the HTTP API of a 3-node cluster: first-run registration,
//! sessions valid on every node, revocations seen at once everywhere, API keys, the role matrix
//! and tenant isolation.

mod common;

use common::agent::{TestAgent, enrollment_token};
use common::{TOKEN, TestCluster, split};
use serde_json::{Value, json};

const PW: &str = "correct horse battery staple";

async fn call(
    c: &TestCluster,
    node: usize,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = c.http.request(m, format!("{}{path}", c.nodes[node].url())).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    split(req.send().await.unwrap()).await
}

async fn register_owner(c: &TestCluster, node: usize, email: &str, tenant: Option<&str>) -> (u16, Value) {
    let body = json!({ "email": email, "password": PW, "name": "Owner", "tenant_name": tenant });
    split(
        c.http
            .post(format!("{}/api/v1/auth/register", c.nodes[node].url()))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn login(c: &TestCluster, node: usize, email: &str, password: &str) -> (u16, Value) {
    let body = json!({ "email": email, "password": password });
    split(c.http.post(format!("{}/api/v1/auth/login", c.nodes[node].url())).json(&body).send().await.unwrap())
        .await
}

async fn session(c: &TestCluster, node: usize, email: &str) -> String {
    let (s, v) = login(c, node, email, PW).await;
    assert_eq!(s, 200, "{v}");
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_work_on_every_node_and_revocations_apply_everywhere_at_once() {
    let c = TestCluster::start(3).await;
    let f = c.follower().await;
    let (s, owner) = register_owner(&c, f, "Owner@Example.com", None).await;
    assert_eq!(s, 201, "{owner}");
    assert_eq!(
        (owner["email"].as_str(), owner["role"].as_str(), owner["tenant"].as_str()),
        (Some("owner@example.com"), Some("owner"), Some("default"))
    );
    let (s, e) = register_owner(&c, 0, "second@example.com", None).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("forbidden")),
        "registration closes once an owner exists: {e}"
    );

    // login on A, use on B and C (bearer), and the HttpOnly cookie works too
    let (s, v) = split(
        c.http
            .post(format!("{}/api/v1/auth/login", c.nodes[0].url()))
            .json(&json!({ "email": "owner@example.com", "password": PW }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let cookie_token = v["token"].as_str().unwrap();
    let r = c
        .http
        .get(format!("{}/api/v1/auth/me", c.nodes[1].url()))
        .header("cookie", format!("theme=dark; monsys_session={cookie_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = session(&c, 0, "owner@example.com").await;
    for node in 0..3 {
        let (s, me) = call(&c, node, "GET", "/api/v1/auth/me", &token, None).await;
        assert_eq!((s, me["email"].as_str()), (200, Some("owner@example.com")), "node {node}: {me}");
    }
    // a user created by the owner; her session dies everywhere the moment she is disabled on B
    let body = json!({ "email": "op@example.com", "name": "Op", "password": PW, "role": "operator" });
    let (s, op) = call(&c, 2, "POST", "/api/v1/users", &token, Some(body)).await;
    assert_eq!(s, 201, "{op}");
    let op_token = session(&c, 1, "op@example.com").await;
    let (s, key) = call(&c, 1, "POST", "/api/v1/api-keys", &op_token, Some(json!({ "name": "ci" }))).await;
    assert_eq!(s, 201, "{key}");
    let op_key = key["key"].as_str().unwrap().to_string();
    assert_eq!(call(&c, 0, "GET", "/api/v1/agents", &op_key, None).await.0, 200);
    let id = op["id"].as_str().unwrap();
    let (s, v) =
        call(&c, 1, "PATCH", &format!("/api/v1/users/{id}"), &token, Some(json!({ "disabled": true }))).await;
    assert_eq!(s, 200, "{v}");
    for node in 0..3 {
        assert_eq!(
            call(&c, node, "GET", "/api/v1/auth/me", &op_token, None).await.0,
            401,
            "session of a disabled user on node {node}"
        );
        assert_eq!(
            call(&c, node, "GET", "/api/v1/agents", &op_key, None).await.0,
            401,
            "key of a disabled user on node {node}"
        );
    }
    assert_eq!(login(&c, 2, "op@example.com", PW).await.0, 401);

    // logout on B: the token is dead on A and C for every later request
    let (s, _) = call(&c, 1, "POST", "/api/v1/auth/logout", &token, None).await;
    assert_eq!(s, 204);
    for node in 0..3 {
        assert_eq!(call(&c, node, "GET", "/api/v1/auth/me", &token, None).await.0, 401, "node {node}");
    }
    // the last owner cannot be disabled
    let token = session(&c, 2, "owner@example.com").await;
    let oid = owner["id"].as_str().unwrap();
    let (s, e) =
        call(&c, 0, "PATCH", &format!("/api/v1/users/{oid}"), &token, Some(json!({ "disabled": true })))
            .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("conflict")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_credentials_and_bodies_get_clear_errors_without_revealing_accounts() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    let (s, e) = register_owner(&c, 0, "not-an-email", None).await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_body")), "{e}");
    let body = json!({ "email": "a@example.com", "password": "short", "name": "A" });
    let (s, e) = split(
        c.http.post(format!("{}/api/v1/auth/register", c.nodes[0].url())).json(&body).send().await.unwrap(),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_body")), "{e}");
    // the first registration's tenant name is held to the same rule as later ones
    let (s, e) = register_owner(&c, 0, "a@example.com", Some(" -- ")).await;
    assert_eq!((s, e["code"].as_str()), (422, Some("invalid_body")), "{e}");
    assert_eq!(register_owner(&c, 0, "a@example.com", None).await.0, 201);
    // user-only operations refuse a credential without a user as forbidden, not as bad input
    for (method, path) in [
        ("POST", "/api/v1/auth/logout"),
        ("PUT", "/api/v1/auth/me/password"),
        ("POST", "/api/v1/auth/totp/setup"),
    ] {
        let body = (method == "PUT")
            .then(|| json!({ "current_password": "x", "new_password": "another long passphrase" }));
        let (s, e) = call(&c, 0, method, path, TOKEN, body).await;
        assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "{method} {path}: {e}");
    }

    let (s1, wrong_pw) = login(&c, 0, "a@example.com", "wrong password here").await;
    let (s2, no_user) = login(&c, 0, "nobody@example.com", PW).await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong_pw, no_user, "the same answer for a wrong password and an unknown account");
    let r = c
        .http
        .post(format!("{}/api/v1/auth/login", c.nodes[0].url()))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for bad in ["", "Bearer", "mss_unknown", "msk_unknown", "msa_wrong", "garbage"] {
        let r = c
            .http
            .get(format!("{}/api/v1/agents", c.nodes[0].url()))
            .header("authorization", format!("Bearer {bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad:?}");
    }
    // password change: old password refused, other sessions end, this one stays
    let t1 = session(&c, 0, "a@example.com").await;
    let t2 = session(&c, 0, "a@example.com").await;
    let change = json!({ "current_password": "not it at all", "new_password": "another long passphrase" });
    assert_eq!(call(&c, 0, "PUT", "/api/v1/auth/me/password", &t1, Some(change)).await.0, 401);
    let change = json!({ "current_password": PW, "new_password": "another long passphrase" });
    assert_eq!(call(&c, 0, "PUT", "/api/v1/auth/me/password", &t1, Some(change)).await.0, 204);
    assert_eq!(call(&c, 0, "GET", "/api/v1/auth/me", &t1, None).await.0, 200);
    assert_eq!(call(&c, 0, "GET", "/api/v1/auth/me", &t2, None).await.0, 401);
    assert_eq!(login(&c, 0, "a@example.com", PW).await.0, 401);
    assert_eq!(login(&c, 0, "a@example.com", "another long passphrase").await.0, 200);
}

/// (method, path, body, permission) for the role matrix; `{agent}` is replaced by an agent id.
fn routes() -> Vec<(&'static str, &'static str, Option<Value>, &'static str)> {
    let settings = serde_json::to_value(monsys_proto::Settings::default()).unwrap();
    vec![
        ("GET", "/api/v1/agents", None, "agents:read"),
        ("GET", "/api/v1/agents/{agent}", None, "agents:read"),
        ("GET", "/api/v1/agents/{agent}/metrics", None, "agents:read"),
        ("POST", "/api/v1/agents/{agent}/rotate-signing-key", None, "agents:write"),
        ("GET", "/api/v1/enrollment-tokens", None, "enrollment:manage"),
        ("GET", "/api/v1/alerts", None, "alerts:read"),
        ("GET", "/api/v1/alert-rules", None, "alerts:read"),
        ("PUT", "/api/v1/alert-rules", Some(json!({ "rules": [] })), "rules:write"),
        ("GET", "/api/v1/settings", None, "settings:read"),
        ("PUT", "/api/v1/settings", Some(settings), "settings:write"),
        ("GET", "/api/v1/audit", None, "audit:read"),
        ("GET", "/api/v1/integrity-anomalies", None, "integrity:read"),
        ("GET", "/api/v1/users", None, "users:read"),
        ("GET", "/api/v1/roles", None, "users:read"),
        ("GET", "/api/v1/cluster", None, "cluster:read"),
        ("GET", "/api/v1/cluster/placement/agent/x", None, "cluster:read"),
        ("DELETE", "/api/v1/cluster/members/99", None, "cluster:write"),
        ("POST", "/api/v1/cluster/members/99/promote", None, "cluster:write"),
        ("GET", "/api/v1/agents/{agent}/inventory", None, "agents:read"),
        ("GET", "/api/v1/fleet/top?metric=cpu_percent", None, "agents:read"),
        ("GET", "/api/v1/fleet/storage", None, "agents:read"),
        ("GET", "/api/v1/agents/{agent}/processes", None, "agents:read"),
        ("DELETE", "/api/v1/agents/nope", None, "agents:write"),
        ("POST", "/api/v1/agents/nope/rotate-token", None, "agents:write"),
        (
            "POST",
            "/api/v1/enrollment-tokens",
            Some(json!({ "name": "x", "max_uses": 0 })),
            "enrollment:manage",
        ),
        ("DELETE", "/api/v1/enrollment-tokens/nope", None, "enrollment:manage"),
        ("PATCH", "/api/v1/alerts/999/resolve", None, "alerts:write"),
        ("PATCH", "/api/v1/alerts/999/acknowledge", None, "alerts:write"),
        ("GET", "/api/v1/audit/verify", None, "audit:read"),
        ("PATCH", "/api/v1/integrity-anomalies/999/resolve", None, "integrity:write"),
        ("GET", "/api/v1/users/nope", None, "users:read"),
        (
            "POST",
            "/api/v1/users",
            Some(json!({ "email": "bad", "name": "x", "password": "x", "role": "viewer" })),
            "users:write",
        ),
        ("PATCH", "/api/v1/users/nope", Some(json!({ "name": "x" })), "users:write"),
        ("DELETE", "/api/v1/users/nope", None, "users:write"),
        (
            "PUT",
            "/api/v1/users/nope/password",
            Some(json!({ "new_password": "a long enough password" })),
            "users:write",
        ),
        ("PUT", "/api/v1/roles/r1", Some(json!({ "name": "r", "permissions": ["bogus"] })), "users:write"),
        ("DELETE", "/api/v1/roles/nope", None, "users:write"),
        (
            "POST",
            "/api/v1/auth/invitations",
            Some(json!({ "email": "bad", "role": "viewer" })),
            "users:write",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_refuses_roles_without_its_permission_and_tenants_are_isolated() {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    assert_eq!(register_owner(&c, 0, "owner@example.com", None).await.0, 201);
    let owner = session(&c, 0, "owner@example.com").await;
    // an agent in the default tenant (registered with the break-glass token's enrollment)
    let url = c.nodes[0].url();
    let enrollment = enrollment_token(&c.http, &url).await;
    let agent = TestAgent::register(&c.http, &url, &enrollment, "matrix", false).await;

    let (_, roles) = call(&c, 0, "GET", "/api/v1/roles", &owner, None).await;
    let mut tokens = vec![("owner".to_string(), owner.clone())];
    for role in ["admin", "operator", "analyst", "viewer"] {
        let body =
            json!({ "email": format!("{role}@example.com"), "name": role, "password": PW, "role": role });
        assert_eq!(call(&c, 1, "POST", "/api/v1/users", &owner, Some(body)).await.0, 201);
        tokens.push((role.to_string(), session(&c, 2, &format!("{role}@example.com")).await));
    }
    let perms_of = |role: &str| -> Vec<String> {
        roles["roles"].as_array().unwrap().iter().find(|r| r["id"] == role).unwrap()["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    for (role, token) in &tokens {
        let held = perms_of(role);
        for (i, (method, path, body, perm)) in routes().into_iter().enumerate() {
            let path = path.replace("{agent}", &agent.id);
            let (s, v) = call(&c, i % 3, method, &path, token, body).await;
            if held.iter().any(|p| p == perm) {
                assert_ne!(s, 403, "{role} holds {perm} but {method} {path} answered {v}");
                assert_ne!(s, 401, "{role} {method} {path}: {v}");
            } else {
                assert_eq!(
                    (s, v["code"].as_str()),
                    (403, Some("forbidden")),
                    "{role} lacks {perm}: {method} {path} → {v}"
                );
            }
        }
    }
    // the break-glass token alone changes membership
    assert_ne!(call(&c, 0, "DELETE", "/api/v1/cluster/members/99", TOKEN, None).await.0, 403);

    // a second tenant (registration enabled) sees none of the first one's data
    let mut s = common::settings_with_refresh(15);
    s["registration_enabled"] = json!(true);
    assert_eq!(call(&c, 0, "PUT", "/api/v1/settings", &owner, Some(s)).await.0, 200);
    let (st, acme) = register_owner(&c, 1, "boss@acme.example", Some("Acme Corp")).await;
    assert_eq!(st, 202, "{acme}");
    let acme_token = session(&c, 2, "boss@acme.example").await;
    let (_, me) = call(&c, 0, "GET", "/api/v1/auth/me", &acme_token, None).await;
    assert_eq!(me["tenant"], "acme-corp", "{me}");
    // which emails exist cannot be told from outside: registering with an address that has an
    // account (in this or another organisation) answers exactly like a new one; the mail says
    for taken in ["boss@acme.example", "operator@example.com"] {
        let (st, again) = register_owner(&c, 0, taken, Some("Other Corp")).await;
        assert_eq!((st, &again), (202, &acme), "{taken}");
        mail_containing(&c, taken, "already has a monsys account").await;
    }
    let (st, other) = register_owner(&c, 0, "new@other.example", Some("Other Corp")).await;
    assert_eq!((st, &other), (202, &acme), "the tenant was not taken by the refused attempts");
    mail_containing(&c, "new@other.example", "was created").await;
    // an invitation of another organisation's user answers like any invitation (a notice is
    // mailed instead); one of the inviter's own members is a plain conflict
    let (st, fresh) = call(
        &c,
        0,
        "POST",
        "/api/v1/auth/invitations",
        &acme_token,
        Some(json!({ "email": "fresh@acme.example", "role": "viewer" })),
    )
    .await;
    assert_eq!(st, 201, "{fresh}");
    let (st, elsewhere) = call(
        &c,
        1,
        "POST",
        "/api/v1/auth/invitations",
        &acme_token,
        Some(json!({ "email": "operator@example.com", "role": "viewer" })),
    )
    .await;
    assert_eq!(st, 201, "{elsewhere}");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&elsewhere), keys(&fresh), "{elsewhere} vs {fresh}");
    mail_containing(&c, "operator@example.com", "no invitation was made").await;
    let (st, own) = call(
        &c,
        2,
        "POST",
        "/api/v1/auth/invitations",
        &acme_token,
        Some(json!({ "email": "boss@acme.example", "role": "viewer" })),
    )
    .await;
    assert_eq!((st, own["code"].as_str()), (409, Some("conflict")), "{own}");
    let (_, list) = call(&c, 0, "GET", "/api/v1/agents", &acme_token, None).await;
    assert_eq!(list["agents"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(call(&c, 1, "GET", &format!("/api/v1/agents/{}", agent.id), &acme_token, None).await.0, 404);
    let (_, users) = call(&c, 2, "GET", "/api/v1/users", &acme_token, None).await;
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
    let (_, audit) = call(&c, 0, "GET", "/api/v1/audit", &acme_token, None).await;
    assert!(
        audit["events"].as_array().unwrap().iter().all(|e| e["event_type"] != "agent_registered"),
        "{audit}"
    );

    // nobody grants more than they hold
    let (_, op) = login(&c, 0, "operator@example.com", PW).await;
    let op = op["token"].as_str().unwrap();
    let (s, _) =
        call(&c, 0, "POST", "/api/v1/api-keys", op, Some(json!({ "name": "x", "role": "admin" }))).await;
    assert_eq!(s, 403);
    let admin = &tokens[1].1;
    let body = json!({ "email": "o2@example.com", "name": "o2", "password": PW, "role": "owner" });
    assert_eq!(
        call(&c, 0, "POST", "/api/v1/users", admin, Some(body)).await.0,
        403,
        "only owners make owners"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_and_custom_roles() {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    assert_eq!(register_owner(&c, 0, "owner@example.com", None).await.0, 201);
    let owner = session(&c, 0, "owner@example.com").await;
    let role = json!({ "name": "Alert desk", "permissions": ["alerts:read", "alerts:write", "agents:read"] });
    let (s, v) = call(&c, 1, "PUT", "/api/v1/roles/alert_desk", &owner, Some(role)).await;
    assert_eq!(s, 200, "{v}");
    let (s, key) = call(
        &c,
        2,
        "POST",
        "/api/v1/api-keys",
        &owner,
        Some(json!({ "name": "desk", "role": "alert_desk", "tenant_key": true })),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    // a lifetime of 0 (dead on arrival) or one whose expiry overflows is refused
    for bad in [json!(0), json!(u64::MAX), json!(59)] {
        let body = json!({ "name": "bad", "expires_in_secs": bad });
        let (s, v) = call(&c, 0, "POST", "/api/v1/api-keys", &owner, Some(body)).await;
        assert_eq!((s, v["code"].as_str()), (422, Some("invalid_body")), "expires_in_secs {bad}: {v}");
    }
    let (s, v) = call(
        &c,
        0,
        "POST",
        "/api/v1/api-keys",
        &owner,
        Some(json!({ "name": "day", "expires_in_secs": 86_400 })),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(v["expires_at_ms"].as_u64().is_some_and(|e| e > v["created_at_ms"].as_u64().unwrap()), "{v}");
    let k = key["key"].as_str().unwrap().to_string();
    // X-Api-Key works like a bearer on any node
    let r = c
        .http
        .get(format!("{}/api/v1/alerts", c.nodes[0].url()))
        .header("x-api-key", &k)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(call(&c, 1, "GET", "/api/v1/settings", &k, None).await.0, 403);
    // a role in use cannot be deleted; unknown permissions are refused
    assert_eq!(call(&c, 0, "DELETE", "/api/v1/roles/alert_desk", &owner, None).await.0, 409);
    let bad = json!({ "name": "x", "permissions": ["alerts:everything"] });
    assert_eq!(call(&c, 0, "PUT", "/api/v1/roles/x", &owner, Some(bad)).await.0, 422);
    assert_eq!(
        call(&c, 0, "PUT", "/api/v1/roles/viewer", &owner, Some(json!({ "name": "v", "permissions": [] })))
            .await
            .0,
        409
    );
    // last use is recorded (batched) and listed
    for (_, n) in c.running() {
        monsys::auth::touch::flush(&n.hub().touches, &n.hub().replica).await;
    }
    let id = key["id"].as_str().unwrap();
    let (_, keys) = call(&c, 1, "GET", "/api/v1/api-keys", &owner, None).await;
    let listed = keys["api_keys"].as_array().unwrap().iter().find(|k| k["id"] == id).unwrap().clone();
    assert!(listed["last_used_ms"].as_u64().unwrap() > 0, "{listed}");
    assert!(listed.get("key").is_none() && !keys.to_string().contains("msk_"), "keys are shown once: {keys}");
    // revoked on one node: dead on all
    assert_eq!(call(&c, 2, "DELETE", &format!("/api/v1/api-keys/{id}"), &owner, None).await.0, 204);
    for node in 0..3 {
        assert_eq!(call(&c, node, "GET", "/api/v1/alerts", &k, None).await.0, 401, "node {node}");
    }
    assert_eq!(call(&c, 0, "DELETE", "/api/v1/roles/alert_desk", &owner, None).await.0, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_count_once_across_the_cluster() {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    c.wait_for("gossip sees every voter", std::time::Duration::from_secs(20), |c| async move {
        c.running().all(|(_, n)| n.hub().replica.live_voters().len() == 3)
    })
    .await;
    assert_eq!(register_owner(&c, 0, "owner@example.com", None).await.0, 201);
    let owner_session = session(&c, 0, "owner@example.com").await; // the address's first login
    // logins from one address, spread over the three nodes: 10 per minute in all, not per node
    let mut statuses = Vec::new();
    for i in 0..12 {
        let (s, v) = login(&c, i % 3, "owner@example.com", "wrong password, again").await;
        if s == 429 {
            assert_eq!(v["code"], "rate_limited");
        }
        statuses.push(s);
    }
    assert_eq!(statuses[..9], [401; 9], "{statuses:?}");
    assert_eq!(statuses[9..], [429, 429, 429], "{statuses:?}");
    // the counting happened on the owner of the limit key, wherever the requests were served
    let (_, placed) =
        call(&c, 0, "GET", "/api/v1/cluster/placement/limit/login:ip:127.0.0.1", TOKEN, None).await;
    let owner = placed["owner"].as_u64().unwrap();
    for (_, n) in c.running() {
        let holds = n.hub().limits.contains("login:ip:127.0.0.1");
        assert_eq!(holds, n.id() == owner, "node {} holds limiter cells: {holds}; owner is {owner}", n.id());
    }

    // a per-user limit: 10 token rotations per hour, whichever node receives them
    let url = c.nodes[0].url();
    let enrollment = enrollment_token(&c.http, &url).await;
    let agent = TestAgent::register(&c.http, &url, &enrollment, "rot", false).await;
    let mut statuses = Vec::new();
    for i in 0..11 {
        statuses.push(
            call(&c, i % 3, "POST", &format!("/api/v1/agents/{}/rotate-token", agent.id), TOKEN, None)
                .await
                .0,
        );
    }
    assert_eq!(statuses[..10], [200; 10], "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");

    // guessing the current password is held to the login limit for that user, on every node
    let owner = owner_session;
    let guess =
        json!({ "current_password": "a wrong guess here", "new_password": "another long passphrase" });
    let mut statuses = Vec::new();
    for i in 0..11 {
        statuses
            .push(call(&c, i % 3, "PUT", "/api/v1/auth/me/password", &owner, Some(guess.clone())).await.0);
    }
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");
}

/// RFC 6238 TOTP (HMAC-SHA1, 6 digits, 30 s), written here from the RFC so the test does not
/// trust the implementation under test.
fn rfc6238(base32_secret: &str, unix_secs: u64) -> String {
    use hmac::{Hmac, Mac};
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut acc, mut key) = (0u32, 0u64, Vec::new());
    for c in base32_secret.trim_end_matches('=').bytes() {
        acc = (acc << 5) | alphabet.iter().position(|a| *a == c).expect("base32") as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            key.push((acc >> bits) as u8);
        }
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&key).unwrap();
    mac.update(&(unix_secs / 30).to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[19] & 0xf) as usize;
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    format!("{:06}", bin % 1_000_000)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn totp_second_factor_with_single_use_codes() {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    assert_eq!(register_owner(&c, 0, "mfa@example.com", None).await.0, 201);
    let token = session(&c, 1, "mfa@example.com").await;
    let (s, setup) = call(&c, 2, "POST", "/api/v1/auth/totp/setup", &token, None).await;
    assert_eq!(s, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_string();
    assert!(setup["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"), "{setup}");
    // a wrong code does not enable it; the right one (computed here) does
    let (s, _) =
        call(&c, 0, "POST", "/api/v1/auth/totp/verify", &token, Some(json!({ "code": "000000" }))).await;
    assert_eq!(s, 401);
    let code = rfc6238(&secret, now_secs());
    let (s, enabled) =
        call(&c, 0, "POST", "/api/v1/auth/totp/verify", &token, Some(json!({ "code": code }))).await;
    assert_eq!(s, 200, "{enabled}");
    let recovery: Vec<String> = enabled["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(recovery.len(), 10);

    // login now needs the second factor
    let (s, first) = login(&c, 1, "mfa@example.com", PW).await;
    assert_eq!((s, first["totp_required"].as_bool()), (200, Some(true)), "{first}");
    assert!(first.get("token").is_none());
    let challenge = first["challenge"].as_str().unwrap();
    // the code that enabled TOTP was used already: refused (its step is spent), on any node
    let (s, e) = call(
        &c,
        2,
        "POST",
        "/api/v1/auth/totp/challenge",
        "",
        Some(json!({ "challenge": challenge, "code": code })),
    )
    .await;
    assert_eq!(s, 401, "a code is never accepted twice: {e}");
    // a recovery code works once
    let (s, done) = call(
        &c,
        2,
        "POST",
        "/api/v1/auth/totp/challenge",
        "",
        Some(json!({ "challenge": challenge, "recovery_code": recovery[0] })),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    let t2 = done["token"].as_str().unwrap();
    assert_eq!(call(&c, 0, "GET", "/api/v1/auth/me", t2, None).await.0, 200);
    let (_, again) = login(&c, 0, "mfa@example.com", PW).await;
    let ch2 = again["challenge"].as_str().unwrap();
    let (s, _) = call(
        &c,
        1,
        "POST",
        "/api/v1/auth/totp/challenge",
        "",
        Some(json!({ "challenge": ch2, "recovery_code": recovery[0] })),
    )
    .await;
    assert_eq!(s, 401, "a recovery code is single-use");
    let (s, _) = call(
        &c,
        1,
        "POST",
        "/api/v1/auth/totp/challenge",
        "",
        Some(json!({ "challenge": "msc_bogus", "recovery_code": recovery[1] })),
    )
    .await;
    assert_eq!(s, 401);
    // disabling needs a valid factor
    let (s, _) =
        call(&c, 0, "POST", "/api/v1/auth/totp/disable", t2, Some(json!({ "code": "123456" }))).await;
    assert_ne!(s, 204);
    let (s, _) =
        call(&c, 0, "POST", "/api/v1/auth/totp/disable", t2, Some(json!({ "recovery_code": recovery[2] })))
            .await;
    assert_eq!(s, 204);
    let (s, v) = login(&c, 2, "mfa@example.com", PW).await;
    assert_eq!((s, v["token"].is_string()), (200, true), "{v}");
    let (_, audit) = call(&c, 0, "GET", "/api/v1/audit?limit=1000", TOKEN, None).await;
    let types: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert!(
        types.contains(&"totp_enabled")
            && types.contains(&"totp_disabled")
            && types.contains(&"totp_code_rejected"),
        "{types:?}"
    );
}

/// Waits for a mail in node `i`'s outbox whose text contains `needle`; returns the token that
/// follows `label` in it.
async fn token_from_outbox(c: &TestCluster, i: usize, to: &str, label: &str) -> String {
    let dir = c.nodes[i].config.data_dir.join("outbox");
    let what = format!("a mail to {to} with {label:?} in {}", dir.display());
    common::eventually(&what, std::time::Duration::from_secs(5), || async {
        let entries = std::fs::read_dir(&dir).ok()?;
        entries.flatten().find_map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let pos = text.find(label).filter(|_| text.contains(&format!("To: {to}")))?;
            text[pos + label.len()..].split_whitespace().next().map(str::to_string)
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invitations_and_password_resets_by_mail() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader().await;
    assert_eq!(register_owner(&c, 0, "owner@example.com", None).await.0, 201);
    let owner = session(&c, 1, "owner@example.com").await;

    // invite → mail in the outbox of the node that served it (the leader) → accept
    let (s, v) = call(
        &c,
        2,
        "POST",
        "/api/v1/auth/invitations",
        &owner,
        Some(json!({ "email": "New@Example.com", "role": "analyst" })),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(v.get("token").is_none(), "tokens travel only by mail: {v}");
    let token = token_from_outbox(&c, leader, "new@example.com", "Invitation token: ").await;
    let accept = |token: String| json!({ "token": token, "name": "New", "password": PW });
    let (s, u) = split(
        c.http
            .post(format!("{}/api/v1/auth/accept-invite", c.nodes[0].url()))
            .json(&accept(token.clone()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, u["role"].as_str(), u["email"].as_str()),
        (201, Some("analyst"), Some("new@example.com")),
        "{u}"
    );
    let (s, _) = split(
        c.http
            .post(format!("{}/api/v1/auth/accept-invite", c.nodes[1].url()))
            .json(&accept(token))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401, "an invitation is single-use");
    let (s, e) = call(
        &c,
        0,
        "POST",
        "/api/v1/auth/invitations",
        &owner,
        Some(json!({ "email": "new@example.com", "role": "viewer" })),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("conflict")), "{e}");

    // reset: same answer for a known and an unknown address; the mail carries the token (once
    // every member can apply the exclusive reset commands: one live token per user)
    c.wait_for(
        "every member announces reset-exclusive",
        std::time::Duration::from_secs(20),
        |c| async move {
            c.running()
                .all(|(_, n)| n.hub().replica.members_support(monsys_raft::LOG_FEATURE_RESET_EXCLUSIVE))
        },
    )
    .await;
    let forgot = |email: &str| json!({ "email": email });
    let (s1, a) = split(
        c.http
            .post(format!("{}/api/v1/auth/forgot-password", c.nodes[1].url()))
            .json(&forgot("new@example.com"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (s2, b) = split(
        c.http
            .post(format!("{}/api/v1/auth/forgot-password", c.nodes[2].url()))
            .json(&forgot("ghost@example.com"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(a, b);
    let old_session = session(&c, 0, "new@example.com").await;
    let first = token_from_outbox(&c, leader, "new@example.com", "Reset token: ").await;
    // a second reset asked for: only its token works, and only once
    let r = c
        .http
        .post(format!("{}/api/v1/auth/forgot-password", c.nodes[0].url()))
        .json(&forgot("new@example.com"));
    assert_eq!(r.send().await.unwrap().status(), 202);
    let token = common::eventually("a second reset mail", std::time::Duration::from_secs(5), || async {
        let all = tokens_in_outbox(&c, leader, "new@example.com", "Reset token: ");
        (all.len() == 2).then(|| all[1].clone())
    })
    .await;
    assert_ne!(token, first);
    let reset = |token: &str| json!({ "token": token, "new_password": "a brand new passphrase" });
    let r = c.http.post(format!("{}/api/v1/auth/reset-password", c.nodes[1].url())).json(&reset(&first));
    assert_eq!(r.send().await.unwrap().status(), 401, "a newer reset token ends the older one");
    let r = c
        .http
        .post(format!("{}/api/v1/auth/reset-password", c.nodes[2].url()))
        .json(&reset(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .http
        .post(format!("{}/api/v1/auth/reset-password", c.nodes[0].url()))
        .json(&reset(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a reset token is single-use");
    for node in 0..3 {
        assert_eq!(
            call(&c, node, "GET", "/api/v1/auth/me", &old_session, None).await.0,
            401,
            "sessions end on reset (node {node})"
        );
    }
    assert_eq!(login(&c, 1, "new@example.com", PW).await.0, 401);
    assert_eq!(login(&c, 1, "new@example.com", "a brand new passphrase").await.0, 200);

    // a mail that cannot be sent: the invitation is committed, so the answer is a 201 that says
    // so (a 503 promises that nothing was applied); once mail works, a new invitation goes out
    let leader = c.wait_leader().await;
    let outbox = c.nodes[leader].config.data_dir.join("outbox");
    std::fs::remove_dir_all(&outbox).unwrap();
    std::fs::write(&outbox, b"not a directory").unwrap();
    let invite = json!({ "email": "later@example.com", "role": "viewer" });
    let (s, v) = call(&c, 1, "POST", "/api/v1/auth/invitations", &owner, Some(invite.clone())).await;
    assert_eq!((s, v["mail_sent"].as_bool()), (201, Some(false)), "{v}");
    assert!(v["mail_error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    std::fs::remove_file(&outbox).unwrap();
    let (s, v) = call(&c, 1, "POST", "/api/v1/auth/invitations", &owner, Some(invite)).await;
    assert_eq!((s, v["mail_sent"].as_bool()), (201, Some(true)), "{v}");
    token_from_outbox(&c, leader, "later@example.com", "Invitation token: ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_tickets_are_single_use_and_feed_alerts() {
    use futures::StreamExt;
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    assert_eq!(register_owner(&c, 0, "owner@example.com", None).await.0, 201);
    let owner = session(&c, 0, "owner@example.com").await;
    let ws_url = |node: usize, ticket: &str| {
        format!("{}/ws/alerts?ticket={ticket}", c.nodes[node].url().replace("http://", "ws://"))
    };

    assert!(tokio_tungstenite::connect_async(ws_url(0, "mst_nope")).await.is_err(), "unknown ticket");
    assert!(
        tokio_tungstenite::connect_async(format!(
            "{}/ws/alerts",
            c.nodes[0].url().replace("http://", "ws://")
        ))
        .await
        .is_err()
    );
    let (s, t) = call(&c, 1, "POST", "/api/v1/ws/ticket", &owner, None).await;
    assert_eq!((s, t["expires_in"].as_u64()), (200, Some(30)), "{t}");
    let ticket = t["ticket"].as_str().unwrap().to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(2, &ticket)).await.unwrap();
    assert!(
        tokio_tungstenite::connect_async(ws_url(0, &ticket)).await.is_err(),
        "a ticket opens one socket, cluster-wide"
    );

    // an alert fires (agent-side alert in a batch) → it arrives on the socket
    let url = c.nodes[0].url();
    let enrollment = enrollment_token(&c.http, &url).await;
    let agent = TestAgent::register(&c.http, &url, &enrollment, "live", false).await;
    let mut batch: Value = serde_json::from_slice(&agent.body(1, 1.0)).unwrap();
    batch["alerts"] =
        json!([{ "key": "unit_failed_nginx", "severity": "critical", "message": "nginx.service failed" }]);
    let (s, v) = agent.post(&url, &serde_json::to_vec(&batch).unwrap(), None).await.unwrap();
    assert_eq!(s, 200, "{v}");
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("an alert frame")
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["alert"]["key"].as_str()),
        (Some("alert"), Some("agent:unit_failed_nginx")),
        "{v}"
    );
}

/// The tokens after `label` in node `i`'s mails to `to`, oldest first (mail files are named by
/// their time).
fn tokens_in_outbox(c: &TestCluster, i: usize, to: &str, label: &str) -> Vec<String> {
    let dir = c.nodes[i].config.data_dir.join("outbox");
    let mut files: Vec<_> =
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            let pos = text.find(label).filter(|_| text.contains(&format!("To: {to}")))?;
            text[pos + label.len()..].split_whitespace().next().map(str::to_string)
        })
        .collect()
}

/// Waits for a mail to `to` whose text contains `needle` in any node's outbox.
async fn mail_containing(c: &TestCluster, to: &str, needle: &str) {
    let dirs: Vec<_> = c.nodes.iter().map(|n| n.config.data_dir.join("outbox")).collect();
    common::eventually(
        &format!("a mail to {to} saying {needle:?}"),
        std::time::Duration::from_secs(5),
        || async {
            dirs.iter().filter_map(|d| std::fs::read_dir(d).ok()).flatten().flatten().find_map(|e| {
                // long lines are folded (quoted-printable soft breaks): unfold before searching
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let text = text.replace("=\r\n", "").replace("=\n", "");
                (text.contains(&format!("To: {to}")) && text.contains(needle)).then_some(())
            })
        },
    )
    .await
}

/// Waits (up to 5 s) for `ws` to be closed by the server and returns the close code and reason.
async fn closed_by_server<S>(ws: &mut S) -> (u16, String)
where
    S: futures::Stream<
            Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await.expect("the server closes the socket");
        match next {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (0, String::new()),
            Some(Ok(_)) => {} // alert frames before the close
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_alert_feed_closes_when_its_user_is_disabled_or_loses_the_permission() {
    let c = TestCluster::start(3).await;
    c.wait_leader().await;
    assert_eq!(register_owner(&c, 0, "owner@example.com", None).await.0, 201);
    let owner = session(&c, 0, "owner@example.com").await;
    let role = json!({ "name": "No alerts", "permissions": ["agents:read"] });
    assert_eq!(call(&c, 0, "PUT", "/api/v1/roles/no_alerts", &owner, Some(role)).await.0, 200);
    let mut feeds = Vec::new();
    for (email, change) in [
        ("disabled@example.com", json!({ "disabled": true })),
        ("demoted@example.com", json!({ "role": "no_alerts" })),
    ] {
        let body = json!({ "email": email, "name": "U", "password": PW, "role": "operator" });
        let (s, user) = call(&c, 1, "POST", "/api/v1/users", &owner, Some(body)).await;
        assert_eq!(s, 201, "{user}");
        let token = session(&c, 1, email).await;
        let (s, t) = call(&c, 2, "POST", "/api/v1/ws/ticket", &token, None).await;
        assert_eq!(s, 200, "{t}");
        let url = format!(
            "{}/ws/alerts?ticket={}",
            c.nodes[2].url().replace("http://", "ws://"),
            t["ticket"].as_str().unwrap()
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        feeds.push((ws, user["id"].as_str().unwrap().to_string(), change));
    }
    for (mut ws, id, change) in feeds {
        let (s, v) = call(&c, 0, "PATCH", &format!("/api/v1/users/{id}"), &owner, Some(change.clone())).await;
        assert_eq!(s, 200, "{v}");
        let (code, reason) = closed_by_server(&mut ws).await;
        assert_eq!(code, 1008, "{change}: closed with a policy code, reason {reason:?}");
        assert!(!reason.is_empty(), "{change}: the reason is given");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn name_and_password_limits_count_characters_not_bytes() {
    let c = TestCluster::start(1).await;
    c.wait_leader().await;
    // 128 characters of two bytes each: within the documented maxLength of 128
    let name: String = "é".repeat(128);
    let (s, v) = split(
        c.http
            .post(format!("{}/api/v1/auth/register", c.nodes[0].url()))
            .json(&json!({ "email": "u@example.com", "password": "ü".repeat(1024), "name": name }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let token =
        login(&c, 0, "u@example.com", &"ü".repeat(1024)).await.1["token"].as_str().unwrap().to_string();
    let (s, v) =
        call(&c, 0, "POST", "/api/v1/api-keys", &token, Some(json!({ "name": "ß".repeat(128) }))).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) =
        call(&c, 0, "POST", "/api/v1/api-keys", &token, Some(json!({ "name": "ß".repeat(129) }))).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("invalid_body")), "{v}");
}
