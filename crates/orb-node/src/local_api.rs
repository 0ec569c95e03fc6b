//! How the CLI finds the client daemon's local API token.
//!
//! The daemon keeps its token in `<data-dir>/api-token`, readable by its
//! user only; every request that changes something (and the owner-only
//! reads) must carry it. The CLI is told only the API's address, so the
//! daemon also writes the path of its data directory into a per-user
//! registry file named after the API's port
//! (`$XDG_DATA_HOME/orb/api/PORT`, else `~/.local/share/orb/api/PORT`).
//! The CLI then looks, in order, at `ORB_API_TOKEN`, at the data directory
//! in `ORB_CLIENT_DATA_DIR`, at the registry, and at the default data
//! directory.

use std::io;
use std::path::{Path, PathBuf};

/// Name of the token file in a client's data directory.
pub const TOKEN_FILE: &str = "api-token";

/// The token file of a data directory.
pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// The registry file for an API on `port`.
pub fn registry_file(port: u16) -> PathBuf {
    crate::cli::default_data_dir("api").join(port.to_string())
}

/// Record that the API on `port` belongs to the daemon in `data_dir`.
pub fn register(port: u16, data_dir: &Path) -> io::Result<PathBuf> {
    let file = registry_file(port);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let dir = std::path::absolute(data_dir)?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, dir.as_os_str().as_encoded_bytes())?;
    std::fs::rename(&tmp, &file)?;
    Ok(file)
}

/// Remove the registry entry of `port` if it still names `data_dir` (a
/// daemon started later on the same port may have taken it over).
pub fn unregister(port: u16, data_dir: &Path) {
    let file = registry_file(port);
    if registered_dir(port).as_deref() == std::path::absolute(data_dir).ok().as_deref() {
        let _ = std::fs::remove_file(file);
    }
}

/// The data directory registered for `port`, if any.
pub fn registered_dir(port: u16) -> Option<PathBuf> {
    let text = std::fs::read_to_string(registry_file(port)).ok()?;
    let dir = PathBuf::from(text.trim_end_matches('\n'));
    (!dir.as_os_str().is_empty()).then_some(dir)
}

/// Read the token in `data_dir`.
pub fn read_token(data_dir: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(token_file(data_dir))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "empty token file",
        ));
    }
    Ok(t.to_string())
}

/// The token for the API on `port`: from `ORB_API_TOKEN`, else the token
/// file of `ORB_CLIENT_DATA_DIR`, of the data directory registered for the
/// port, or of the default data directory. The error says where it looked.
pub fn find_token(port: u16) -> Result<String, String> {
    if let Ok(t) = std::env::var("ORB_API_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("ORB_CLIENT_DATA_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    dirs.extend(registered_dir(port));
    dirs.push(crate::cli::default_data_dir("client"));
    let mut tried = Vec::new();
    for dir in dirs {
        match read_token(&dir) {
            Ok(t) => return Ok(t),
            Err(e) => tried.push(format!("{}: {e}", token_file(&dir).display())),
        }
    }
    Err(format!(
        "cannot read the daemon's API token ({}); run orb-client as the daemon's user, or set ORB_CLIENT_DATA_DIR to its data directory or ORB_API_TOKEN to the token",
        tried.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_trimmed() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(read_token(dir.path()).is_err());
        std::fs::write(token_file(dir.path()), "abc\n").expect("write");
        assert_eq!(read_token(dir.path()).expect("token"), "abc");
        std::fs::write(token_file(dir.path()), "\n").expect("write");
        assert!(read_token(dir.path()).is_err());
    }
}
