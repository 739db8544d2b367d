//! What each role may do. Every route declares one [`Permission`]; a principal holds a set of
//! them, from its system role ([`system_role`]) or its tenant's custom role.

use std::collections::BTreeSet;

/// A permission an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// See agents, their telemetry, inventory and processes.
    AgentsRead,
    /// Delete agents, rotate their tokens and keys.
    AgentsWrite,
    /// Create and revoke enrollment tokens.
    EnrollmentManage,
    /// See alerts and rules.
    AlertsRead,
    /// Acknowledge and resolve alerts.
    AlertsWrite,
    /// Change alert rules.
    RulesWrite,
    /// See tenant settings.
    SettingsRead,
    /// Change tenant settings.
    SettingsWrite,
    /// Read the audit log.
    AuditRead,
    /// See integrity anomalies.
    IntegrityRead,
    /// Resolve integrity anomalies.
    IntegrityWrite,
    /// See users, roles and API keys.
    UsersRead,
    /// Create, change and disable users; manage API keys and roles.
    UsersWrite,
    /// See cluster membership and placement.
    ClusterRead,
    /// Change cluster membership (break-glass admin token only).
    ClusterWrite,
}

/// Every permission with its string form (custom roles use the strings).
pub const ALL: [(Permission, &str); 15] = [
    (Permission::AgentsRead, "agents:read"),
    (Permission::AgentsWrite, "agents:write"),
    (Permission::EnrollmentManage, "enrollment:manage"),
    (Permission::AlertsRead, "alerts:read"),
    (Permission::AlertsWrite, "alerts:write"),
    (Permission::RulesWrite, "rules:write"),
    (Permission::SettingsRead, "settings:read"),
    (Permission::SettingsWrite, "settings:write"),
    (Permission::AuditRead, "audit:read"),
    (Permission::IntegrityRead, "integrity:read"),
    (Permission::IntegrityWrite, "integrity:write"),
    (Permission::UsersRead, "users:read"),
    (Permission::UsersWrite, "users:write"),
    (Permission::ClusterRead, "cluster:read"),
    (Permission::ClusterWrite, "cluster:write"),
];

impl Permission {
    /// The string form.
    pub fn name(self) -> &'static str {
        ALL.iter().find(|(p, _)| *p == self).map(|(_, n)| *n).expect("every permission is listed")
    }

    /// Parses a string form.
    pub fn parse(s: &str) -> Option<Permission> {
        ALL.iter().find(|(_, n)| *n == s).map(|(p, _)| *p)
    }
}

/// System role ids, most powerful first.
pub const SYSTEM_ROLES: [&str; 5] = ["owner", "admin", "operator", "analyst", "viewer"];

/// The permissions of a system role; `None` for other ids.
pub fn system_role(role: &str) -> Option<BTreeSet<Permission>> {
    use Permission::*;
    let list: &[Permission] = match role {
        "owner" | "admin" => &[
            AgentsRead,
            AgentsWrite,
            EnrollmentManage,
            AlertsRead,
            AlertsWrite,
            RulesWrite,
            SettingsRead,
            SettingsWrite,
            AuditRead,
            IntegrityRead,
            IntegrityWrite,
            UsersRead,
            UsersWrite,
            ClusterRead,
        ],
        "operator" => &[
            AgentsRead,
            AgentsWrite,
            EnrollmentManage,
            AlertsRead,
            AlertsWrite,
            RulesWrite,
            SettingsRead,
            IntegrityRead,
            IntegrityWrite,
            ClusterRead,
        ],
        "analyst" => {
            &[AgentsRead, AlertsRead, SettingsRead, AuditRead, IntegrityRead, UsersRead, ClusterRead]
        }
        "viewer" => &[AgentsRead, AlertsRead, SettingsRead],
        _ => return None,
    };
    Some(list.iter().copied().collect())
}

/// Whether role `a` may grant role `b` (no one hands out more than they hold; only owners make
/// owners).
pub fn may_grant(
    holder: &BTreeSet<Permission>,
    holder_role: &str,
    granted: &BTreeSet<Permission>,
    granted_role: &str,
) -> bool {
    (granted_role != "owner" || holder_role == "owner") && granted.is_subset(holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_roles_nest() {
        for (p, n) in ALL {
            assert_eq!(Permission::parse(n), Some(p));
            assert_eq!(p.name(), n);
        }
        let role = |r: &str| system_role(r).unwrap();
        // viewer ⊂ operator, analyst ⊂ admin ⊆ owner: operators act, analysts read broadly
        assert!(role("viewer").is_subset(&role("operator")) && role("viewer").is_subset(&role("analyst")));
        assert!(role("operator").is_subset(&role("admin")) && role("analyst").is_subset(&role("admin")));
        assert!(role("admin").is_subset(&role("owner")));
        assert!(
            !role("operator").contains(&Permission::AuditRead)
                && role("analyst").contains(&Permission::AuditRead)
        );
        assert!(
            !role("owner").contains(&Permission::ClusterWrite),
            "membership changes are break-glass only"
        );
        assert!(system_role("root").is_none());
    }
}
