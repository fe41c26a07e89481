//! The all-in-one PiCloud binary's library half: the command line, its API client and the server. Kept in a library so that
//! tests can reach the same code the binary runs.

pub mod admin;
pub mod cli;
pub mod client;
pub mod fmt;
pub mod serve;
