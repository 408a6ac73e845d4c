//! The `switchyard` binary: arguments, logging, runtime, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchyard::config::Config;

/// A MySQL read/write splitting proxy for primary/replica clusters.
#[derive(Parser, Debug)]
#[command(name = "switchyard", version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Overrides server.listen (client port), e.g. 127.0.0.1:6033.
    #[arg(long)]
    listen: Option<String>,
    /// Overrides server.admin_listen (HTTP admin port), e.g. 127.0.0.1:9090.
    #[arg(long)]
    admin_listen: Option<String>,
    /// Validates the configuration and exits.
    #[arg(long)]
    check_config: bool,
    /// Log lines as text (the default) or as JSON objects, one per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let cfg = match load(&args, !args.check_config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!(
            "config OK: {:?} discovery, {} static backends, {} users, listen {}, admin {} (passwords from the environment or files are read at start)",
            cfg.discovery.kind,
            cfg.backends.len(),
            cfg.users.len(),
            cfg.server.listen,
            cfg.server.admin_listen
        );
        return ExitCode::SUCCESS;
    }
    run(cfg, args)
}

fn load(args: &Args, resolve: bool) -> Result<Config, switchyard::config::ConfigError> {
    let mut cfg = if resolve {
        Config::load(&args.config)?
    } else {
        Config::load_unresolved(&args.config)?
    };
    if let Some(l) = &args.listen {
        cfg.server.listen = l.clone();
    }
    if let Some(a) = &args.admin_listen {
        cfg.server.admin_listen = a.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn run(cfg: Config, args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let current = tokio::sync::watch::channel(cfg.clone()).0;
    let latest = current.subscribe();
    rt.block_on(async {
        let running = match switchyard::app::start(cfg).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("switchyard: {e}");
                return ExitCode::FAILURE;
            }
        };
        let path = args.config.clone();
        let loader: switchyard::reload::Loader = Box::new(move || load(&args, true));
        tokio::spawn(switchyard::reload::run(
            path,
            loader,
            current,
            running.shared.clone(),
        ));
        wait_for_signal().await;
        // the shutdown settings of the config in force (a reload may have changed them)
        let (delay_s, drain_s) = {
            let c = latest.borrow();
            (c.server.shutdown_delay_s, c.server.shutdown_timeout_s)
        };
        tracing::info!(
            delay_s,
            deadline_s = drain_s,
            "shutting down: not ready, then draining sessions"
        );
        running
            .drain_after(std::time::Duration::from_secs(delay_s))
            .await;
        let left = running
            .drained(std::time::Duration::from_secs(drain_s))
            .await;
        if left > 0 {
            tracing::warn!(sessions = left, "drain deadline passed; closing the rest");
        }
        running.shutdown();
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
