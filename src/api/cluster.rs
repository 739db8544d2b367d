//! Cluster status and online membership changes.
//!
//! - `GET /api/v1/cluster` (admin): this node's view: Raft state, leader, term, applied index,
//!   members with their gossip liveness and versions. A local read: it shows what *this* node
//!   knows, which is what an operator debugging a node wants.
//! - `POST /api/v1/cluster/members` (admin or cluster secret): add a node as learner, wait for it
//!   to catch up, promote it to voter (unless `promote: false`). Leader-routed.
//! - `POST /api/v1/cluster/members/{id}/promote` (admin): learner → voter. Leader-routed.
//! - `DELETE /api/v1/cluster/members/{id}` (admin): remove a voter or learner. Leader-routed.
//! - `GET /api/v1/cluster/placement/{kind}/{key}` (admin): which node owns an actor key now.
//! - `POST /api/v1/cluster/members/{id}/drain` (admin): the node drains (hands over its actors
//!   and, if it leads, leadership) and stops; answered 202 once it was told. Relayed to the node.
//! - `POST /api/v1/cluster/finalize-upgrade` (admin): raise the active cluster version to the
//!   newest one every member supports (see `cluster::upgrade`). Proposed through the leader.
//!
//! Membership changes run one at a time (a lock on the leader) through openraft's joint consensus.

use axum::Json;
use axum::extract::{Path, State};
use monsys_actors::ActorKey;
use monsys_proto::DEFAULT_TENANT;
use monsys_proto::cluster::{ClusterStatus, FinalizeUpgrade, JoinRequest};
use serde_json::json;

use super::extract::{ClusterAuth, JsonBody};
use crate::auth::{Auth, Permission};
use crate::cluster::membership::MembershipError;
use crate::cluster::upgrade::FinalizeError;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::replica::Replica;
use crate::routing::owner;

/// `GET /api/v1/cluster`.
pub async fn status(State(replica): State<Replica>, auth: Auth) -> Result<Json<ClusterStatus>, ApiError> {
    auth.require(Permission::ClusterRead)?;
    Ok(Json(crate::cluster::status::status(&replica)))
}

/// `POST /api/v1/cluster/members`.
pub async fn add(
    State(hub): State<Hub>,
    auth: ClusterAuth,
    JsonBody(req): JsonBody<JoinRequest>,
) -> Result<Json<ClusterStatus>, ApiError> {
    validate_addr("api_addr", &req.api_addr)?;
    validate_addr("gossip_addr", &req.gossip_addr)?;
    let details = json!({ "node_id": req.id, "api_addr": req.api_addr, "promote": req.promote });
    let status = hub.membership.add(req).await?;
    hub.audit.record(DEFAULT_TENANT, "cluster_member_added", auth.actor(), details);
    Ok(Json(status))
}

/// `POST /api/v1/cluster/members/{id}/promote`.
pub async fn promote(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<u64>,
) -> Result<Json<ClusterStatus>, ApiError> {
    auth.require(Permission::ClusterWrite)?;
    let status = hub.membership.promote(id).await?;
    hub.audit.record(DEFAULT_TENANT, "cluster_member_promoted", &auth.actor(), json!({ "node_id": id }));
    Ok(Json(status))
}

/// `DELETE /api/v1/cluster/members/{id}`.
pub async fn remove(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<u64>,
) -> Result<Json<ClusterStatus>, ApiError> {
    auth.require(Permission::ClusterWrite)?;
    let status = hub.membership.remove(id).await?;
    hub.audit.record(DEFAULT_TENANT, "cluster_member_removed", &auth.actor(), json!({ "node_id": id }));
    Ok(Json(status))
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        match e {
            e @ MembershipError::NotMember(_) => ApiError::NotFound(e.to_string()),
            MembershipError::Write(e) => e.into(),
        }
    }
}

/// `POST /api/v1/cluster/members/{id}/drain`.
pub async fn drain(
    State(hub): State<Hub>,
    auth: Auth,
    Path(id): Path<u64>,
) -> Result<(axum::http::StatusCode, Json<serde_json::Value>), ApiError> {
    auth.require(Permission::ClusterWrite)?;
    if id == hub.replica.id() {
        hub.draining.request();
    } else {
        let metrics = hub.replica.raft_metrics();
        let Some(node) = metrics.membership_config.membership().get_node(&id).cloned() else {
            return Err(ApiError::NotFound(format!("node {id} is not a member")));
        };
        hub.forwarder.drain(&node.api_addr, id).await?;
    }
    hub.audit.record(DEFAULT_TENANT, "cluster_member_drained", &auth.actor(), json!({ "node_id": id }));
    Ok((axum::http::StatusCode::ACCEPTED, Json(json!({ "node_id": id, "draining": true }))))
}

/// `POST /api/v1/cluster/finalize-upgrade`.
pub async fn finalize_upgrade(State(hub): State<Hub>, auth: Auth) -> Result<Json<FinalizeUpgrade>, ApiError> {
    auth.require(Permission::ClusterWrite)?;
    let done = crate::cluster::upgrade::finalize(&hub.replica).await?;
    if done.active != done.previous {
        let details = json!({ "active_version": done.active, "previous_version": done.previous });
        hub.audit.record(DEFAULT_TENANT, "cluster_upgrade_finalized", &auth.actor(), details);
    }
    Ok(Json(FinalizeUpgrade { active_version: done.active, previous_version: done.previous }))
}

impl From<FinalizeError> for ApiError {
    fn from(e: FinalizeError) -> Self {
        match e {
            e @ (FinalizeError::MembersDown(_) | FinalizeError::NotSupported { .. }) => {
                ApiError::UpgradeBlocked(e.to_string())
            }
            FinalizeError::Write(e) => e.into(),
        }
    }
}

/// `GET /api/v1/cluster/placement/{kind}/{key}`.
pub async fn placement(
    State(hub): State<Hub>,
    auth: Auth,
    Path((kind, key)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth.require(Permission::ClusterRead)?;
    let key = match kind.as_str() {
        "agent" => ActorKey::Agent(key),
        "console" => ActorKey::Console(key),
        "limit" => ActorKey::Limit(key),
        other => {
            return Err(ApiError::NotFound(format!("unknown actor kind {other:?} (agent, console, limit)")));
        }
    };
    let view = owner::view(&hub);
    let ranked = view.ranked(&key);
    Ok(Json(json!({
        "key": key.to_string(),
        "owner": ranked.first(),
        "successors": ranked.iter().skip(1).collect::<Vec<_>>(),
        "epoch": view.epoch(),
    })))
}

fn validate_addr(field: &str, addr: &str) -> Result<(), ApiError> {
    let ok =
        addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(ApiError::Validation(vec![monsys_proto::settings::FieldError {
            field: field.to_string(),
            message: format!("expected host:port, got {addr:?}"),
        }]))
    }
}
