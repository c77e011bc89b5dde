//! Command implementations at the CLI edge that are more than a call into
//! one module: argument groups shared by several commands, and the
//! evidence commands (findings, export, verify, keygen, checkpoint), and
//! `bench`.

pub mod bench;
pub mod evidence;
pub mod silence;
