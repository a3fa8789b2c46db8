//! The `keyserver` command: run a key server, or use one.
//!
//! ```sh
//! keyserver serve                       # 127.0.0.1:8731, RustCrypto, ./keyserver-data
//! keyserver generate --out kek.pem      # KeyId on stderr
//! keyserver encrypt --kek kek.pem --in data --out data.kss
//! keyserver decrypt --kek kek.pem --in data.kss --out data
//! keyserver status
//! ```
//!
//! Exit codes: 0 success, 1 other failure, 2 usage, 3 cannot reach or talk to
//! the server, 4 key not found, 5 authentication or decryption failure.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyserver::backends;
use keyserver::transports::{
    ClientOptions, ClientTls, HttpServer, JsonRpc, ServerConfig, TlsFiles, XmlRpc,
};
use keyserver::{
    stream, CipherSuite, Encryption, Error, Kek, KeyClient, KeyServer, KeyService, KeyStorage,
    Strength, Transport, UnwrapMode,
};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "keyserver",
    version,
    about = "Envelope-encryption key server and client"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "KEYSERVER_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, Deserialize, ValueEnum, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a key server.
    Serve(ServeArgs),
    /// Ask the server for a new KEK; writes it (PEM) and prints its key id on stderr.
    Generate {
        #[command(flatten)]
        client: ClientArgs,
        /// Write the KEK to this file (created 0600, never overwritten); stdout if absent.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Strength of the new key (128, 192, 256); the server's if absent.
        #[arg(long)]
        strength: Option<u32>,
    },
    /// Print the DEK of a KEK, as hex.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The KEK file (PEM).
        #[arg(long)]
        kek: PathBuf,
    },
    /// Encrypt a file or stdin (streaming, bounded memory).
    Encrypt(CryptArgs),
    /// Decrypt a file or stdin (streaming, bounded memory).
    Decrypt(CryptArgs),
    /// Print the server's status.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Load generator: drive a running server with concurrent clients and
    /// print throughput and latency percentiles.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// What to measure.
    #[arg(long, value_enum, default_value = "get-key")]
    op: BenchOp,
    /// Concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Plaintext bytes per operation for encrypt and decrypt.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Stop each client after this many operations (for example to measure
    /// `generate` while a KEK pool lasts).
    #[arg(long)]
    requests: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum BenchOp {
    /// `generate` on the server.
    Generate,
    /// `get_key`: server-side unwrap of one KEK.
    GetKey,
    /// `get_wrapped` of one key id.
    GetWrapped,
    /// `status`.
    Status,
    /// Local encryption with a cached DEK.
    Encrypt,
    /// Local decryption with a cached DEK.
    Decrypt,
}

#[derive(Args, Default)]
struct ServeArgs {
    /// TOML configuration file (same keys as the long options, with '_' for '-').
    #[arg(long, env = "KEYSERVER_CONFIG")]
    config: Option<PathBuf>,
    /// Storage: "memory" or "file:DIR" [default: file:./keyserver-data].
    #[arg(long, env = "KEYSERVER_STORAGE")]
    storage: Option<String>,
    /// Cipher suite [default: rustcrypto].
    #[arg(long, env = "KEYSERVER_SUITE", value_enum)]
    suite: Option<SuiteName>,
    /// Security strength of new keys: 128, 192 or 256 [default: 128].
    #[arg(long, env = "KEYSERVER_STRENGTH")]
    strength: Option<u32>,
    /// Address to listen on [default: 127.0.0.1:8731].
    #[arg(long, env = "KEYSERVER_LISTEN")]
    listen: Option<String>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "KEYSERVER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "KEYSERVER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: enables mutual TLS.
    #[arg(long, env = "KEYSERVER_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long, env = "KEYSERVER_INSECURE")]
    insecure: bool,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "KEYSERVER_MAX_BODY")]
    max_body: Option<usize>,
    /// RSA key pairs kept ready for generate(); 0 generates inline [default: 8].
    #[arg(long, env = "KEYSERVER_KEK_POOL")]
    kek_pool: Option<usize>,
    /// Background threads refilling the pool [default: 1].
    #[arg(long, env = "KEYSERVER_KEK_WORKERS")]
    kek_workers: Option<usize>,
    /// Wrapped-DEK records file storage keeps in memory; 0 reads every
    /// request's record from disk [default: 16384].
    #[arg(long, env = "KEYSERVER_CACHE_RECORDS")]
    cache_records: Option<usize>,
}

