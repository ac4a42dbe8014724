//! What every broker bench shares: its counts from the environment and its table, which
//! `benches/run.sh` merges into one.

#![allow(dead_code)] // each bench uses a different subset

use std::fmt::Display;

/// Reads a count above 1 from the environment variable `key`, or `default`.
pub fn count(key: &str, default: usize) -> usize {
    match std::env::var(key) {
        Err(_) => default,
        Ok(value) => value
            .parse()
            .ok()
            .filter(|&n| n > 1)
            .unwrap_or_else(|| panic!("{key}=`{value}`: expected an integer above 1")),
    }
}

/// The `wasmtime --version` the composed apps run on, for the table's title.
pub fn wasmtime_version() -> String {
    crate::support::wasmtime()
        .arg("--version")
        .output()
        .map(|o| crate::support::text(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Prints `title` and a markdown table `| measurement | composed (wasm) | native (...) |`,
/// `native` naming the native client; a measured value shows what was lost next to it.
pub fn print_table(title: &str, native: &str, rows: &[(&str, &dyn Display, &dyn Display)]) {
    println!("{title}");
    println!();
    println!("| measurement | composed (wasm) | native ({native}) |");
    println!("|---|---|---|");
    for (name, composed, native) in rows {
        println!("| {name} | {composed} | {native} |");
    }
}
