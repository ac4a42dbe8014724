use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use msgplug::analyze::version_of;
use msgplug::{ComposeOptions, Trigger};

use super::{check_output_path, read_component, write_atomically, Terminal};

/// Compose a wasi:messaging app into one component that runs on stock wasmtime.
///
/// Reads APP (a component that imports wasi:messaging@0.2.0-draft interfaces and/or exports
/// `incoming-handler`), picks the backend adapter from the --broker URL's scheme and the
/// driver from --trigger, bakes the settings into a generated config component, wires all
/// parts to one `wasi:messaging/types` instance, validates the result and writes it
/// atomically. It then prints the exact `wasmtime` command that runs the output.
///
/// Settings are baked in, and can be overridden at run time with environment variables:
/// MSGPLUG_BROKER, MSGPLUG_SUBSCRIBE (comma-separated) and MSGPLUG_QUEUE_GROUP
/// (e.g. `wasmtime run --env MSGPLUG_SUBSCRIBE=a,b out.wasm`). Credentials are never baked
/// unless they are in the --broker URL (which warns): backends read them from the
/// environment at run time (NATS_USER/NATS_PASSWORD/NATS_TOKEN/NATS_NKEY/NATS_CREDS,
/// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SERVICEBUS_SAS_KEY_NAME/SERVICEBUS_SAS_KEY),
/// and the printed command forwards them with `--env NAME`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  # Handle NDJSON messages from stdin with the embedded `local` backend:
  msgplug compose transform.wasm -o transform.composed.wasm
  echo '{\"topic\":\"orders\",\"data\":\"hi\"}' | wasmtime run transform.composed.wasm

  # Only deliver some topics, and write the composition as WAC too:
  msgplug compose transform.wasm -o out.wasm --subscribe 'orders.>' --emit-wac out.wac

  # An app with its own `wasi:cli/run` that only publishes:
  msgplug compose publisher.wasm -o publisher.composed.wasm

  # NATS: three copies share the work in a queue group:
  msgplug compose transform.wasm -o out.wasm --broker nats://127.0.0.1:4222 \\
      --subscribe 'orders.>' --queue-group workers
  wasmtime run -S inherit-network out.wasm

  # NATS JetStream, at-least-once: ack after the handler returned Ok, nak on Err:
  msgplug compose transform.wasm -o out.wasm --broker nats://127.0.0.1:4222 \\
      --subscribe 'orders.>' --jetstream ORDERS --durable transform

  # Behind a push subscription: each HTTP request (CloudEvent or plain POST) is a message:
  msgplug compose transform.wasm -o out.wasm --trigger http --broker sqs://us-east-1/results
  wasmtime serve -S cli --addr 127.0.0.1:8080 out.wasm")]
pub struct ComposeCommand {
    /// The app component (.wasm).
    #[arg(value_name = "APP")]
    app: PathBuf,

    /// Where to write the composed component [default: APP with `.composed.wasm`].
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,

    /// Broker URL; its scheme picks the backend [default: local].
    ///
    /// `local` is the embedded backend: messages arrive as NDJSON lines on stdin and are
    /// sent as NDJSON lines on stdout. Others: `nats://HOST:PORT`, `http(s)://HOST/PATH`
    /// (`{topic}` in it is replaced by the topic), `sqs://REGION/QUEUE`, and Azure Service Bus
    /// as `servicebus://NAMESPACE-HOST/ENTITY` or a connection string `Endpoint=sb://...`.
    /// `msgplug adapters` lists them all.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,

    /// Topic pattern to deliver to the app's handler (repeatable).
    ///
    /// NATS-style wildcards: `*` matches one `.`-separated token, `>` the rest.
    /// With no --subscribe the local and NATS backends deliver every topic. For Service Bus
    /// an entry names a queue or `TOPIC/subscriptions/SUB`; SQS receives from the queue in
    /// the broker URL (`msgplug adapters` says what each backend does with it).
    #[arg(long, value_name = "TOPIC")]
    subscribe: Vec<String>,

    /// Queue group shared by competing instances of the output.
    #[arg(long, value_name = "NAME")]
    queue_group: Option<String>,

    /// NATS: consume through a durable JetStream pull consumer on STREAM (at-least-once:
    /// ack after the handler returned Ok, nak on Err). Needs --durable.
    #[arg(long, value_name = "STREAM", requires = "durable")]
    jetstream: Option<String>,

    /// NATS (with --jetstream): the durable consumer's name; instances with the same name
    /// share the work. MQTT: the client id of a persistent session (at-least-once; each
    /// running instance needs its own id: set MSGPLUG_CLIENT_ID at run time).
    #[arg(long, value_name = "NAME")]
    durable: Option<String>,

    /// NATS: create the --jetstream stream (on the --subscribe subjects) when it is missing.
    #[arg(long, requires = "jetstream")]
    create_stream: bool,

    /// TLS brokers (`tls://`): trust only the CA certificate(s) in this PEM file instead of
    /// the Mozilla roots baked into the adapter. The file is public, so its text is baked
    /// into the output (`msgplug inspect` shows it); a client certificate for mutual TLS
    /// comes from MSGPLUG_TLS_CERT / MSGPLUG_TLS_KEY at run time, never from here.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// A backend or driver setting, KEY=VALUE (repeatable); `msgplug adapters` lists the
    /// keys each adapter understands.
    #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_option)]
    options: Vec<(String, String)>,

