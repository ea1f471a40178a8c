//! What a config was built from, and its hash: the generation `/ready`
//! shows, and what the watcher compares to notice a change. Polling the
//! content (not inotify) sees symlink swaps of Kubernetes ConfigMaps and
//! changes on network file systems alike.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::secrets::SecretReads;

/// The config file and every secret file it names.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub file: PathBuf,
    pub secret_files: Vec<PathBuf>,
    /// SHA-256 (hex) of the file's bytes and the secret files' contents:
    /// what the watcher compares. Never shown (a hash over a secret is a
    /// way to test guesses of it).
    pub hash: String,
    /// SHA-256 (hex) of the config file's bytes alone: the generation
    /// `/ready` shows, comparable across replicas.
    pub file_hash: String,
}

impl ConfigSource {
    pub(super) fn new(file: &Path, bytes: &[u8], secrets: &SecretReads) -> Self {
        Self {
            file: file.to_path_buf(),
            secret_files: secrets.0.iter().map(|(path, _)| path.clone()).collect(),
            hash: digest(Some(bytes), &secrets.0),
            file_hash: sha256_hex(bytes),
        }
    }

    /// The hash of what the files hold now, computed as at load: differs
    /// from [`ConfigSource::hash`] when the config or a secret changed.
    pub fn current_hash(&self) -> String {
        current_hash(&self.file, &self.secret_files)
    }
}

/// The hash of `file` and `secret_files` as they are now.
pub fn current_hash(file: &Path, secret_files: &[PathBuf]) -> String {
    let reads: Vec<(PathBuf, Option<Vec<u8>>)> = secret_files
        .iter()
        .map(|path| (path.clone(), std::fs::read(path).ok()))
        .collect();
    digest(std::fs::read(file).ok().as_deref(), &reads)
}

fn digest(config: Option<&[u8]>, secrets: &[(PathBuf, Option<Vec<u8>>)]) -> String {
    let mut hasher = Sha256::new();
    update_part(&mut hasher, config);
    for (path, content) in secrets {
        update_part(&mut hasher, Some(path.as_os_str().as_encoded_bytes()));
        update_part(&mut hasher, content.as_deref());
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Length-prefixed, so no two different inputs hash alike.
fn update_part(hasher: &mut Sha256, part: Option<&[u8]>) {
    match part {
        None => hasher.update([0u8]),
        Some(bytes) => {
            hasher.update([1u8]);
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_secret_file_changes_the_hash_and_an_unchanged_one_does_not() {
        let dir = tempfile_dir();
        let config = dir.join("config.json");
        let secret = dir.join("DB_PASS");
        std::fs::write(&config, b"{}").unwrap();
        std::fs::write(&secret, b"one").unwrap();
        let first = current_hash(&config, std::slice::from_ref(&secret));
        assert_eq!(first, current_hash(&config, std::slice::from_ref(&secret)));
        std::fs::write(&secret, b"two").unwrap();
        assert_ne!(first, current_hash(&config, std::slice::from_ref(&secret)));
        std::fs::remove_file(&secret).unwrap();
        let missing = current_hash(&config, std::slice::from_ref(&secret));
        std::fs::write(&secret, b"").unwrap();
        assert_ne!(
            missing,
            current_hash(&config, std::slice::from_ref(&secret))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mcpd-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
