//! Authentication and authorisation: password hashing ([`password`]), the permission matrix
//! ([`permissions`]), second factor ([`totp`]), the request principal ([`principal::Auth`]) and the batched session
//! activity ([`touch`]).

pub mod password;
pub mod permissions;
pub mod principal;
pub mod totp;
pub mod touch;

pub use permissions::Permission;
pub use principal::Auth;