    /// How the output is started.
    ///
    /// `auto`: `run` when the app exports `incoming-handler` and no entry point of its own,
    /// `none` when it exports its own `wasi:cli/run` or `wasi:http/incoming-handler` and no
    /// handler; an app with both needs an explicit choice.
    #[arg(long, value_enum, default_value_t = TriggerArg::Auto)]
    trigger: TriggerArg,

    /// Also write the composition as a WAC document to FILE (and the generated config
    /// component beside it, as FILE with `.config.wasm`).
    #[arg(long, value_name = "FILE")]
    emit_wac: Option<PathBuf>,

    /// Print only warnings and errors.
    #[arg(short, long)]
    quiet: bool,
}

/// `--trigger` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TriggerArg {
    /// Pick from the app's exports.
    Auto,
    /// `wasmtime run` pulls each message and calls the app's handler.
    Run,
    /// `wasmtime serve` turns each HTTP request into a message; a reply is the response.
    Http,
    /// No driver: export the app's own entry point.
    None,
}

impl From<TriggerArg> for Trigger {
    fn from(arg: TriggerArg) -> Trigger {
        match arg {
            TriggerArg::Auto => Trigger::Auto,
            TriggerArg::Run => Trigger::Run,
            TriggerArg::Http => Trigger::Http,
            TriggerArg::None => Trigger::None,
        }
    }
}

impl ComposeCommand {
    pub fn exec(self) -> Result<()> {
        let terminal = Terminal::new(self.quiet);
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| default_output(&self.app));
        check_output_path(&output, &self.app, "-o")?;
        let wac_paths = match &self.emit_wac {
            Some(wac) => {
                check_output_path(wac, &self.app, "--emit-wac")?;
                Some((wac.clone(), wac.with_extension("config.wasm")))
            }
            None => None,
        };

        let app = read_component(&self.app, "app component")?;
        terminal.status("Composing", self.app.display());
        let options = ComposeOptions {
            broker: self.broker.clone(),
            subscribe: self.subscribe.clone(),
            queue_group: self.queue_group.clone(),
            options: self.backend_options()?,
            trigger: self.trigger.into(),
        };
        let composed = msgplug::compose(&app, &options)
            .with_context(|| format!("failed to compose `{}`", self.app.display()))?;
        for warning in &composed.warnings {
            terminal.warn(warning);
        }
        // What the output cannot start without (credentials apart) is as loud as a warning.
        let (warnings, notes): (Vec<_>, Vec<_>) = composed
            .from_env
            .iter()
            .partition(|from_env| from_env.required && !from_env.credentials);
        for from_env in warnings {
            terminal.warn(from_env);
        }

        if let Some((wac, config)) = &wac_paths {
            let text = msgplug::wac_text::print(&composed.plan, "msgplug:composed");
            write_atomically(wac, text.as_bytes())?;
            write_atomically(config, &composed.config_component)?;
        }
        write_atomically(&output, &composed.component)?;

        let driver = match (composed.driver, composed.trigger) {
            (Some(wrapper), Trigger::None) => {
                format!("the app's own entry point, run by `{}`", wrapper.name)
            }
            (Some(driver), _) => format!("driver `{}`", driver.name),
            (None, _) => "the app's own entry point".to_string(),
        };
        terminal.status(
            "Wrote",
            format!(
                "{} ({} KiB): backend `{}`, trigger `{}` ({driver})",
                output.display(),
                composed.component.len().div_ceil(1024),
                composed.backend.name,
                composed.trigger,
            ),
        );
        if let Some((wac, config)) = &wac_paths {
            terminal.status(
                "Wrote",
                format!("{} and {}", wac.display(), config.display()),
            );
        }
        let imports = &composed.world.imports;
        if imports.iter().all(|i| i.starts_with("wasi:")) {
            let versions: std::collections::BTreeSet<_> =
                imports.iter().filter_map(|i| version_of(i)).collect();
            let versions: Vec<_> = versions.into_iter().collect();
            terminal.detail(format!(
                "imports only standard WASI ({})",
                versions.join(", ")
            ));
        }

        terminal.status(
            "Run it with",
            composed.run_command(&output.display().to_string()),
        );
        if let Some(note) = composed.instance_reuse_note() {
            terminal.note(note);
        }
        for from_env in notes {
            terminal.note(from_env);
        }
        Ok(())
    }
}

impl ComposeCommand {
    /// The `--option` pairs plus the options the NATS flags and `--tls-ca` stand for.
    fn backend_options(&self) -> Result<BTreeMap<String, String>> {
        let mut options = BTreeMap::new();
        let tls_ca = match &self.tls_ca {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!(
                    "--tls-ca: cannot read `{}` (give the CA certificate's PEM file)",
                    path.display()
                )
            })?),
            None => None,
        };
        let flags = [
            (msgplug::compose::TLS_CA_OPTION, tls_ca),
            ("jetstream", self.jetstream.clone()),
            ("durable", self.durable.clone()),
            (
                "create_stream",
                self.create_stream.then(|| "true".to_string()),
            ),
        ];
        let pairs = self.options.iter().cloned().chain(
            flags
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?))),
        );
        for (key, value) in pairs {
            if options.insert(key.clone(), value).is_some() {
                bail!("`{key}` is given twice (check --option and the --jetstream/--durable/--create-stream/--tls-ca flags)");
            }
        }
        Ok(options)
    }
}

/// Parses `--option KEY=VALUE`.
fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

/// `dir/app.wasm` becomes `dir/app.composed.wasm`.
fn default_output(app: &Path) -> PathBuf {
    app.with_extension("composed.wasm")
}
