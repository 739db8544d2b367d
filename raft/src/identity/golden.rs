//! Golden bytes of the identity domain's part of the Raft log: every variant of
//! [`IdentityCommand`], of the enum inside it ([`SecondFactor`]), and of the results followers
//! decode ([`IdentityResult`], [`IdentityRejection`]).
//!
//! A FAILING TEST HERE MEANS THE LOG FORMAT CHANGED: a variant was reordered or removed, or a
//! payload struct's fields changed. Nodes of the previous release would misread the log. Put
//! the old shape back and add a new variant at the end instead (see the module doc of
//! `command`); never edit these strings to make a test pass.
//!
//! Values are encoded wrapped in [`Command::Identity`] / [`CommandResult`], like
//! `command::tests::encoding_is_stable`, so the outer tag is pinned too: the first 4 bytes are
//! the outer variant index, the next 4 the inner one (little-endian u32), strings are a u64
//! length and the bytes. Fields of the same type get distinct values, so swapping two of them
//! changes the bytes.

use super::*;
use crate::codec::assert_golden as check;
use crate::{Command, CommandResult};

/// A user with TOTP set up (`Some`, non-empty vectors).
fn user() -> User {
    User {
        id: "u1".into(),
        tenant: "t".into(),
        email: "e".into(),
        name: "n".into(),
        role: "r".into(),
        password_hash: "h".into(),
        disabled: false,
        created_at_ms: 1,
        password_changed_at_ms: 2,
        totp: Some(TotpState {
            secret_enc: vec![1, 2],
            enabled: true,
            last_step: 3,
            recovery: vec![[7; 32]],
        }),
    }
}

fn session() -> Session {
    Session {
        sha256: [7; 32],
        tenant: "t".into(),
        user_id: "u1".into(),
        created_at_ms: 1,
        expires_at_ms: 2,
        idle_timeout_ms: 3,
        last_seen_ms: 4,
    }
}

fn ticket() -> Ticket {
    Ticket {
        sha256: [7; 32],
        tenant: "t".into(),
        user_id: Some("u1".into()),
        role: "r".into(),
        expires_at_ms: 1,
    }
}

