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
            .with_kek_pool(config.kek_pool, config.kek_workers),
    );
    let status = keys.status();
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
    server.run_until(shutdown_signal()).await;
    let _ = print_stdout("keyserver stopped\n");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
