//! `lit-mux init`: a commented default config file with a freshly generated API key, readable
//! by its owner only.

use std::io::Write;
use std::path::Path;

use super::Failure;
use crate::config;

/// Writes the default config to `path` (refusing to replace one unless `force`) and prints the
/// new API key once.
pub fn init(path: &Path, force: bool) -> Result<(), Failure> {
    let key = generate_api_key()
        .map_err(|err| Failure::runtime(format!("cannot generate an API key: {err}")))?;
    write_new_config(path, &config::default_config_text(&key), force)?;
    println!("Wrote {}", path.display());
    println!("API key (printed only this once; it is stored in that file):");
    println!("  {key}");
    println!("Start the server with: lit-mux start");
    Ok(())
}

/// 32 random bytes from the OS, hex-encoded, with a prefix that makes the key recognisable.
fn generate_api_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("lmx_{hex}"))
}

/// Writes the file readable by its owner only (it holds the API key), refusing to replace an
/// existing one unless `force`.
fn write_new_config(path: &Path, text: &str, force: bool) -> Result<(), Failure> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |what: &str, err: std::io::Error| {
        Failure::runtime(format!("cannot {what} {}: {err}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|err| failed("create the folder for", err))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::runtime(format!(
                "{} already exists; use --force to overwrite it",
                path.display()
            ))
        } else {
            failed("write", err)
        }
    })?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|err| failed("set permissions on", err))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| failed("write", err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_random_and_long() {
        let (a, b) = (generate_api_key(), generate_api_key());
        assert!(matches!((&a, &b), (Ok(a), Ok(b)) if a != b && a.len() == 68));
    }
}