#[test]
fn identity_commands_are_pinned() {
    let identity = Command::Identity;
    check(&[
        (
            identity(IdentityCommand::CreateTenant {
                tenant: Tenant { id: "t".into(), name: "n".into(), created_at_ms: 1 },
                owner: User { totp: None, ..user() },
                only_if_no_owner: true,
            }),
            "040000000000000001000000000000007401000000000000006e01000000000000000200000000000000753101000000000000007401000000000000006501000000000000006e01000000000000007201000000000000006800010000000000000002000000000000000001",
        ),
        (
            identity(IdentityCommand::CreateUser(user())),
            "04000000010000000200000000000000753101000000000000007401000000000000006501000000000000006e0100000000000000720100000000000000680001000000000000000200000000000000010200000000000000010201030000000000000001000000000000000707070707070707070707070707070707070707070707070707070707070707",
        ),
        (
            identity(IdentityCommand::UpdateUser {
                tenant: "t".into(),
                user_id: "u1".into(),
                name: Some("n".into()),
                role: None,
                disabled: Some(true),
                actor: "u2".into(),
                at_ms: 1,
            }),
            "0400000002000000010000000000000074020000000000000075310101000000000000006e000101020000000000000075320100000000000000",
        ),
        (
            identity(IdentityCommand::SetPassword {
                tenant: "t".into(),
                user_id: "u1".into(),
                password_hash: "h".into(),
                keep_session: Some([7; 32]),
                actor: "u2".into(),
                at_ms: 1,
            }),
            "040000000300000001000000000000007402000000000000007531010000000000000068010707070707070707070707070707070707070707070707070707070707070707020000000000000075320100000000000000",
        ),
        (
            identity(IdentityCommand::CreateSession(session())),
            "04000000040000000707070707070707070707070707070707070707070707070707070707070707010000000000000074020000000000000075310100000000000000020000000000000003000000000000000400000000000000",
        ),
        (
            identity(IdentityCommand::RevokeSession { sha256: [7; 32], at_ms: 1 }),
            "040000000500000007070707070707070707070707070707070707070707070707070707070707070100000000000000",
        ),
        (
            identity(IdentityCommand::TouchSessions { seen: vec![([7; 32], 1)] }),
            "0400000006000000010000000000000007070707070707070707070707070707070707070707070707070707070707070100000000000000",
        ),
        (
            identity(IdentityCommand::CreateApiKey(ApiKey {
                id: "k1".into(),
                sha256: [7; 32],
                tenant: "t".into(),
                user_id: Some("u1".into()),
                name: "n".into(),
                role: "r".into(),
                created_at_ms: 1,
                expires_at_ms: Some(2),
                last_used_ms: 3,
            })),
            "040000000700000002000000000000006b310707070707070707070707070707070707070707070707070707070707070707010000000000000074010200000000000000753101000000000000006e01000000000000007201000000000000000102000000000000000300000000000000",
        ),
        (
            identity(IdentityCommand::RevokeApiKey {
                tenant: "t".into(),
                id: "k1".into(),
                actor: "u1".into(),
                at_ms: 1,
            }),
            "040000000800000001000000000000007402000000000000006b31020000000000000075310100000000000000",
        ),
        (
            identity(IdentityCommand::PutRole(CustomRole {
                id: "r1".into(),
                tenant: "t".into(),
                name: "n".into(),
                permissions: vec!["p".into()],
            })),
            "04000000090000000200000000000000723101000000000000007401000000000000006e0100000000000000010000000000000070",
        ),
        (
            identity(IdentityCommand::DeleteRole {
                tenant: "t".into(),
                id: "r1".into(),
                actor: "u1".into(),
                at_ms: 1,
            }),
            "040000000a00000001000000000000007402000000000000007231020000000000000075310100000000000000",
        ),
        (
            identity(IdentityCommand::SetTotpPending {
                tenant: "t".into(),
                user_id: "u1".into(),
                secret_enc: vec![1, 2],
            }),
            "040000000b0000000100000000000000740200000000000000753102000000000000000102",
        ),
        (
            identity(IdentityCommand::EnableTotp {
                tenant: "t".into(),
                user_id: "u1".into(),
                step: 1,
                recovery: vec![[7; 32]],
                at_ms: 2,
            }),
            "040000000c000000010000000000000074020000000000000075310100000000000000010000000000000007070707070707070707070707070707070707070707070707070707070707070200000000000000",
        ),
        (
            identity(IdentityCommand::DisableTotp {
                tenant: "t".into(),
                user_id: "u1".into(),
                factor: SecondFactor::Step(1),
                at_ms: 2,
            }),
            "040000000d000000010000000000000074020000000000000075310000000001000000000000000200000000000000",
        ),
        (
            identity(IdentityCommand::CreateChallenge(LoginChallenge {
                sha256: [7; 32],
                tenant: "t".into(),
                user_id: "u1".into(),
                expires_at_ms: 1,
            })),
            "040000000e0000000707070707070707070707070707070707070707070707070707070707070707010000000000000074020000000000000075310100000000000000",
        ),
        (
            identity(IdentityCommand::CompleteLogin {
                challenge: [8; 32],
                factor: SecondFactor::Recovery([9; 32]),
                session: session(),
            }),
            "040000000f00000008080808080808080808080808080808080808080808080808080808080808080100000009090909090909090909090909090909090909090909090909090909090909090707070707070707070707070707070707070707070707070707070707070707010000000000000074020000000000000075310100000000000000020000000000000003000000000000000400000000000000",
        ),
        (
            identity(IdentityCommand::CreateInvitation(Invitation {
                sha256: [7; 32],
                tenant: "t".into(),
                email: "e".into(),
                role: "r".into(),
                invited_by: "u1".into(),
                created_at_ms: 1,
                expires_at_ms: 2,
            })),
            "040000001000000007070707070707070707070707070707070707070707070707070707070707070100000000000000740100000000000000650100000000000000720200000000000000753101000000000000000200000000000000",
        ),
        (
            identity(IdentityCommand::AcceptInvitation { sha256: [8; 32], user: user() }),
            "040000001100000008080808080808080808080808080808080808080808080808080808080808080200000000000000753101000000000000007401000000000000006501000000000000006e0100000000000000720100000000000000680001000000000000000200000000000000010200000000000000010201030000000000000001000000000000000707070707070707070707070707070707070707070707070707070707070707",
        ),
        (
            identity(IdentityCommand::CreateReset(ResetToken {
                sha256: [7; 32],
                tenant: "t".into(),
                user_id: "u1".into(),
                expires_at_ms: 1,
            })),
            "04000000120000000707070707070707070707070707070707070707070707070707070707070707010000000000000074020000000000000075310100000000000000",
        ),
        (
            identity(IdentityCommand::CompleteReset { sha256: [7; 32], password_hash: "h".into(), at_ms: 1 }),
            "040000001300000007070707070707070707070707070707070707070707070707070707070707070100000000000000680100000000000000",
        ),
        (
            identity(IdentityCommand::TouchApiKeys { seen: vec![([7; 32], 1)] }),
            "0400000014000000010000000000000007070707070707070707070707070707070707070707070707070707070707070100000000000000",
        ),
        (
            identity(IdentityCommand::CreateTicket(ticket())),
            "0400000015000000070707070707070707070707070707070707070707070707070707070707070701000000000000007401020000000000000075310100000000000000720100000000000000",
        ),
        (
            identity(IdentityCommand::ConsumeTicket { sha256: [7; 32], at_ms: 1 }),
            "040000001600000007070707070707070707070707070707070707070707070707070707070707070100000000000000",
        ),
        (
            identity(IdentityCommand::CreateResetExclusive(ResetToken {
                sha256: [7; 32],
                tenant: "t".into(),
                user_id: "u1".into(),
                expires_at_ms: 1,
            })),
            "04000000170000000707070707070707070707070707070707070707070707070707070707070707010000000000000074020000000000000075310100000000000000",
        ),
        (
            identity(IdentityCommand::CompleteResetExclusive {
                sha256: [7; 32],
                password_hash: "h".into(),
                at_ms: 1,
            }),
            "040000001800000007070707070707070707070707070707070707070707070707070707070707070100000000000000680100000000000000",
        ),
    ]);
}

