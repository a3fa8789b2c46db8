//! The one configuration of `serve`: flags and environment over the TOML
//! file over the defaults, resolved and checked once.

use std::path::Path;
use std::time::Duration;

use keyserver::transports::{ServerConfig, TlsFiles, DEFAULT_LISTEN};
use keyserver::{backends, KekAlg, Strength};

use super::args::{LogFormat, ServeArgs, ServeOptions, SuiteName};
use super::exit::{io_failure, usage, Failure};

/// What `serve` runs with.
pub(crate) struct ServeConfig {
    pub storage: String,
    /// The master key's PKCS#11 URI, if records are sealed.
    pub seal: Option<String>,
    /// Reseal what is not under the seal's key, in the background.
    pub reseal: bool,
    pub suite: SuiteName,
    pub require_fips: bool,
    pub strength: Strength,
    pub server: ServerConfig,
    pub kek_pool: usize,
    pub kek_workers: usize,
    pub cache_records: usize,
    pub allow_strengths: Vec<Strength>,
    pub kek_alg: KekAlg,
    pub allow_kek_algs: Vec<KekAlg>,
    /// The auth file, read when the server starts and on SIGHUP.
    pub auth: Option<std::path::PathBuf>,
    /// The audit log, if any.
    pub audit: Option<AuditSettings>,
    pub cryptoperiod: Duration,
    pub destroy_window: Duration,
    pub generate_workers: usize,
    pub generate_queue: usize,
    pub log_format: LogFormat,
}

/// Where the audit log goes and its key file.
pub(crate) struct AuditSettings {
    pub log: std::path::PathBuf,
    pub key: AuditKeySource,
    pub rotate: u64,
}

/// The audit key: a file, or custodian share files combined at start.
pub(crate) enum AuditKeySource {
    File(std::path::PathBuf),
    Shares(Vec<std::path::PathBuf>),
}

impl AuditKeySource {
    /// The file, or the share files comma-separated.
    #[cfg(test)]
    pub fn shown(&self) -> String {
        match self {
            AuditKeySource::File(path) => path.display().to_string(),
            AuditKeySource::Shares(paths) => paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// `30s`, `15m`, `12h`, `7d` (or plain seconds) as a duration.
pub(crate) fn parse_duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if factor > 0 && !number.is_empty() => n
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| usage(format!("{flag}: too long: {text}"))),
        _ => Err(usage(format!(
            "{flag}: a duration like 30s, 15m, 12h or 7d, not {text:?}"
        ))),
    }
}

