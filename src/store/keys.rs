//! Ed25519 signing keys on disk: generating, writing and reading them.
//!
//! Format: the private key is PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) in
//! `PATH`, mode 0600; the public key is SPKI PEM (`-----BEGIN PUBLIC
//! KEY-----`) in `PATH.pub`. Both are what OpenSSL reads, so a signature can
//! be checked without kaudit:
//!
//! ```text
//! openssl pkeyutl -verify -pubin -inkey PATH.pub -rawin -in MESSAGE -sigfile SIGNATURE
//! ```
//!
//! Used by chain checkpoints (`store::checkpoint`) and signed exports. Keys
//! are never logged (DESIGN.md principle 6).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

/// What can go wrong with a key file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{} already exists: kaudit never overwrites a key; remove it first or choose another path",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error("cannot write the key file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is not an Ed25519 private key in PKCS#8 PEM (as `kaudit keygen` writes): {reason}",
        path.display()
    )]
    BadPrivate { path: PathBuf, reason: String },
    #[error(
        "{} is not an Ed25519 public key in SPKI PEM (the FILE.pub `kaudit keygen` writes): {reason}",
        path.display()
    )]
    BadPublic { path: PathBuf, reason: String },
    #[error("cannot encode the key as PEM: {0}")]
    Encode(String),
}

/// A new random signing key from the operating system's generator.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// Where the public key of the private key file `path` goes: `PATH.pub`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Writes `key` to `path` (PKCS#8 PEM, mode 0600) and its public key to
/// `PATH.pub` (SPKI PEM). Refuses to overwrite either file.
pub fn write_pem(key: &SigningKey, path: &Path) -> Result<(), Error> {
    let pub_path = public_key_path(path);
    for p in [path, pub_path.as_path()] {
        if p.exists() {
            return Err(Error::Exists { path: p.to_owned() });
        }
    }
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::Encode(e.to_string()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::Encode(e.to_string()))?;
    write_new(path, private.as_bytes(), 0o600)?;
    write_new(&pub_path, public.as_bytes(), 0o644)?;
    tracing::info!(path = %path.display(), public_key = %pub_path.display(), "signing key written");
    Ok(())
}

/// Creates `path` (failing if it exists) with `mode` and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists {
                path: path.to_owned(),
            }
        } else {
            Error::Write {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a private key written by [`write_pem`] (or `openssl genpkey
/// -algorithm ed25519`).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, Error> {
    let text = read(path)?;
    #[cfg(unix)]
    if let Ok(meta) = fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "signing key file is readable by others: chmod 600 it");
        }
    }
    let bad = |reason: String| Error::BadPrivate {
        path: path.to_owned(),
        reason,
    };
    if text.contains("PUBLIC KEY") {
        return Err(bad(
            "it holds a public key; give the private key file (without .pub)".into(),
        ));
    }
    SigningKey::from_pkcs8_pem(&text).map_err(|e| bad(e.to_string()))
}

/// Reads a public key written by [`write_pem`] (`PATH.pub`, or `openssl pkey
/// -pubout`).
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, Error> {
    let text = read(path)?;
    let bad = |reason: String| Error::BadPublic {
        path: path.to_owned(),
        reason,
    };
    if text.contains("PRIVATE KEY") {
        return Err(bad(
            "it holds a private key; give the public key (the .pub file), and keep the private key away from verifiers".into(),
        ));
    }
    VerifyingKey::from_public_key_pem(&text).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, Verifier};

    #[test]
    fn keys_round_trip_and_private_key_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaudit.key");
        let key = generate();
        write_pem(&key, &path).unwrap();
        let back = read_signing_key(&path).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        let public = read_verifying_key(&public_key_path(&path)).unwrap();
        assert_eq!(public, key.verifying_key());
        let sig = back.sign(b"hello");
        assert!(public.verify(b"hello", &sig).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwritten.
        let err = write_pem(&generate(), &path).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(read_signing_key(&path).unwrap().to_bytes(), key.to_bytes());
    }

    #[test]
    fn swapped_or_bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_pem(&generate(), &path).unwrap();
        let e = read_verifying_key(&path).unwrap_err();
        assert!(e.to_string().contains("holds a private key"), "{e}");
        let e = read_signing_key(&public_key_path(&path)).unwrap_err();
        assert!(e.to_string().contains("holds a public key"), "{e}");
        let junk = dir.path().join("junk");
        fs::write(&junk, "hello").unwrap();
        assert!(matches!(
            read_signing_key(&junk),
            Err(Error::BadPrivate { .. })
        ));
        assert!(matches!(
            read_verifying_key(&junk),
            Err(Error::BadPublic { .. })
        ));
        let e = read_signing_key(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read the key file"), "{e}");
    }

    #[test]
    fn openssl_verifies_our_signatures() {
        let Ok(out) = std::process::Command::new("openssl")
            .arg("version")
            .output()
        else {
            eprintln!("openssl not installed: skipped");
            return;
        };
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = generate();
        write_pem(&key, &path).unwrap();
        let msg = dir.path().join("msg");
        let sig = dir.path().join("sig");
        fs::write(&msg, b"kaudit-chain-v1\n1\nabc\n0").unwrap();
        fs::write(&sig, key.sign(b"kaudit-chain-v1\n1\nabc\n0").to_bytes()).unwrap();
        let verify = |m: &Path| {
            std::process::Command::new("openssl")
                .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
                .arg(public_key_path(&path))
                .arg("-in")
                .arg(m)
                .arg("-sigfile")
                .arg(&sig)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verify(&msg));
        fs::write(&msg, b"kaudit-chain-v1\n2\nabc\n0").unwrap();
        assert!(!verify(&msg));
        // And openssl's private key reads back in kaudit.
        let ossl = dir.path().join("ossl.pem");
        let st = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&ossl)
            .status()
            .unwrap();
        assert!(st.success());
        read_signing_key(&ossl).unwrap();
    }
}