#[test]
fn identity_results_are_pinned() {
    let result = CommandResult::Identity;
    let rejected = CommandResult::IdentityRejected;
    check(&[
        (
            result(IdentityResult::User(Box::new(user()))),
            "05000000000000000200000000000000753101000000000000007401000000000000006501000000000000006e0100000000000000720100000000000000680001000000000000000200000000000000010200000000000000010201030000000000000001000000000000000707070707070707070707070707070707070707070707070707070707070707",
        ),
        (result(IdentityResult::Done), "0500000001000000"),
        (
            result(IdentityResult::Ticket(Box::new(ticket()))),
            "0500000002000000070707070707070707070707070707070707070707070707070707070707070701000000000000007401020000000000000075310100000000000000720100000000000000",
        ),
        (rejected(IdentityRejection::OwnerExists), "0600000000000000"),
        (rejected(IdentityRejection::TenantExists), "0600000001000000"),
        (rejected(IdentityRejection::EmailTaken), "0600000002000000"),
        (rejected(IdentityRejection::NotFound), "0600000003000000"),
        (rejected(IdentityRejection::RoleInUse), "0600000004000000"),
        (rejected(IdentityRejection::LastOwner), "0600000005000000"),
        (rejected(IdentityRejection::CodeRejected), "0600000006000000"),
        (rejected(IdentityRejection::ChallengeInvalid), "0600000007000000"),
        (rejected(IdentityRejection::TotpState), "0600000008000000"),
        (rejected(IdentityRejection::TokenInvalid), "0600000009000000"),
    ]);
}

/// [`SecondFactor`] on its own (both variants also appear above in context).
#[test]
fn second_factor_is_pinned() {
    check(&[
        (SecondFactor::Step(1), "000000000100000000000000"),
        (
            SecondFactor::Recovery([7; 32]),
            "010000000707070707070707070707070707070707070707070707070707070707070707",
        ),
    ]);
}
