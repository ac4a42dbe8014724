//! The `msgplug` command line. All logic lives in the library; each command is in `commands/`.

use std::process::ExitCode;

use clap::Parser;

mod commands;

/// Plug wasi:messaging into a WebAssembly component, so it runs on stock wasmtime.
///
/// `msgplug compose` wires your app (any component that imports wasi:messaging@0.2.0-draft
/// or exports its incoming-handler) with a prebuilt broker adapter and a trigger loop, and
/// writes one self-contained component that an unmodified `wasmtime run` or `wasmtime serve`
/// runs. The default broker is `local`: messages as NDJSON lines on stdin and stdout.
#[derive(Parser)]
#[command(
    name = "msgplug",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_help = "Examples:
  msgplug compose app.wasm -o app.composed.wasm
  echo '{\"topic\":\"orders\",\"data\":\"hi\"}' | wasmtime run app.composed.wasm
  msgplug inspect app.composed.wasm
  msgplug wit wit/deps/messaging")]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.exec() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let broken_pipe = error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if !broken_pipe {
                print_error(&error);
            }
            ExitCode::FAILURE
        }
    }
}

/// Prints `error: ...` and a numbered `Caused by:` list, each cause once.
fn print_error(error: &anyhow::Error) {
    eprintln!("error: {error}");
    let causes: Vec<_> = error.chain().skip(1).collect();
    if !causes.is_empty() {
        eprintln!("\nCaused by:");
        for (index, cause) in causes.iter().enumerate() {
            eprintln!("    {index}: {cause}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
