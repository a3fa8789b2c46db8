//! `keyserver serve`.

use std::sync::Arc;

use keyserver::transports::HttpServer;
use keyserver::KeyServer;

use super::args::{LogFormat, ServeArgs};
use super::config::ServeConfig;
use super::exit::Failure;
use super::output::print_stdout;
use super::{choice, init_logging};

pub(crate) async fn serve(args: ServeArgs, log_format: Option<LogFormat>) -> Result<(), Failure> {
    let config = ServeConfig::resolve(args, log_format)?;
    init_logging(config.log_format);
    let storage = choice::storage(&config.storage, config.cache_records).await?;
    let suite = choice::suite(config.suite)?;
    let keys = Arc::new(
        KeyServer::new(suite, storage)
            .with_min_strength(config.strength)
            .with_allowed_strengths(&config.allow_strengths)
            .with_generate_limit(config.generate_workers, config.generate_queue)
            .with_kek_pool(config.kek_pool, config.kek_workers),
    );
    let status = keys.status();
    // Listen for SIGTERM and SIGINT before saying we listen: a signal sent
    // as soon as the line below appears must stop the server gracefully,
    // not kill it with the default action.
    let stop = shutdown_signal()?;
    let server = HttpServer::start(keys, config.server).await?;
    // Best effort: a closed stdout must not stop the server.
    let _ = print_stdout(&format!(
        "keyserver listening on {} (XML-RPC at /RPC2, JSON-RPC at /jsonrpc); suite {}, \
         storage {} ({} keys), strength {}\n",
        server.url(),
        status.suite,
        config.storage,
        status.keys,
        config.strength
    ));
    server.run_until(stop).await;
    let _ = print_stdout("keyserver stopped\n");
    Ok(())
}

/// A future that completes on SIGTERM or SIGINT, with both handlers
/// installed before it returns.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind: SignalKind| {
        signal(kind).map_err(|e| super::exit::io_failure("cannot handle signals".into(), e))
    };
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
