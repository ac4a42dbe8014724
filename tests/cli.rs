//! CLI fixture tests: one directory per case under `tests/cli/`.
//!
//! A case holds `cmd`, one command per line, and `transcript`, what running them must print.
//! Commands:
//!
//! * `msgplug ARGS...`: runs the built binary (arguments split on white space);
//! * `write PATH TEXT...`: creates a file (to show that a failed run leaves it untouched);
//! * `cat PATH` / `ls DIR`: prints a file / the sorted names in a directory.
//!
//! Placeholders in arguments: `%tmp` (a fresh directory per case), `%inputs` (`tests/inputs`),
//! `%examples/NAME` (the example app `NAME.wasm`, built once), and `%wit:FILE:WORLD` (a dummy
//! component with world `WORLD` of `tests/inputs/FILE`, written to `%tmp/FILE-WORLD.wasm`).
//!
//! The transcript shows each command, its exit status, stdout and stderr, normalised
//! (temp dir, version, sizes). `BLESS=1 cargo test --test cli` rewrites transcripts;
//! `cargo test --test cli -- NAME` runs one case.

mod support;

use std::fmt::Write;
use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let cases_dir = support::root().join("tests/cli");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .expect("tests/cli exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("cmd").is_file())
        .collect();
    cases.sort();
    let trials = cases
        .into_iter()
        .map(|dir| {
            let name = dir
                .file_name()
                .expect("case name")
                .to_string_lossy()
                .into_owned();
            Trial::test(name, move || run_case(&dir).map_err(Failed::from))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn run_case(dir: &Path) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let script = std::fs::read_to_string(dir.join("cmd")).map_err(|e| e.to_string())?;
    let mut transcript = String::new();
    for line in script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| expand(w, tmp.path()))
            .collect();
        let _ = writeln!(transcript, "$ {line}");
        match words[0].as_str() {
            "msgplug" => {
                let output = support::msgplug()
                    .args(&words[1..])
                    .current_dir(tmp.path())
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| e.to_string())?;
                let code = output
                    .status
                    .code()
                    .map_or("signal".to_string(), |c| c.to_string());
                let _ = writeln!(transcript, "exit: {code}");
                for (label, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
                    if !bytes.is_empty() {
                        let _ = write!(transcript, "{label}:\n{}", String::from_utf8_lossy(bytes));
                    }
                }
                if String::from_utf8_lossy(&output.stderr).contains("panicked") {
                    return Err(format!("`{line}` panicked:\n{transcript}"));
                }
            }
            "write" => {
                std::fs::write(&words[1], words[2..].join(" ")).map_err(|e| e.to_string())?
            }
            "cat" => {
                let text =
                    std::fs::read_to_string(&words[1]).map_err(|e| format!("{line}: {e}"))?;
                transcript.push_str(&text);
            }
            "ls" => {
                let mut names: Vec<String> = std::fs::read_dir(&words[1])
                    .map_err(|e| format!("{line}: {e}"))?
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
                names.sort();
                let _ = writeln!(transcript, "{}", names.join("\n"));
            }
            other => return Err(format!("unknown command `{other}` in {}", dir.display())),
        }
    }
    support::check_or_bless(
        &dir.join("transcript"),
        &support::normalize(&transcript, tmp.path()),
    )
}

/// Expands the placeholders in one argument.
fn expand(word: &str, tmp: &Path) -> String {
    if let Some(name) = word.strip_prefix("%examples/") {
        return support::example(name).display().to_string();
    }
    if let Some(spec) = word.strip_prefix("%wit:") {
        let (file, world) = spec.split_once(':').expect("%wit:FILE:WORLD");
        let stem = file.trim_end_matches(".wit");
        let out = tmp.join(format!("{stem}-{world}.wasm"));
        if !out.exists() {
            let wit = support::root().join("tests/inputs").join(file);
            std::fs::write(&out, support::dummy_component(&wit, world)).expect("write dummy");
        }
        return out.display().to_string();
    }
    word.replace("%tmp", &tmp.display().to_string()).replace(
        "%inputs",
        &support::root().join("tests/inputs").display().to_string(),
    )
}
