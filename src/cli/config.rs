//! The one configuration of `serve`: flags and environment over the TOML
//! file over the defaults, resolved and checked once.

use std::path::Path;

use keyserver::transports::{ServerConfig, TlsFiles, DEFAULT_LISTEN, DEFAULT_MAX_BODY};
use keyserver::{backends, Strength};

use super::args::{LogFormat, ServeArgs, ServeOptions, SuiteName};
use super::exit::{io_failure, usage, Failure};

/// What `serve` runs with.
pub(crate) struct ServeConfig {
    pub storage: String,
    pub suite: SuiteName,
    pub strength: Strength,
    pub server: ServerConfig,
    pub kek_pool: usize,
    pub kek_workers: usize,
    pub cache_records: usize,
    pub log_format: LogFormat,
}

fn read_file(path: &Path) -> Result<ServeOptions, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io_failure(format!("cannot read {}", path.display()), e))?;
    toml::from_str(&text).map_err(|e| usage(format!("{}: {}", path.display(), e.message())))
}

impl ServeConfig {
    /// Merges `args` (flags and environment), the file they name, and the
    /// defaults; `log_format` is the global flag.
    pub fn resolve(args: ServeArgs, log_format: Option<LogFormat>) -> Result<Self, Failure> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeOptions::default(),
        };
        let o = args.options.or(file);
        let strength = match o.strength {
            Some(bits) => Strength::from_bits(bits).map_err(|e| usage(e.to_string()))?,
            None => Strength::default(),
        };
        let listen = o.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen
            .parse()
            .map_err(|_| usage(format!("--listen: not an address: {listen}")))?;
        let tls = match (o.tls_cert, o.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: o.client_ca,
            }),
            (None, None) if o.client_ca.is_some() => {
                return Err(usage("--client-ca needs --tls-cert and --tls-key"))
            }
            (None, None) => None,
            _ => return Err(usage("--tls-cert and --tls-key go together")),
        };
        Ok(ServeConfig {
            storage: o.storage.unwrap_or_else(|| "file:./keyserver-data".into()),
            suite: o.suite.unwrap_or(SuiteName::Rustcrypto),
            strength,
            server: ServerConfig {
                listen,
                tls,
                insecure: o.insecure,
                max_body: o.max_body.unwrap_or(DEFAULT_MAX_BODY),
                ..ServerConfig::default()
            },
            kek_pool: o.kek_pool.unwrap_or(8),
            kek_workers: o.kek_workers.unwrap_or(1),
            cache_records: o.cache_records.unwrap_or(backends::DEFAULT_CACHE_RECORDS),
            log_format: log_format.or(o.log_format).unwrap_or(LogFormat::Text),
        })
    }
}
