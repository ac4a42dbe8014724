//! One module per subcommand, plus what they share: the stderr status printer and the
//! atomic file writer.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

mod adapters;
mod compose;
mod inspect;
mod wit;

/// The subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    // Boxed: its many flags make it much larger than the others (clippy::large_enum_variant).
    Compose(Box<compose::ComposeCommand>),
    Inspect(inspect::InspectCommand),
    Adapters(adapters::AdaptersCommand),
    Wit(wit::WitCommand),
}

impl Command {
    /// Runs the subcommand.
    pub fn exec(self) -> Result<()> {
        match self {
            Command::Compose(c) => c.exec(),
            Command::Inspect(c) => c.exec(),
            Command::Adapters(c) => c.exec(),
            Command::Wit(c) => c.exec(),
        }
    }
}

/// Prints every human-facing status and warning line, to stderr (stdout carries only data).
pub struct Terminal {
    quiet: bool,
}

impl Terminal {
    /// A terminal that prints status lines unless `quiet`; warnings always print.
    pub fn new(quiet: bool) -> Self {
        Terminal { quiet }
    }

    /// A cargo-style status line: a right-aligned verb, then the message.
    pub fn status(&self, verb: &str, message: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{verb:>12} {message}");
        }
    }

    /// An indented continuation line under a status.
    pub fn detail(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{:>12} {message}", "");
        }
    }

    /// A note on something the user should know (`note: ...`); not printed when quiet.
    pub fn note(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("note: {message}");
        }
    }

    /// A warning; printed even when quiet.
    pub fn warn(&self, message: impl std::fmt::Display) {
        eprintln!("warning: {message}");
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// `path` is either left untouched or replaced whole.
///
/// The file gets the mode `cp` gives: a new file the usual mode for new files (`0666` less
/// the umask, so `0644` under the common umask `022`), an overwritten file its old mode.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let mut builder = tempfile::Builder::new();
    builder.prefix(".msgplug-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The kernel applies the umask to the mode a file is created with.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut temp = builder
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temporary file in `{}`", dir.display()))?;
    if let Ok(existing) = std::fs::metadata(path) {
        temp.as_file()
            .set_permissions(existing.permissions())
            .with_context(|| format!("failed to keep the mode of `{}`", path.display()))?;
    }
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    temp.persist(path)
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(())
}

/// The directory a file path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Checks that `output` can be written: its directory exists and it is not `input`.
pub fn check_output_path(output: &Path, input: &Path, flag: &str) -> Result<()> {
    let dir = parent_dir(output);
    if !dir.is_dir() {
        anyhow::bail!(
            "the directory of {flag} `{}` does not exist; create `{}` first",
            output.display(),
            dir.display()
        );
    }
    if output.is_dir() {
        anyhow::bail!(
            "{flag} `{}` is a directory; give a file name",
            output.display()
        );
    }
    if same_file(output, input) {
        anyhow::bail!(
            "{flag} `{}` is the input file; write the composed component somewhere else",
            output.display()
        );
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| -> Option<PathBuf> {
        let dir = parent_dir(p).canonicalize().ok()?;
        Some(dir.join(p.file_name()?))
    };
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => canonical(a).is_some() && canonical(a) == canonical(b),
    }
}

/// Reads a component file, naming it in the error.
pub fn read_component(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("failed to read {what} `{}`", path.display()))
}
