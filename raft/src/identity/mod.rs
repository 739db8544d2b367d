//! The identity domain of the replicated state: tenants, users, sessions, API keys, custom
//! roles. What a role may do (the permission matrix) is the hub's business; this domain stores
//! role ids and permission strings.

mod apply;
mod keys;
pub mod read;
pub mod types;

pub use apply::OWNER;
pub(crate) use apply::{Prescan, apply, needs_prescan, prescan};
pub use read::IdentityReader;
pub use types::*;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