/// "128,192" -> the strengths, each at or above `minimum`.
fn parse_strengths(list: &str, minimum: Strength) -> Result<Vec<Strength>, Failure> {
    let mut strengths = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bits = item
            .parse::<u32>()
            .map_err(|_| usage(format!("--allow-strengths: not a strength: {item}")))?;
        let strength = Strength::from_bits(bits).map_err(|e| usage(e.to_string()))?;
        if strength < minimum {
            return Err(usage(format!(
                "--allow-strengths: {strength} is below --strength {minimum}"
            )));
        }
        strengths.push(strength);
    }
    if strengths.is_empty() {
        return Err(usage("--allow-strengths: name at least one strength"));
    }
    Ok(strengths)
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
        let allow_strengths = match &o.allow_strengths {
            Some(list) => parse_strengths(list, strength)?,
            None => vec![strength],
        };
        let kek_alg = match &o.kek_alg {
            Some(name) => name
                .parse::<KekAlg>()
                .map_err(|e| usage(format!("--kek-alg: {e}")))?,
            None => KekAlg::default(),
        };
        let allow_kek_algs = match &o.allow_kek_algs {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| {
                    a.parse::<KekAlg>()
                        .map_err(|e| usage(format!("--allow-kek-algs: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![kek_alg],
        };
        let defaults = ServerConfig::default();
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
        let key = match (o.audit_key, o.audit_key_shares) {
            (Some(_), Some(_)) => {
                return Err(usage("give --audit-key or --audit-key-shares, not both"))
            }
            (Some(file), None) => Some(AuditKeySource::File(file)),
            (None, Some(list)) => Some(AuditKeySource::Shares(
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(std::path::PathBuf::from)
                    .collect(),
            )),
            (None, None) => None,
        };
        let audit =
            match (o.audit_log, key) {
                (Some(log), Some(key)) => Some(AuditSettings {
                    log,
                    key,
                    rotate: o
                        .audit_rotate
                        .unwrap_or(keyserver::policy::DEFAULT_AUDIT_ROTATE),
                }),
                (Some(_), None) => return Err(usage(
                    "--audit-log needs --audit-key (keyserver audit new-key --out FILE makes one)",
                )),
                (None, Some(_)) => return Err(usage("--audit-key needs --audit-log")),
                (None, None) => None,
            };
        let cryptoperiod = match &o.cryptoperiod {
            Some(text) => parse_duration("--cryptoperiod", text)?,
            None => keyserver::DEFAULT_CRYPTOPERIOD,
        };
        let destroy_window = match &o.destroy_window {
            Some(text) => parse_duration("--destroy-window", text)?,
            None => keyserver::DEFAULT_DESTROY_WINDOW,
        };
        if o.reseal && o.seal.is_none() {
            return Err(usage("--reseal needs --seal (the key to reseal under)"));
        }
        if o.audit_rotate == Some(0) {
            return Err(usage("--audit-rotate: a size above 0"));
        }
        Ok(ServeConfig {
            storage: o.storage.unwrap_or_else(|| "file:./keyserver-data".into()),
            seal: o.seal,
            reseal: o.reseal,
            suite: o.suite.unwrap_or(SuiteName::Awslc),
            require_fips: o.require_fips,
            strength,
            server: ServerConfig {
                listen,
                tls,
                insecure: o.insecure,
                max_body: o.max_body.unwrap_or(defaults.max_body),
                request_timeout: o
                    .request_timeout
                    .map_or(defaults.request_timeout, Duration::from_secs),
                max_connections: o.max_connections.unwrap_or(defaults.max_connections),
                header_timeout: o
                    .header_timeout
                    .map_or(defaults.header_timeout, Duration::from_secs),
                idle_timeout: o
                    .idle_timeout
                    .map_or(defaults.idle_timeout, Duration::from_secs),
                max_streams: o.max_streams.unwrap_or(defaults.max_streams),
                max_request_memory: o.max_request_memory.unwrap_or(defaults.max_request_memory),
                max_preauth_memory: o.max_preauth_memory.unwrap_or(defaults.max_preauth_memory),
                max_connections_per_peer: o
                    .max_connections_per_peer
                    .unwrap_or(defaults.max_connections_per_peer),
                max_batch_expensive: o
                    .max_batch_expensive
                    .unwrap_or(defaults.max_batch_expensive),
                allowed_hosts: o
                    .allowed_hosts
                    .as_deref()
                    .map(|list| {
                        list.split(',')
                            .map(str::trim)
                            .filter(|h| !h.is_empty())
                            .map(str::to_ascii_lowercase)
                            .collect()
                    })
                    .unwrap_or_default(),
                shutdown_grace: o
                    .grace_period
                    .map_or(defaults.shutdown_grace, Duration::from_secs),
            },
            kek_pool: o.kek_pool.unwrap_or(8),
            kek_workers: o.kek_workers.unwrap_or(1),
            cache_records: o.cache_records.unwrap_or(backends::DEFAULT_CACHE_RECORDS),
            allow_strengths,
            kek_alg,
            allow_kek_algs,
            auth: o.auth.clone(),
            audit,
            cryptoperiod,
            destroy_window,
            generate_workers: o
                .generate_workers
                .unwrap_or_else(keyserver::default_generate_workers),
            generate_queue: o
                .generate_queue
                .unwrap_or(keyserver::DEFAULT_GENERATE_QUEUE),
            log_format: log_format.or(o.log_format).unwrap_or(LogFormat::Text),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Flags over environment over file over defaults, for every option of
    //! `serve`, observed on the resolved configuration.

    use clap::Parser;

    use super::*;
    use crate::cli::args::{Cli, Command};

    /// (flag, environment variable, TOML line, a value for each layer, what
    /// the resolved configuration shows for a value).
    type Show = fn(&ServeConfig) -> String;
    struct Option3 {
        flag: &'static str,
        env: &'static str,
        key: &'static str,
        values: [&'static str; 3],
        show: Show,
    }

    /// Every option of `serve` (TLS paths are only resolved here, not read).
    fn options() -> Vec<Option3> {
        vec![
            Option3 {
                flag: "--storage",
                env: "KEYSERVER_STORAGE",
                key: "storage",
                values: ["memory", "file:/a", "file:/b"],
                show: |c| c.storage.clone(),
            },
            Option3 {
                flag: "--suite",
                env: "KEYSERVER_SUITE",
                key: "suite",
                values: ["openssl", "rustcrypto", "awslc"],
                show: |c| format!("{:?}", c.suite).to_lowercase(),
            },
            Option3 {
                flag: "--strength",
                env: "KEYSERVER_STRENGTH",
                key: "strength",
                values: ["128", "192", "256"],
                show: |c| c.strength.bits().to_string(),
            },
            Option3 {
                flag: "--listen",
                env: "KEYSERVER_LISTEN",
                key: "listen",
                values: ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
                show: |c| c.server.listen.to_string(),
            },
            Option3 {
                flag: "--max-body",
                env: "KEYSERVER_MAX_BODY",
                key: "max_body",
                values: ["1000", "2000", "3000"],
                show: |c| c.server.max_body.to_string(),
            },
            Option3 {
                flag: "--kek-pool",
                env: "KEYSERVER_KEK_POOL",
                key: "kek_pool",
                values: ["1", "2", "3"],
                show: |c| c.kek_pool.to_string(),
            },
            Option3 {
                flag: "--kek-workers",
                env: "KEYSERVER_KEK_WORKERS",
                key: "kek_workers",
                values: ["4", "5", "6"],
                show: |c| c.kek_workers.to_string(),
            },
            Option3 {
                flag: "--cache-records",
                env: "KEYSERVER_CACHE_RECORDS",
                key: "cache_records",
                values: ["0", "7", "9"],
                show: |c| c.cache_records.to_string(),
            },
            Option3 {
                flag: "--log-format",
                env: "KEYSERVER_LOG_FORMAT",
                key: "log_format",
                values: ["json", "text", "json"],
                show: |c| format!("{:?}", c.log_format).to_lowercase(),
            },
            Option3 {
                flag: "--tls-cert",
                env: "KEYSERVER_TLS_CERT",
                key: "tls_cert",
                values: ["/c1", "/c2", "/c3"],
                show: |c| {
                    c.server
                        .tls
                        .as_ref()
                        .map_or(String::new(), |t| t.cert.display().to_string())
                },
            },
            Option3 {
                flag: "--tls-key",
                env: "KEYSERVER_TLS_KEY",
                key: "tls_key",
                values: ["/k1", "/k2", "/k3"],
                show: |c| {
                    c.server
                        .tls
                        .as_ref()
                        .map_or(String::new(), |t| t.key.display().to_string())
                },
            },
            Option3 {
                flag: "--client-ca",
                env: "KEYSERVER_CLIENT_CA",
                key: "client_ca",
                values: ["/a1", "/a2", "/a3"],
                show: |c| {
                    c.server
                        .tls
                        .as_ref()
                        .and_then(|t| t.client_ca.as_ref())
                        .map_or(String::new(), |p| p.display().to_string())
                },
            },
            Option3 {
                flag: "--allow-strengths",
                env: "KEYSERVER_ALLOW_STRENGTHS",
                key: "allow_strengths",
                values: ["256", "192", "128,192"],
                show: |c| {
                    let bits: Vec<String> = c
                        .allow_strengths
                        .iter()
                        .map(|s| s.bits().to_string())
                        .collect();
                    bits.join(",")
                },
            },
            Option3 {
                flag: "--generate-workers",
                env: "KEYSERVER_GENERATE_WORKERS",
                key: "generate_workers",
                values: ["1", "2", "3"],
                show: |c| c.generate_workers.to_string(),
            },
            Option3 {
                flag: "--generate-queue",
                env: "KEYSERVER_GENERATE_QUEUE",
                key: "generate_queue",
                values: ["4", "5", "6"],
                show: |c| c.generate_queue.to_string(),
            },
            Option3 {
                flag: "--request-timeout",
                env: "KEYSERVER_REQUEST_TIMEOUT",
                key: "request_timeout",
                values: ["7", "8", "9"],
                show: |c| c.server.request_timeout.as_secs().to_string(),
            },
            Option3 {
                flag: "--max-connections",
                env: "KEYSERVER_MAX_CONNECTIONS",
                key: "max_connections",
                values: ["10", "11", "12"],
                show: |c| c.server.max_connections.to_string(),
            },
            Option3 {
                flag: "--header-timeout",
                env: "KEYSERVER_HEADER_TIMEOUT",
                key: "header_timeout",
                values: ["13", "14", "15"],
                show: |c| c.server.header_timeout.as_secs().to_string(),
            },
            Option3 {
                flag: "--idle-timeout",
                env: "KEYSERVER_IDLE_TIMEOUT",
                key: "idle_timeout",
                values: ["16", "17", "18"],
                show: |c| c.server.idle_timeout.as_secs().to_string(),
            },
            Option3 {
                flag: "--max-streams",
                env: "KEYSERVER_MAX_STREAMS",
                key: "max_streams",
                values: ["19", "20", "21"],
                show: |c| c.server.max_streams.to_string(),
            },
            Option3 {
                flag: "--max-request-memory",
                env: "KEYSERVER_MAX_REQUEST_MEMORY",
                key: "max_request_memory",
                values: ["22000", "23000", "24000"],
                show: |c| c.server.max_request_memory.to_string(),
            },
            Option3 {
                flag: "--max-preauth-memory",
                env: "KEYSERVER_MAX_PREAUTH_MEMORY",
                key: "max_preauth_memory",
                values: ["41000", "42000", "43000"],
                show: |c| c.server.max_preauth_memory.to_string(),
            },
            Option3 {
                flag: "--max-connections-per-peer",
                env: "KEYSERVER_MAX_CONNECTIONS_PER_PEER",
                key: "max_connections_per_peer",
                values: ["44", "45", "46"],
                show: |c| c.server.max_connections_per_peer.to_string(),
            },
            Option3 {
                flag: "--max-batch-expensive",
                env: "KEYSERVER_MAX_BATCH_EXPENSIVE",
                key: "max_batch_expensive",
                values: ["25", "26", "27"],
                show: |c| c.server.max_batch_expensive.to_string(),
            },
            Option3 {
                flag: "--auth",
                env: "KEYSERVER_AUTH",
                key: "auth",
                values: ["/auth1", "/auth2", "/auth3"],
                show: |c| {
                    c.auth
                        .as_ref()
                        .map_or(String::new(), |p| p.display().to_string())
                },
            },
            Option3 {
                flag: "--grace-period",
                env: "KEYSERVER_GRACE_PERIOD",
                key: "grace_period",
                values: ["28", "29", "30"],
                show: |c| c.server.shutdown_grace.as_secs().to_string(),
            },
            Option3 {
                flag: "--audit-log",
                env: "KEYSERVER_AUDIT_LOG",
                key: "audit_log",
                values: ["/log1", "/log2", "/log3"],
                show: |c| {
                    c.audit
                        .as_ref()
                        .map_or(String::new(), |a| a.log.display().to_string())
                },
            },
            Option3 {
                flag: "--audit-key",
                env: "KEYSERVER_AUDIT_KEY",
                key: "audit_key",
                values: ["/key1", "/key2", "/key3"],
                show: |c| c.audit.as_ref().map_or(String::new(), |a| a.key.shown()),
            },
            Option3 {
                flag: "--audit-rotate",
                env: "KEYSERVER_AUDIT_ROTATE",
                key: "audit_rotate",
                values: ["31000", "32000", "33000"],
                show: |c| {
                    c.audit
                        .as_ref()
                        .map_or(String::new(), |a| a.rotate.to_string())
                },
            },
            Option3 {
                flag: "--cryptoperiod",
                env: "KEYSERVER_CRYPTOPERIOD",
                key: "cryptoperiod",
                values: ["1d", "2d", "3d"],
                show: |c| format!("{}d", c.cryptoperiod.as_secs() / 86_400),
            },
            Option3 {
                flag: "--destroy-window",
                env: "KEYSERVER_DESTROY_WINDOW",
                key: "destroy_window",
                values: ["10s", "20s", "30s"],
                show: |c| format!("{}s", c.destroy_window.as_secs()),
            },
            Option3 {
                flag: "--allowed-hosts",
                env: "KEYSERVER_ALLOWED_HOSTS",
                key: "allowed_hosts",
                values: ["a.example", "b.example", "c.example,d.example"],
                show: |c| c.server.allowed_hosts.join(","),
            },
        ]
    }

    fn toml_value(key: &str, value: &str) -> String {
        match key {
            "strength"
            | "max_body"
            | "kek_pool"
            | "kek_workers"
            | "cache_records"
            | "generate_workers"
            | "generate_queue"
            | "request_timeout"
            | "max_connections"
            | "header_timeout"
            | "idle_timeout"
            | "max_streams"
            | "max_request_memory"
            | "max_preauth_memory"
            | "max_connections_per_peer"
            | "max_batch_expensive"
            | "grace_period"
            | "audit_rotate" => value.to_string(),
            _ => format!("{value:?}"),
        }
    }

    fn resolve(args: &[String]) -> Result<ServeConfig, Failure> {
        let cli = Cli::try_parse_from(args).map_err(|e| super::usage(e.to_string()))?;
        match cli.command {
            Command::Serve(serve) => ServeConfig::resolve(*serve, cli.log_format),
            _ => Err(super::usage("not serve")),
        }
    }

    /// One test (the environment is the process's): for each option, the
    /// file's value, then the environment's over it, then the flag's over
    /// both; and `--insecure` from any layer.
    #[test]
    fn flags_over_environment_over_file_for_every_option() {
        let dir = tempfile::tempdir().expect("a temporary directory"); // ok: test
        let options = options();
        let file = dir.path().join("keyserver.toml");
        let mut toml = String::new();
        for o in &options {
            toml.push_str(&format!("{} = {}\n", o.key, toml_value(o.key, o.values[0])));
        }
        std::fs::write(&file, &toml).expect("write the file"); // ok: test
        let base = vec![
            "keyserver".to_string(),
            "serve".into(),
            "--config".into(),
            file.display().to_string(),
        ];
        // TLS settings go together: give every layer all three.
        let tls = ["--tls-cert", "--tls-key", "--client-ca"];
        for o in &options {
            for var in options.iter().map(|o| o.env) {
                std::env::remove_var(var);
            }
            let from_file = resolve(&base).map_err(|f| f.message).expect("file only"); // ok: test
            assert_eq!(
                (o.show)(&from_file),
                o.values[0],
                "{}: the file's value",
                o.key
            );

            let env_layer: Vec<&Option3> = if tls.contains(&o.flag) {
                options.iter().filter(|x| tls.contains(&x.flag)).collect()
            } else {
                vec![o]
            };
            for x in &env_layer {
                std::env::set_var(x.env, x.values[1]);
            }
            let from_env = resolve(&base).map_err(|f| f.message).expect("env"); // ok: test
            assert_eq!(
                (o.show)(&from_env),
                o.values[1],
                "{}: the environment over the file",
                o.key
            );

            let mut args = base.clone();
            for x in &env_layer {
                args.push(x.flag.to_string());
                args.push(x.values[2].to_string());
            }
            let from_flag = resolve(&args).map_err(|f| f.message).expect("flag"); // ok: test
            assert_eq!(
                (o.show)(&from_flag),
                o.values[2],
                "{}: the flag over both",
                o.key
            );
            for x in &env_layer {
                std::env::remove_var(x.env);
            }
        }
        // --insecure: off by default, on from any layer.
        let plain = dir.path().join("plain.toml");
        std::fs::write(&plain, "").expect("write"); // ok: test
        let args = |extra: &[&str]| {
            let mut a = vec![
                "keyserver".to_string(),
                "serve".into(),
                "--config".into(),
                plain.display().to_string(),
            ];
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let insecure = |a: &[String]| {
            resolve(a)
                .map_err(|f| f.message)
                .expect("resolves") // ok: test
                .server
                .insecure
        };
        assert!(!insecure(&args(&[])));
        assert!(insecure(&args(&["--insecure"])));
        std::env::set_var("KEYSERVER_INSECURE", "true");
        assert!(insecure(&args(&[])));
        std::env::remove_var("KEYSERVER_INSECURE");
        std::fs::write(&plain, "insecure = true\n").expect("write"); // ok: test
        assert!(insecure(&args(&[])));
    }
}