/// The configuration file: every field optional; flags and environment win.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    storage: Option<String>,
    suite: Option<SuiteName>,
    strength: Option<u32>,
    listen: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure: Option<bool>,
    max_body: Option<usize>,
    kek_pool: Option<usize>,
    kek_workers: Option<usize>,
    cache_records: Option<usize>,
    log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, Debug, Deserialize, ValueEnum, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SuiteName {
    Rustcrypto,
    Openssl,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Protocol {
    Xmlrpc,
    Jsonrpc,
}

#[derive(Args)]
struct ClientArgs {
    /// The key server's URL.
    #[arg(long, env = "KEYSERVER_URL", default_value = "http://127.0.0.1:8731")]
    server: String,
    /// Wire protocol.
    #[arg(
        long,
        env = "KEYSERVER_TRANSPORT",
        value_enum,
        default_value = "xmlrpc"
    )]
    transport: Protocol,
    /// CA certificate (PEM) for an https server; the system's roots if absent.
    #[arg(long, env = "KEYSERVER_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "KEYSERVER_CLIENT_CERT")]
    client_cert: Option<PathBuf>,
    /// Client certificate key (PEM) for mutual TLS.
    #[arg(long, env = "KEYSERVER_CLIENT_KEY")]
    client_key: Option<PathBuf>,
    /// Seconds to wait for the server.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Unwrap the DEK here (the KEK never leaves this machine) instead of on the server.
    #[arg(long)]
    client_unwrap: bool,
    /// Cipher suite for local encryption and decryption (both write the same bytes).
    #[arg(
        long = "suite",
        env = "KEYSERVER_CLIENT_SUITE",
        value_enum,
        default_value = "rustcrypto"
    )]
    local_suite: SuiteName,
}

#[derive(Args)]
struct CryptArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The KEK file (PEM).
    #[arg(long)]
    kek: PathBuf,
    /// Input file; stdin if absent.
    #[arg(long = "in")]
    input: Option<PathBuf>,
    /// Output file (written whole or not at all); stdout if absent.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A failure with its exit code and one line for stderr.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Transport { .. } => 3,
            Error::NotFound { .. } => 4,
            Error::DecryptionFailed
            | Error::UnwrapFailed { .. }
            | Error::KeyMismatch { .. }
            | Error::MalformedCiphertext { .. } => 5,
            Error::Remote { code, .. } if *code == 1 => 4,
            Error::Remote { code, .. } if *code == 3 => 5,
            _ => 1,
        };
        let mut message = e.to_string();
        if let Some(source) = std::error::Error::source(&e) {
            message = format!("{message}: {source}");
        }
        Failure { code, message }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn io_failure(what: String, e: std::io::Error) -> Failure {
    Failure {
        code: 1,
        message: format!("{what}: {e}"),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "keyserver: cannot start the async runtime: {e}"
            );
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    if std::env::var_os("KEYSERVER_REPORT_PEAK_RSS").is_some() {
        report_peak_rss();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let _ = writeln!(std::io::stderr(), "keyserver: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Prints the process's peak resident memory (Linux), for memory tests.
fn report_peak_rss() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
            let _ = writeln!(
                std::io::stderr(),
                "keyserver: peak RSS {}",
                line.trim_start_matches("VmHWM:").trim()
            );
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // jsonrpsee logs whole HTTP bodies (keys) at DEBUG/TRACE: cap it whatever
    // RUST_LOG says.
    let no_bodies = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("jsonrpsee") && *meta.level() > tracing::Level::INFO)
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter).with_filter(no_bodies))
        .try_init();
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve(args, cli.log_format).await,
        command => {
            init_logging(cli.log_format.unwrap_or(LogFormat::Text));
            client_command(command).await
        }
    }
}

