//! Command implementations at the CLI edge that are more than a call into
//! one module: argument groups shared by several commands, and the
//! evidence commands (findings, export, verify, keygen, checkpoint), and
//! `bench`.

pub mod bench;
pub mod evidence;
pub mod silence;

/// Opens the findings store a `--db` names: an existing SQLite file, or a
/// `postgres://` URL (its password hidden in every message).
pub(crate) fn open_store(db: &std::path::Path) -> anyhow::Result<crate::store::Store> {
    use anyhow::Context;
    let text = db.to_string_lossy();
    if crate::store::is_postgres_url(&text) {
        // The store's error names the URL, its password hidden.
        return Ok(crate::store::Store::open(db)?);
    }
    if !db.exists() {
        anyhow::bail!(
            "{}: no such findings database (kaudit scan --db FILE creates one; a shared store is a postgres:// URL)",
            db.display()
        );
    }
    crate::store::Store::open(db).with_context(|| format!("cannot open {}", db.display()))
}
