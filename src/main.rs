//! The `monsys` binary: parses the command line and runs the chosen role.

use clap::Parser;
use monsys::cli::{Cli, Commands};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: under ingest load glibc spent a third of the hub's CPU in
/// `_int_malloc`, chunk consolidation and `free` (many short-lived buffers of mixed sizes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MONSYS_LOG").unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        // the agent runs on every monitored host: one thread keeps its footprint small
        Commands::Agent(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(monsys_agent::run(args))
        }
        Commands::Hub(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let result = runtime.block_on(run_hub(args.into_config()?));
            // the node has stopped; a blocking task still running must not hold up the exit
            // (everything acknowledged is durable, and the store survives a crash anyway)
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            result
        }
        Commands::Ctl(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            std::process::exit(runtime.block_on(monsys::ctl::run(args))?)
        }
    }
}

async fn run_hub(config: monsys::config::Config) -> anyhow::Result<()> {
    let node = monsys::node::start(config).await?;
    tracing::info!(addr = %node.api_addr, "monsys hub ready to serve");
    tokio::select! {
        _ = wait_for_signal() => tracing::info!("signal received: draining, then stopping"),
        _ = node.drain_requested() => tracing::info!("drain requested: draining, then stopping"),
    }
    node.drain().await;
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
