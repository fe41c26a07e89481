//! Secrets at rest: the values of a function's secret variables are sealed in the database
//! with ChaCha20-Poly1305 under a key kept outside it (a file of 32 random bytes, mode 0600,
//! made at first start). A copy of the database (a backup, a stolen disk image, a replica) holds
//! no secret in the clear, and a sealed value moved to another variable or function does not
//! open (its function and name are the seal's associated data). docs/operations.md says how to
//! back the key up and share it with a cluster's nodes.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// What a sealed value starts with in the database; any other value is stored in the clear
/// (not a secret, or written before sealing existed: sealed at the next start).
pub const SEALED_PREFIX: &str = "sealed1:";

const KEY_LEN: usize = 32;

/// Why the secret key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the secret key file {0} does not hold a key ({KEY_LEN} bytes): restore it from its backup"
    )]
    Malformed(PathBuf),
    #[error("no randomness for a key or a nonce: {0}")]
    Random(#[from] getrandom::Error),
    #[error("a sealed value does not open with this key (another key, or altered)")]
    Unopenable,
}

/// The key that seals secrets.
pub struct SecretKey {
    key: LessSafeKey,
    path: PathBuf,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// Reads the key at `path`; when it does not exist and `create` is set, makes one (mode
    /// 0600 from its creation) and says so on standard output. Returns `None` when it does not
    /// exist and `create` is not set.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or made, or does not hold a key.
    pub fn load(path: &Path, create: bool) -> Result<Option<Self>, SecretError> {
        let io = |source| SecretError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut bytes = vec![0u8; KEY_LEN];
                getrandom::fill(&mut bytes)?;
                use std::os::unix::fs::OpenOptionsExt;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(&bytes).map_err(io)?;
                file.sync_all().map_err(io)?;
                println!(
                    "Created the key that seals secrets: {} (back it up: without it, the \
                     secrets in the database cannot be read).",
                    path.display()
                );
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| SecretError::Malformed(path.to_path_buf()))?;
        if bytes.len() != KEY_LEN {
            return Err(SecretError::Malformed(path.to_path_buf()));
        }
        Ok(Some(Self {
            key: LessSafeKey::new(key),
            path: path.to_path_buf(),
        }))
    }

    /// The key's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `value` sealed for variable `name` of function `function_id`.
    ///
    /// # Errors
    ///
    /// When the system has no randomness for the nonce.
    pub fn seal(&self, function_id: i64, name: &str, value: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)?;
        let mut sealed = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated(function_id, name).as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SecretError::Unopenable)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// The value `stored` holds: opened if it is sealed, as it is otherwise.
    ///
    /// # Errors
    ///
    /// [`SecretError::Unopenable`] when it is sealed with another key, for another variable,
    /// or was altered.
    pub fn open(&self, function_id: i64, name: &str, stored: &str) -> Result<String, SecretError> {
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_string());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::Unopenable)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Unopenable);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Unopenable)?;
        let mut sealed = sealed.to_vec();
        let opened = self
            .key
            .open_in_place(
                nonce,
                Aad::from(associated(function_id, name).as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SecretError::Unopenable)?;
        String::from_utf8(opened.to_vec()).map_err(|_| SecretError::Unopenable)
    }
}

/// Where a server's key comes from: read (or made) at start, or, on a cluster's node started
/// before the manager made it, read when a sealed value first needs it (tried at most once a
/// second).
pub struct KeySource {
    path: PathBuf,
    key: std::sync::OnceLock<SecretKey>,
    tried: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySource")
            .field("path", &self.path)
            .field("loaded", &self.key.get().is_some())
            .finish()
    }
}

impl KeySource {
    /// The key at `path`, made there when missing if `create` is set (see [`SecretKey::load`]).
    ///
    /// # Errors
    ///
    /// When the file cannot be read or made, or does not hold a key.
    pub fn new(path: &Path, create: bool) -> Result<Self, SecretError> {
        let key = std::sync::OnceLock::new();
        if let Some(loaded) = SecretKey::load(path, create)? {
            let _ = key.set(loaded);
        }
        Ok(Self {
            path: path.to_path_buf(),
            key,
            tried: std::sync::Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key, if it is there (now or since the last try).
    pub fn key(&self) -> Option<&SecretKey> {
        if let Some(key) = self.key.get() {
            return Some(key);
        }
        let mut tried = self.tried.lock().ok()?;
        if tried.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return None;
        }
        *tried = Some(std::time::Instant::now());
        if let Ok(Some(loaded)) = SecretKey::load(&self.path, false) {
            let _ = self.key.set(loaded);
        }
        self.key.get()
    }
}

/// What a seal is bound to: its function and variable.
fn associated(function_id: i64, name: &str) -> String {
    format!("picloud-env/{function_id}/{name}")
}

/// The value a stored variable holds for the executor: opened with `key`, or left out (with
/// an error line) when it is sealed and cannot be opened.
pub(crate) fn opened(
    key: Option<&SecretKey>,
    function_id: i64,
    name: &str,
    stored: String,
) -> Option<String> {
    if !stored.starts_with(SEALED_PREFIX) {
        return Some(stored);
    }
    match key.map(|k| k.open(function_id, name, &stored)) {
        Some(Ok(value)) => Some(value),
        Some(Err(e)) => {
            tracing::error!(function_id, %name, error = %e, "a secret variable is left out");
            None
        }
        None => {
            tracing::error!(
                function_id,
                %name,
                "a secret variable is left out: this server has no secret key file"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &str) -> SecretKey {
        let path = std::env::temp_dir().join(format!("picloud-key-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        SecretKey::load(&path, true).expect("made").expect("a key")
    }

    #[test]
    fn a_seal_opens_only_for_its_variable_and_key() {
        let a = key("a");
        let sealed = a.seal(7, "API_KEY", "hunter2").expect("sealed");
        assert!(sealed.starts_with(SEALED_PREFIX) && !sealed.contains("hunter2"));
        assert_eq!(a.open(7, "API_KEY", &sealed).expect("opens"), "hunter2");
        assert!(a.open(8, "API_KEY", &sealed).is_err(), "another function");
        assert!(a.open(7, "OTHER", &sealed).is_err(), "another variable");
        assert!(key("b").open(7, "API_KEY", &sealed).is_err(), "another key");
        let mut altered = sealed.clone();
        altered.pop();
        altered.push('A');
        assert!(a.open(7, "API_KEY", &altered).is_err(), "altered");
        assert_eq!(a.open(7, "X", "plain").expect("clear"), "plain");
        // The same value sealed twice differs (a fresh nonce each time).
        assert_ne!(sealed, a.seal(7, "API_KEY", "hunter2").expect("sealed"));
    }

    #[test]
    fn a_key_file_is_made_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let made = key("c");
        let mode = std::fs::metadata(made.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SecretKey::load(made.path(), false)
            .expect("read")
            .expect("a key");
        let sealed = made.seal(1, "N", "v").expect("sealed");
        assert_eq!(again.open(1, "N", &sealed).expect("opens"), "v");
        std::fs::write(made.path(), b"short").expect("write");
        assert!(matches!(
            SecretKey::load(made.path(), false),
            Err(SecretError::Malformed(_))
        ));
        let missing = made.path().with_extension("missing");
        assert!(SecretKey::load(&missing, false).expect("fine").is_none());
    }
}
