use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use msgplug::wit::{MESSAGING_FILES, MESSAGING_VERSION};

use super::{write_atomically, Terminal};

/// Write the wasi:messaging WIT that guest apps build against.
///
/// Without DIR, prints the package as one WIT document on stdout. With DIR, writes its
/// files into DIR (created if missing), byte-for-byte as vendored from upstream; point
/// your bindings generator at it, e.g. `wit_bindgen::generate!({ path: "wit/deps/messaging",
/// world: "messaging-core" })`. Apps need nothing msgplug-specific.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  msgplug wit wit/deps/messaging
  msgplug wit > messaging.wit")]
pub struct WitCommand {
    /// Directory to write the `.wit` files into.
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl WitCommand {
    pub fn exec(self) -> Result<()> {
        let Some(dir) = self.dir else {
            std::io::stdout().write_all(msgplug::wit::messaging_document().as_bytes())?;
            return Ok(());
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create `{}`", dir.display()))?;
        for (file, contents) in MESSAGING_FILES {
            write_atomically(&dir.join(file), contents.as_bytes())?;
        }
        Terminal::new(false).status(
            "Wrote",
            format!(
                "wasi:messaging@{MESSAGING_VERSION} ({} files) to {}",
                MESSAGING_FILES.len(),
                dir.display()
            ),
        );
        Ok(())
    }
}