// ---------------------------------------------------------------- serve

fn read_config(path: &Path) -> Result<FileConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io_failure(format!("cannot read {}", path.display()), e))?;
    toml::from_str(&text).map_err(|e| usage(format!("{}: {}", path.display(), e.message())))
}

async fn serve(args: ServeArgs, log_format: Option<LogFormat>) -> Result<(), Failure> {
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => FileConfig::default(),
    };
    init_logging(log_format.or(file.log_format).unwrap_or(LogFormat::Text));
    let storage = args
        .storage
        .or(file.storage)
        .unwrap_or_else(|| "file:./keyserver-data".into());
    let suite = args.suite.or(file.suite).unwrap_or(SuiteName::Rustcrypto);
    let strength = match args.strength.or(file.strength) {
        Some(bits) => Strength::from_bits(bits).map_err(|e| usage(e.to_string()))?,
        None => Strength::default(),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| keyserver::transports::DEFAULT_LISTEN.into());
    let listen = listen
        .parse()
        .map_err(|_| usage(format!("--listen: not an address: {listen}")))?;
    let tls = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            client_ca: args.client_ca.or(file.client_ca),
        }),
        (None, None) => {
            if args.client_ca.is_some() || file.client_ca.is_some() {
                return Err(usage("--client-ca needs --tls-cert and --tls-key"));
            }
            None
        }
        _ => return Err(usage("--tls-cert and --tls-key go together")),
    };
    let config = ServerConfig {
        listen,
        tls,
        insecure: args.insecure || file.insecure.unwrap_or(false),
        max_body: args
            .max_body
            .or(file.max_body)
            .unwrap_or(keyserver::transports::DEFAULT_MAX_BODY),
        ..ServerConfig::default()
    };
    let pool = Pool {
        size: args.kek_pool.or(file.kek_pool).unwrap_or(8),
        workers: args.kek_workers.or(file.kek_workers).unwrap_or(1),
    };
    let storage_label = storage.clone();
    match storage.as_str() {
        "memory" => {
            let store = backends::MemoryStorage::new();
            serve_with_suite(suite, store, strength, pool, config, &storage_label).await
        }
        other => match other.strip_prefix("file:") {
            Some(dir) if !dir.is_empty() => {
                let store = backends::FileStorage::open(dir).await?;
                store.set_cache_capacity(
                    args.cache_records
                        .or(file.cache_records)
                        .unwrap_or(backends::DEFAULT_CACHE_RECORDS),
                );
                serve_with_suite(suite, store, strength, pool, config, &storage_label).await
            }
            _ => Err(usage(format!(
                "--storage: expected \"memory\" or \"file:DIR\", not {other:?}"
            ))),
        },
    }
}

/// The KEK pool settings of `serve`.
#[derive(Clone, Copy)]
struct Pool {
    size: usize,
    workers: usize,
}

/// Chooses the cipher suite at run time, among those compiled in.
async fn serve_with_suite<S: KeyStorage>(
    suite: SuiteName,
    storage: S,
    strength: Strength,
    pool: Pool,
    config: ServerConfig,
    storage_label: &str,
) -> Result<(), Failure> {
    match suite {
        SuiteName::Rustcrypto => {
            let suite = backends::RustCrypto::new();
            run_server(suite, storage, strength, pool, config, storage_label).await
        }
        #[cfg(feature = "cipher-openssl")]
        SuiteName::Openssl => {
            let suite = backends::OpenSsl::new();
            run_server(suite, storage, strength, pool, config, storage_label).await
        }
        #[cfg(not(feature = "cipher-openssl"))]
        SuiteName::Openssl => Err(usage(
            "--suite openssl: this keyserver was built without the cipher-openssl feature",
        )),
    }
}

