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
                values: ["openssl", "rustcrypto", "openssl"],
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
        ]
    }

    fn toml_value(key: &str, value: &str) -> String {
        match key {
            "strength" | "max_body" | "kek_pool" | "kek_workers" | "cache_records" => {
                value.to_string()
            }
            _ => format!("{value:?}"),
        }
    }

    fn resolve(args: &[String]) -> Result<ServeConfig, Failure> {
        let cli = Cli::try_parse_from(args).map_err(|e| super::usage(e.to_string()))?;
        match cli.command {
            Command::Serve(serve) => ServeConfig::resolve(serve, cli.log_format),
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
