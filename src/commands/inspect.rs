use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use msgplug::{Inspection, Role};

use super::read_component;

/// Describe a component: its role, messaging interfaces, host needs and baked settings.
///
/// Works on apps (what `compose` will see), on composed outputs (the settings baked in,
/// secrets masked, and the `wasmtime` command that runs it) and on adapters.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  msgplug inspect app.wasm
  msgplug inspect app.composed.wasm --json | jq .settings")]
pub struct InspectCommand {
    /// The component (.wasm) to describe.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl InspectCommand {
    pub fn exec(self) -> Result<()> {
        let bytes = read_component(&self.file, "component")?;
        let path = self.file.display().to_string();
        let inspection = msgplug::inspect(&bytes, &path)
            .with_context(|| format!("failed to inspect `{path}`"))?;
        let text = if self.json {
            serde_json::to_string_pretty(&inspection)? + "\n"
        } else {
            render(&inspection, &path)
        };
        std::io::stdout().write_all(text.as_bytes())?;
        Ok(())
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn render(i: &Inspection, path: &str) -> String {
    let role = match i.role {
        Role::Composed => "composed by msgplug",
        Role::Adapter => "msgplug adapter",
        Role::App => "wasi:messaging app",
        Role::Other => "component that does not use wasi:messaging",
    };
    let mut out = format!("{path}: {role}\n");
    if let Some(m) = &i.manifest {
        let s = &m.settings;
        out.push_str(&format!("  composed by:       {}\n", m.composed_by));
        out.push_str(&format!(
            "  adapters:          {}{}\n",
            m.backend.name,
            m.driver
                .map(|d| format!(" + {}", d.adapter().name))
                .unwrap_or_default()
        ));
        out.push_str(&format!("  trigger:           {}\n", m.trigger));
        out.push_str(&format!("  broker:            {}\n", s.broker));
        out.push_str(&format!("  subscribe:         {}\n", list(&s.subscribe)));
        out.push_str(&format!(
            "  queue group:       {}\n",
            s.queue_group.as_deref().unwrap_or("none")
        ));
        if m.backend.tls() {
            let trust = match s.options.get(msgplug::compose::TLS_CA_OPTION) {
                Some(pem) => format!(
                    "only the `--tls-ca` CA ({} PEM certificate(s), baked in; `--json` shows them)",
                    pem.matches("-----BEGIN CERTIFICATE-----").count()
                ),
                None => "the Mozilla root CAs baked into the adapter (webpki-roots)".to_string(),
            };
            out.push_str(&format!("  TLS trusts:        {trust}\n"));
        }
    }
    if i.role != Role::Composed {
        out.push_str(&format!(
            "  messaging imports: {}\n",
            list(&i.messaging_imports)
        ));
        out.push_str(&format!(
            "  messaging exports: {}\n",
            list(&i.messaging_exports)
        ));
    }
    out.push_str(&format!("  entry points:      {}\n", list(&i.entry_points)));
    out.push_str("  host capabilities:\n");
    for c in &i.capabilities {
        let flag = c.flag.map(|f| format!(" ({f})")).unwrap_or_default();
        out.push_str(&format!("    {:<13}{}{flag}\n", c.name, c.description));
    }
    if i.capabilities.is_empty() {
        out.push_str("    none\n");
    }
    if let Some(command) = &i.run_command {
        out.push_str(&format!("  run with:          {command}\n"));
    } else if i.role == Role::App {
        out.push_str(&format!("  compose with:      msgplug compose {path}\n"));
    }
    out
}