/// The one generic server function every combination goes through.
async fn run_server<C: CipherSuite, S: KeyStorage>(
    suite: C,
    storage: S,
    strength: Strength,
    pool: Pool,
    config: ServerConfig,
    storage_label: &str,
) -> Result<(), Failure> {
    let keys = Arc::new(
        KeyServer::new(suite, storage)
            .with_strength(strength)
            .with_kek_pool(pool.size, pool.workers),
    );
    let suite_name = keys.suite().name();
    let keys_count = keys.len();
    let server = HttpServer::start(keys, config).await?;
    // Best effort: a closed stdout must not stop the server.
    let _ = print_stdout(&format!(
        "keyserver listening on {} (XML-RPC at /RPC2, JSON-RPC at /jsonrpc); suite {suite_name}, \
         storage {storage_label} ({keys_count} keys), strength {strength}\n",
        server.url()
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

// ---------------------------------------------------------------- clients

fn client(args: &ClientArgs) -> Result<KeyClient<Box<dyn Transport>>, Failure> {
    let options = ClientOptions {
        timeout: Duration::from_secs(args.timeout.max(1)),
        tls: ClientTls {
            ca_cert: args.ca_cert.clone(),
            client_cert: args.client_cert.clone(),
            client_key: args.client_key.clone(),
        },
    };
    let transport: Box<dyn Transport> = match args.transport {
        Protocol::Xmlrpc => Box::new(XmlRpc::with_options(&args.server, options)?),
        Protocol::Jsonrpc => Box::new(JsonRpc::with_options(&args.server, options)?),
    };
    let mode = if args.client_unwrap {
        UnwrapMode::Client
    } else {
        UnwrapMode::Server
    };
    Ok(KeyClient::new(transport, local_suite(args.local_suite)?).with_unwrap_mode(mode))
}

/// The cipher suite for client-side work, chosen at run time.
fn local_suite(name: SuiteName) -> Result<Box<dyn CipherSuite>, Failure> {
    match name {
        SuiteName::Rustcrypto => Ok(Box::new(backends::RustCrypto::new())),
        #[cfg(feature = "cipher-openssl")]
        SuiteName::Openssl => Ok(Box::new(backends::OpenSsl::new())),
        #[cfg(not(feature = "cipher-openssl"))]
        SuiteName::Openssl => Err(usage(
            "--suite openssl: this keyserver was built without the cipher-openssl feature",
        )),
    }
}

fn read_kek(path: &Path) -> Result<Kek, Failure> {
    let mut text = zeroize::Zeroizing::new(String::new());
    File::open(path)
        .and_then(|f| f.take(1 << 16).read_to_string(&mut text))
        .map_err(|e| io_failure(format!("cannot read the KEK file {}", path.display()), e))?;
    Kek::from_pem(&text).map_err(|e| Failure {
        code: 1,
        message: format!("{}: {e}", path.display()),
    })
}

async fn client_command(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve(_) => Err(usage("serve is not a client command")),
        Command::Generate {
            client: args,
            out,
            strength,
        } => {
            let strength = strength
                .map(|bits| Strength::from_bits(bits).map_err(|e| usage(e.to_string())))
                .transpose()?;
            let client = client(&args)?;
            // Create the file before asking for a key: a KEK that cannot be
            // saved would leave the server with a key nobody can use.
            let file = out.as_deref().map(create_private_file).transpose()?;
            let kek = match client.transport().generate(strength).await {
                Ok(kek) => kek,
                Err(e) => {
                    if let Some((path, _)) = &file {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e.into());
                }
            };
            let pem = kek.to_pem();
            match file {
                Some((path, mut file)) => file
                    .write_all(pem.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_failure(format!("cannot write {}", path.display()), e))?,
                None => print_stdout(&pem)?,
            }
            let _ = writeln!(std::io::stderr(), "key id: {}", kek.id());
            Ok(())
        }
        Command::Get { client: args, kek } => {
            let kek = read_kek(&kek)?;
            let dek = client(&args)?.get(&kek).await?;
            let mut line = zeroize::Zeroizing::new(hex::encode(dek.as_bytes()));
            line.push('\n');
            print_stdout(&line)
        }
        Command::Status { client: args } => {
            let status = client(&args)?.transport().status().await?;
            print_stdout(&format!(
                "keys: {}\nversion: {}\nsuite: {}\nstorage: {}\nstrength: {}\n",
                status.keys, status.version, status.suite, status.storage, status.strength
            ))
        }
        Command::Bench(args) => bench(args).await,
        Command::Encrypt(args) => crypt(args, true).await,
        Command::Decrypt(args) => crypt(args, false).await,
    }
}

/// Writes to stdout; a closed stdout (`| head`) is an error, not a panic.
fn print_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| io_failure("writing to stdout".into(), e))
}

