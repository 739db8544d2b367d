//! State-machine tests of the identity domain.

use super::*;
use crate::state_machine::test_support::apply_commands;
use crate::{Command, CommandResult, Options, StateMachineStore, storage};

async fn run(sm: &mut StateMachineStore, cmd: IdentityCommand) -> CommandResult {
    apply_commands(sm, vec![Command::Identity(cmd)]).await.remove(0)
}

fn user(id: &str, email: &str, role: &str) -> User {
    User {
        id: id.into(),
        tenant: "t".into(),
        email: email.into(),
        name: id.into(),
        role: role.into(),
        password_hash: "$argon2id$x".into(),
        disabled: false,
        created_at_ms: 1,
        password_changed_at_ms: 1,
        totp: None,
    }
}

fn session(sha: u8, user: &str) -> Session {
    Session {
        sha256: [sha; 32],
        tenant: "t".into(),
        user_id: user.into(),
        created_at_ms: 10,
        expires_at_ms: 1000,
        idle_timeout_ms: 100,
        last_seen_ms: 10,
    }
}

#[tokio::test]
async fn bootstrap_once_sessions_and_disable() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
    let ident = sm.reader().identity();
    let tenant = Tenant { id: "t".into(), name: "T".into(), created_at_ms: 1 };
    let boot =
        |u: User| IdentityCommand::CreateTenant { tenant: tenant.clone(), owner: u, only_if_no_owner: true };
    assert!(matches!(run(&mut sm, boot(user("o", "o@x.io", OWNER))).await, CommandResult::Identity(_)));
    assert!(ident.has_owner().unwrap());
    assert_eq!(
        run(&mut sm, boot(user("o2", "o2@x.io", OWNER))).await,
        CommandResult::IdentityRejected(IdentityRejection::OwnerExists)
    );
    assert_eq!(
        run(&mut sm, IdentityCommand::CreateUser(user("u", "o@x.io", "viewer"))).await,
        CommandResult::IdentityRejected(IdentityRejection::EmailTaken)
    );
    run(&mut sm, IdentityCommand::CreateUser(user("u", "u@x.io", "viewer"))).await;
    assert_eq!(ident.user_by_email("u@x.io").unwrap().unwrap().id, "u");

    run(&mut sm, IdentityCommand::CreateSession(session(1, "u"))).await;
    run(&mut sm, IdentityCommand::CreateSession(session(2, "u"))).await;
    run(&mut sm, IdentityCommand::TouchSessions { seen: vec![([1; 32], 50), ([1; 32], 40)] }).await;
    assert_eq!(ident.session(&[1; 32]).unwrap().unwrap().last_seen_ms, 50);
    let disable = IdentityCommand::UpdateUser {
        tenant: "t".into(),
        user_id: "u".into(),
        name: None,
        role: None,
        disabled: Some(true),
        actor: "o".into(),
        at_ms: 60,
    };
    run(&mut sm, disable).await;
    assert!(ident.session(&[1; 32]).unwrap().is_none() && ident.session(&[2; 32]).unwrap().is_none());
    assert_eq!(
        run(&mut sm, IdentityCommand::CreateSession(session(3, "u"))).await,
        CommandResult::IdentityRejected(IdentityRejection::NotFound)
    );

    // the last owner stays
    let demote = IdentityCommand::UpdateUser {
        tenant: "t".into(),
        user_id: "o".into(),
        name: None,
        role: Some("admin".into()),
        disabled: None,
        actor: "o".into(),
        at_ms: 70,
    };
    assert_eq!(run(&mut sm, demote).await, CommandResult::IdentityRejected(IdentityRejection::LastOwner));
}

#[tokio::test]
async fn roles_in_use_are_kept_and_keys_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
    let ident = sm.reader().identity();
    let role = CustomRole {
        id: "desk".into(),
        tenant: "t".into(),
        name: "Desk".into(),
        permissions: vec!["alerts:read".into()],
    };
    run(&mut sm, IdentityCommand::PutRole(role)).await;
    let key = ApiKey {
        id: "k".into(),
        sha256: [9; 32],
        tenant: "t".into(),
        user_id: None,
        name: "k".into(),
        role: "desk".into(),
        created_at_ms: 1,
        expires_at_ms: None,
        last_used_ms: 0,
    };
    run(&mut sm, IdentityCommand::CreateApiKey(key)).await;
    let del =
        IdentityCommand::DeleteRole { tenant: "t".into(), id: "desk".into(), actor: "o".into(), at_ms: 2 };
    assert_eq!(
        run(&mut sm, del.clone()).await,
        CommandResult::IdentityRejected(IdentityRejection::RoleInUse)
    );
    run(
        &mut sm,
        IdentityCommand::RevokeApiKey { tenant: "t".into(), id: "k".into(), actor: "o".into(), at_ms: 3 },
    )
    .await;
    assert!(ident.api_key(&[9; 32]).unwrap().is_none());
    assert_eq!(run(&mut sm, del).await, CommandResult::Identity(IdentityResult::Done));
    assert!(ident.roles("t").unwrap().is_empty());
}

#[tokio::test]
async fn a_users_newest_reset_token_is_the_only_one_that_works_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = storage::open(dir.path(), &Options::default()).await.unwrap().sm;
    let tenant = Tenant { id: "t".into(), name: "T".into(), created_at_ms: 1 };
    let owner = user("o", "o@x.io", OWNER);
    run(&mut sm, IdentityCommand::CreateTenant { tenant, owner, only_if_no_owner: true }).await;
    let token = |sha: u8| ResetToken {
        sha256: [sha; 32],
        tenant: "t".into(),
        user_id: "o".into(),
        expires_at_ms: 1000,
    };
    let complete = |sha: u8| IdentityCommand::CompleteResetExclusive {
        sha256: [sha; 32],
        password_hash: format!("$argon2id${sha}"),
        at_ms: 10,
    };
    let invalid = CommandResult::IdentityRejected(IdentityRejection::TokenInvalid);
    let done = CommandResult::Identity(IdentityResult::Done);
    run(&mut sm, IdentityCommand::CreateResetExclusive(token(1))).await;
    run(&mut sm, IdentityCommand::CreateResetExclusive(token(2))).await;
    assert_eq!(run(&mut sm, complete(1)).await, invalid, "issuing a newer token ended the older one");
    assert_eq!(run(&mut sm, complete(2)).await, done);
    assert_eq!(sm.reader().identity().user("t", "o").unwrap().unwrap().password_hash, "$argon2id$2");
    assert_eq!(run(&mut sm, complete(2)).await, invalid, "single use");
    // a token issued before the feature (no newest recorded for its user) still works once;
    // once a token was used, none of the user's older ones does
    run(&mut sm, IdentityCommand::CreateReset(token(3))).await;
    assert_eq!(
        run(&mut sm, complete(3)).await,
        invalid,
        "the user's last token was used: older ones are dead"
    );
    let other = user("v", "v@x.io", "viewer");
    run(&mut sm, IdentityCommand::CreateUser(other)).await;
    let legacy = ResetToken { sha256: [4; 32], tenant: "t".into(), user_id: "v".into(), expires_at_ms: 1000 };
    run(&mut sm, IdentityCommand::CreateReset(legacy)).await;
    assert_eq!(run(&mut sm, complete(4)).await, done, "a token from before the feature");
}
