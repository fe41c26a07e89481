//! PiCloud's control plane (DESIGN.md §4): the management API over the store ([`api`], schedule
//! CRUD among it), the admin's first token ([`auth`]), the dashboard's files, script checks and
//! its flags. The data is `picloud-store`'s, the tokens and errors `picloud-edge`'s; it never
//! imports the node (`picloud-node`): the binaries wire the two.

pub mod api;
pub mod args;
pub mod auth;
pub mod dashboard;
pub mod script;

/// The store, under a short path for this crate's code.
pub(crate) use picloud_store as store;