/// Creates `path` 0600, refusing to overwrite (a lost KEK is lost data).
fn create_private_file(path: &Path) -> Result<(PathBuf, File), Failure> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(|file| (path.to_path_buf(), file))
        .map_err(|e| io_failure(format!("cannot create {}", path.display()), e))
}

/// Where output goes: a temporary file renamed into place on success (and
/// removed on failure); or, for an existing path that is not a regular file
/// (`/dev/null`, a FIFO, a terminal), that path written directly; or stdout.
enum Sink {
    File {
        tmp: PathBuf,
        dest: PathBuf,
        file: File,
    },
    Special(File),
    Stdout(std::io::Stdout),
}

impl Sink {
    fn open(out: Option<&Path>) -> Result<Self, Failure> {
        let Some(dest) = out else {
            return Ok(Sink::Stdout(std::io::stdout()));
        };
        // Renaming a temporary file over a device or a FIFO would replace it
        // (as root, `--out /dev/null` would leave a regular file there):
        // such outputs are written in place; they have no partial file to
        // protect anyway.
        if let Ok(meta) = std::fs::metadata(dest) {
            if !meta.is_file() && !meta.is_dir() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(dest)
                    .map_err(|e| io_failure(format!("cannot open {}", dest.display()), e))?;
                return Ok(Sink::Special(file));
            }
        }
        let name = dest
            .file_name()
            .ok_or_else(|| usage(format!("--out {}: not a file name", dest.display())))?;
        let tmp = dest.with_file_name(format!(
            ".{}.keyserver-{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_failure(format!("cannot create {}", tmp.display()), e))?;
        Ok(Sink::File {
            tmp,
            dest: dest.to_path_buf(),
            file,
        })
    }

    fn writer(&mut self) -> Box<dyn Write + '_> {
        match self {
            Sink::File { file, .. } | Sink::Special(file) => {
                Box::new(std::io::BufWriter::with_capacity(1 << 16, file))
            }
            Sink::Stdout(out) => Box::new(std::io::BufWriter::with_capacity(1 << 16, out)),
        }
    }

    fn commit(self) -> Result<(), Failure> {
        if let Sink::File { tmp, dest, file } = self {
            file.sync_all()
                .map_err(|e| io_failure(format!("cannot write {}", tmp.display()), e))?;
            std::fs::rename(&tmp, &dest)
                .map_err(|e| io_failure(format!("cannot create {}", dest.display()), e))?;
        }
        Ok(())
    }

