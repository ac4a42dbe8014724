use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use msgplug::adapters::{AdapterKind, Subscriptions, ADAPTERS};

use super::{write_atomically, Terminal};

/// List the adapter components built into msgplug.
///
/// A backend is chosen by the broker URL's scheme; a driver by `--trigger`. Each is a
/// component built from `adapters-wasm/crates/` and embedded in this binary. Each backend's
/// capabilities follow it, for each of its modes (NATS core and JetStream, ...): delivery
/// guarantee and what a handler `Err` causes, broker
/// restarts, request-reply, scale-out, metadata, content type, binary data, the largest
/// payload, no-responders and credential errors.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  msgplug adapters
  msgplug adapters --json
  msgplug adapters --extract adapters/   # write each as adapters/<name>.wasm")]
pub struct AdaptersCommand {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,

    /// Write every adapter to DIR as `<name>.wasm` (for use with `wac compose`).
    #[arg(long, value_name = "DIR")]
    extract: Option<PathBuf>,
}

impl AdaptersCommand {
    pub fn exec(self) -> Result<()> {
        if let Some(dir) = &self.extract {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create `{}`", dir.display()))?;
            for adapter in ADAPTERS {
                write_atomically(&dir.join(format!("{}.wasm", adapter.name)), adapter.bytes)?;
            }
            Terminal::new(false).status(
                "Wrote",
                format!("{} adapters to {}", ADAPTERS.len(), dir.display()),
            );
            return Ok(());
        }
        let text = if self.json {
            let rows: Vec<_> = ADAPTERS
                .iter()
                .map(|a| {
                    let mut row = serde_json::to_value(a).expect("adapters serialise");
                    row["size"] = a.bytes.len().into();
                    row
                })
                .collect();
            serde_json::to_string_pretty(&rows)? + "\n"
        } else {
            let mut out = format!(
                "{:<18} {:<8} {:<10} {:>8}  {}\n",
                "NAME", "KIND", "SCHEMES", "SIZE", "NEEDS FROM THE HOST"
            );
            for a in ADAPTERS {
                let kind = a.kind;
                let schemes = if a.schemes.is_empty() {
                    "-".to_string()
                } else {
                    a.schemes.join(",")
                };
                out.push_str(&format!(
                    "{:<18} {:<8} {schemes:<10} {:>5} KiB  {}\n",
                    a.name,
                    kind.to_string(),
                    a.bytes.len().div_ceil(1024),
                    a.host_needs
                ));
                let indent = "";
                out.push_str(&format!("{indent:<18} {}\n", a.summary));
                if a.kind == AdapterKind::Backend {
                    let subscribe = match a.subscriptions {
                        Subscriptions::Patterns => {
                            "topic patterns (`*` one token, `>` the rest)".to_string()
                        }
                        Subscriptions::Native(patterns) => patterns.to_string(),
                        Subscriptions::Names(names) => format!("names of {names}"),
                        Subscriptions::Unused(why) => format!("not used: {why}"),
                    };
                    out.push_str(&format!("{indent:<18} --subscribe: {subscribe}\n"));
                    if let Some(why) = a.queue_group_ignored {
                        out.push_str(&format!("{indent:<18} --queue-group: not used: {why}\n"));
                    }
                }
                // Several modes: each under its name, indented; the others than the
                // default with only what differs from it.
                let width = if a.modes.len() > 1 { 20 } else { 18 };
                let default = a.modes.first().map(|m| m.capabilities.describe());
                for (i, mode) in a.modes.iter().enumerate() {
                    if a.modes.len() > 1 {
                        let but = if i == 0 {
                            ""
                        } else {
                            ", otherwise as the default"
                        };
                        let label = mode.label();
                        out.push_str(&format!(
                            "{indent:<18} mode {} ({label}){but}:\n",
                            mode.name
                        ));
                    }
                    for (j, (label, value)) in mode.capabilities.describe().into_iter().enumerate()
                    {
                        let same = default.as_ref().is_some_and(|d| d[j].1 == value);
                        if i == 0 || !same {
                            out.push_str(&format!("{indent:<width$} {label}: {value}\n"));
                        }
                    }
                }
                if !a.run_env.is_empty() {
                    out.push_str(&format!(
                        "{indent:<18} reads at run time: {}\n",
                        a.run_env.join(", ")
                    ));
                }
                for option in a.options {
                    out.push_str(&format!(
                        "{indent:<18} --option {}=...: {}\n",
                        option.key, option.help
                    ));
                }
            }
            out
        };
        std::io::stdout().write_all(text.as_bytes())?;
        Ok(())
    }
}