    fn abort(self) {
        if let Sink::File { tmp, .. } = self {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Counts bytes read and shows progress on stderr when it is a terminal.
struct Progress<R> {
    inner: R,
    done: u64,
    total: Option<u64>,
    last: Instant,
    show: bool,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.show && (n == 0 || self.last.elapsed() > Duration::from_millis(200)) {
            self.last = Instant::now();
            let mib = self.done as f64 / 1048576.0;
            let line = match self.total {
                Some(total) if total > 0 => format!(
                    "\r{mib:.1} / {:.1} MiB ({:.0}%)",
                    total as f64 / 1048576.0,
                    self.done as f64 * 100.0 / total as f64
                ),
                _ => format!("\r{mib:.1} MiB"),
            };
            let _ = std::io::stderr().write_all(line.as_bytes());
            if n == 0 {
                let _ = writeln!(std::io::stderr());
            }
        }
        Ok(n)
    }
}

async fn crypt(args: CryptArgs, encrypting: bool) -> Result<(), Failure> {
    let kek = read_kek(&args.kek)?;
    let (input, total): (Box<dyn Read + Send>, Option<u64>) = match &args.input {
        Some(path) => {
            let file = File::open(path)
                .map_err(|e| io_failure(format!("cannot open {}", path.display()), e))?;
            let len = file.metadata().ok().map(|m| m.len());
            (
                Box::new(std::io::BufReader::with_capacity(1 << 16, file)),
                len,
            )
        }
        None => (Box::new(std::io::stdin()), None),
    };
    let mut input = Progress {
        inner: input,
        done: 0,
        total,
        last: Instant::now(),
        show: std::io::stderr().is_terminal(),
    };
    // Decrypting: read the header first, to know the key before asking for it.
    let header = if encrypting {
        None
    } else {
        let header = stream::StreamHeader::read_from(&mut input)?;
        if header.key_id != kek.id() {
            return Err(Error::KeyMismatch {
                expected: header.key_id,
                given: kek.id(),
            }
            .into());
        }
        Some(header)
    };
    let client = client(&args.client)?;
    let dek = client.get(&kek).await?;
    let mut sink = Sink::open(args.out.as_deref())?;
    let key_id = kek.id();
    let suite = local_suite(args.client.local_suite)?;
    let result = tokio::task::block_in_place(|| {
        let writer = sink.writer();
        match &header {
            None => stream::encrypt(&suite, &key_id, &dek, &mut input, writer),
            Some(header) => stream::decrypt_after_header(&suite, &dek, header, &mut input, writer),
        }
    });
    match result {
        Ok(_) => sink.commit(),
        Err(e) => {
            sink.abort();
            Err(e.into())
        }
    }
}

// ---------------------------------------------------------------- bench

async fn bench(args: BenchArgs) -> Result<(), Failure> {
    let clients = args.clients.max(1);
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let setup = client(&args.client)?;
    let kek = setup.transport().generate(None).await?;
    let plaintext = vec![0x5au8; args.size];
    let sealed = setup.encrypt(&kek, &plaintext).await?;
    let (kek, plaintext, sealed) = (Arc::new(kek), Arc::new(plaintext), Arc::new(sealed));
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = Arc::new(client(&args.client)?);
        // Warm the DEK cache of local operations before the clock starts.
        if matches!(args.op, BenchOp::Encrypt | BenchOp::Decrypt) {
            client.get(&kek).await?;
        }
        let (kek, plaintext, sealed, op) = (
            Arc::clone(&kek),
            Arc::clone(&plaintext),
            Arc::clone(&sealed),
            args.op,
        );
        let requests = args.requests.unwrap_or(u64::MAX);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut done = 0u64;
            while Instant::now() < deadline && done < requests {
                done += 1;
                let t = Instant::now();
                let ok = match op {
                    BenchOp::Generate => client.transport().generate(None).await.is_ok(),
                    BenchOp::GetKey => client.transport().get_key(&kek).await.is_ok(),
                    BenchOp::GetWrapped => client.transport().get_wrapped(&kek.id()).await.is_ok(),
                    BenchOp::Status => client.transport().status().await.is_ok(),
                    BenchOp::Encrypt => client.encrypt(&kek, &plaintext).await.is_ok(),
                    BenchOp::Decrypt => client.decrypt(&kek, &sealed).await.is_ok(),
                };
                if ok {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.map_err(|_| Failure {
            code: 1,
            message: "a benchmark client failed".into(),
        })?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    let secs = (Instant::now().min(deadline) - start)
        .as_secs_f64()
        .max(1e-3);
    let ops = latencies.len() as f64 / secs;
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let mut line = format!(
        "bench {:?} over {:?}, {clients} clients, {secs:.1} s: {} ok, {errors} errors, \
         {ops:.1} ops/s, p50 {:.3} ms, p99 {:.3} ms",
        args.op,
        args.client.transport,
        latencies.len(),
        pct(0.5),
        pct(0.99)
    );
    if matches!(args.op, BenchOp::Encrypt | BenchOp::Decrypt) {
        line.push_str(&format!(", {:.1} MB/s", ops * args.size as f64 / 1e6));
    }
    line.push('\n');
    print_stdout(&line)
}
