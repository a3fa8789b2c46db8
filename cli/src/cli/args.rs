//! The command line: clap's types for every command and option.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "keyserver",
    version,
    about = "Envelope-encryption key server and client"
)]
pub(crate) struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "KEYSERVER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, Deserialize, ValueEnum, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a key server.
    Serve(Box<ServeArgs>),
    /// Ask the server for a new KEK; writes it (PEM) and prints its key id on stderr.
    Generate {
        #[command(flatten)]
        client: ClientArgs,
        /// Write the KEK to this file (created 0600, never overwritten); stdout if absent.
        #[arg(long, conflicts_with = "shares")]
        out: Option<PathBuf>,
        /// Split the KEK into N custodian share files, any K of which
        /// rebuild it ("K/N", e.g. "3/5"); no file holds the KEK. Needs
        /// --out-dir.
        #[arg(long, requires = "out_dir")]
        shares: Option<String>,
        /// The folder for the share files (share-I-of-N.pem, 0600; made
        /// 0700 if absent; existing share files are never overwritten).
        #[arg(long, requires = "shares")]
        out_dir: Option<PathBuf>,
        /// Strength of the new key (128, 192, 256); the server's if absent.
        #[arg(long)]
        strength: Option<u32>,
        /// Algorithm of the new key: rsa, ec or hybrid-pq; the server's if absent.
        #[arg(long)]
        alg: Option<String>,
    },
    /// Print the DEK of a KEK, as hex.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        kek: KekArgs,
    },
    /// Encrypt a file or stdin (streaming, bounded memory).
    Encrypt(CryptArgs),
    /// Decrypt a file or stdin (streaming, bounded memory).
    Decrypt(CryptArgs),
    /// Re-encrypt a file or stdin sealed under one key so that it opens
    /// under another only: for rekeying data after a compromise. The
    /// plaintext never reaches the disk.
    Reencrypt(ReencryptArgs),
    /// Print the server's status.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a key's lifecycle (state, strength, owner, times) as JSON.
    Describe {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Rotate a key: a new KEK whose record wraps the same DEK (old data
    /// decrypts with it); the old key is deactivated.
    Rotate {
        #[command(flatten)]
        client: ClientArgs,
        /// The current KEK.
        #[command(flatten)]
        kek: KekArgs,
        /// Write the new KEK to this file (created 0600, never overwritten).
        #[arg(long, required_unless_present = "shares", conflicts_with = "shares")]
        out: Option<PathBuf>,
        /// Split the new KEK into N custodian share files, any K of which
        /// rebuild it ("K/N"); no file holds it. Needs --out-dir.
        #[arg(long, requires = "out_dir")]
        shares: Option<String>,
        /// The folder for the new KEK's share files.
        #[arg(long, requires = "shares")]
        out_dir: Option<PathBuf>,
        /// Strength of the new KEK (at least the DEK's); the server's if absent.
        #[arg(long)]
        strength: Option<u32>,
    },
    /// Suspend a key: it gives nothing until resumed.
    Suspend(ChangeArgs),
    /// Resume a suspended key.
    Resume(ChangeArgs),
    /// Mark a key compromised: decrypt only, every use logged.
    Compromised(ChangeArgs),
    /// Schedule a key's destruction (after the server's destroy window).
    Destroy(ChangeArgs),
    /// Cancel a scheduled destruction.
    CancelDestroy(ChangeArgs),
    /// List keys as JSON lines (an operator's view; filter by state, owner,
    /// age).
    ListKeys {
        #[command(flatten)]
        client: ClientArgs,
        /// Only keys in this state (active, deactivated, suspended,
        /// compromised, destroy-pending, destroyed).
        #[arg(long)]
        state: Option<String>,
        /// Only keys this principal made.
        #[arg(long)]
        owner: Option<String>,
        /// Only keys older than the server's cryptoperiod.
        #[arg(long)]
        past_cryptoperiod: bool,
        /// Keys per page asked of the server [default: 100].
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Load generator: drive a running server with concurrent clients and
    /// print throughput and latency percentiles.
    Bench(BenchArgs),
    /// Tokens for a server's auth file.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log: make its key, verify its chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Rebuild a KEK (or an audit key) from K of its custodian share files.
    Combine {
        /// The share files (K of them, or more).
        #[arg(long = "in", required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// The file to write the rebuilt key to (created 0600, never
        /// overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// The master key in an HSM that seals stored records: make it,
    /// destroy it.
    #[command(subcommand)]
    Seal(SealCommand),
    /// Move every record of a storage under another master key (or from
    /// none to sealed, or back to unsealed): each record is replaced in one
    /// step, so a crash leaves every record readable, and running it again
    /// resumes. PostgreSQL: while servers run. A file store is locked by
    /// its server: stop it, or let the server do it (`serve --seal URI
    /// --reseal`).
    Reseal {
        /// The storage ("file:DIR", "postgres://...").
        #[arg(long, env = "KEYSERVER_STORAGE")]
        storage: String,
        /// The master key to seal under (a PKCS#11 URI), or "none" to
        /// unseal the store.
        #[arg(long)]
        to: String,
        /// The token that opens the records now, if it is not --to's
        /// (records of every key on --to's token open without it).
        #[arg(long)]
        from: Option<String>,
    },
    /// Copy every key (records and lifecycle metadata, tombstones included)
    /// from one storage to another, verifying each; run it again to resume:
    /// nothing doubles, and a key's state at the destination (suspended,
    /// destroyed...) is never undone.
    Copy {
        /// The storage to read ("file:DIR", "postgres://...").
        #[arg(long)]
        from: String,
        /// The storage to write.
        #[arg(long)]
        to: String,
    },
    /// Write every key of a storage to one new checksummed file (it holds
    /// wrapped DEKs: keep it as safe as the storage, destroy it to finish
    /// destroying keys).
    Backup {
        /// The storage to read.
        #[arg(long, env = "KEYSERVER_STORAGE")]
        storage: String,
        /// The backup file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup file into a storage: the whole file is checked
    /// first (a damaged one is refused, naming what is wrong); keys already
    /// there keep their state, and destroyed ones stay destroyed.
    Restore {
        /// The backup file.
        #[arg(long = "in")]
        input: PathBuf,
        /// The storage to write.
        #[arg(long, env = "KEYSERVER_STORAGE")]
        storage: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum SealCommand {
    /// Make a master key in the token: AES-256, generated inside it,
    /// sensitive and never extractable, labelled as the URI's object.
    NewKey {
        /// The PKCS#11 URI of the key to make.
        #[arg(long, env = "KEYSERVER_SEAL")]
        seal: String,
    },
    /// Destroy a master key in the token: every record sealed under it can
    /// never be read again (reseal the store first to keep its keys).
    DestroyKey {
        /// The PKCS#11 URI of the key to destroy (never taken from the
        /// environment: a server's KEYSERVER_SEAL names its live key).
        #[arg(long)]
        seal: String,
        /// Say that every record sealed under it may be lost.
        #[arg(long)]
        yes_destroy_every_record_sealed_under_it: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Write a fresh random audit key (32 bytes, mode 0600) to a new file.
    NewKey {
        /// The key file to create (an existing file is never overwritten).
        #[arg(long, required_unless_present = "shares", conflicts_with = "shares")]
        out: Option<PathBuf>,
        /// Split the key into N custodian share files, any K of which
        /// rebuild it ("K/N"); no file holds the key. Needs --out-dir.
        #[arg(long, requires = "out_dir")]
        shares: Option<String>,
        /// The folder for the share files.
        #[arg(long, requires = "shares")]
        out_dir: Option<PathBuf>,
    },
    /// Check the MAC chain of audit log files (any order); exit 0 if it
    /// holds, 1 naming the first bad line otherwise.
    Verify {
        #[command(flatten)]
        audit_key: AuditKeyArgs,
        /// Accept a last line without its newline (a crash, or a line
        /// being written while the server runs) and check the lines before
        /// it; without this, such a tail fails.
        #[arg(long)]
        allow_torn_tail: bool,
        /// The log files (the live one and any rotated ones; the live
        /// file's head record `FILE.head` is read beside it).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
    },
}

/// A KEK: its file, or K of its custodian share files.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct KekArgs {
    /// The KEK file (PEM).
    #[arg(long)]
    pub kek: Option<PathBuf>,
    /// Instead of --kek: K of the KEK's share files (`generate --shares`);
    /// the KEK is rebuilt in memory only.
    #[arg(long, num_args = 1..)]
    pub kek_shares: Vec<PathBuf>,
}

/// The audit key: its file, or K of its custodian share files.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct AuditKeyArgs {
    /// The audit key file.
    #[arg(long, env = "KEYSERVER_AUDIT_KEY")]
    pub audit_key: Option<PathBuf>,
    /// Instead of --audit-key: K of the audit key's share files (`audit
    /// new-key --shares`).
    #[arg(long, num_args = 1..)]
    pub audit_key_shares: Vec<PathBuf>,
}

/// The key a command is about: its KEK file, or its key id.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct TargetArgs {
    /// The KEK file (PEM): proof of possession, allowed to its holder.
    #[arg(long)]
    pub kek: Option<PathBuf>,
    /// Instead of --kek: K of the KEK's share files.
    #[arg(long, num_args = 1..)]
    pub kek_shares: Vec<PathBuf>,
    /// The key id (64 hex digits): for principals granted the method.
    #[arg(long)]
    pub key_id: Option<String>,
}

#[derive(Args)]
pub(crate) struct ChangeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a fresh random token (once: keep it) and the auth file entry
    /// that grants it (edit its methods and strengths).
    New {
        /// The principal's name.
        name: String,
    },
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to measure.
    #[arg(long, value_enum, default_value = "get-key")]
    pub op: BenchOp,
    /// Concurrent clients (each with its own connection).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Plaintext bytes per operation for encrypt and decrypt.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Stop each client after this many operations (for example to measure
    /// `generate` while a KEK pool lasts).
    #[arg(long)]
    pub requests: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum BenchOp {
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
pub(crate) struct ServeArgs {
    /// TOML configuration file (same keys as the long options, with '_' for '-').
    #[arg(long, env = "KEYSERVER_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: ServeOptions,
}

/// The settings of `serve`: one type for the flags and environment (clap) and
/// for the TOML file (serde), merged by [`ServeOptions::or`]. Every field is
/// optional; the defaults are applied once, in `config.rs`.
#[derive(Args, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeOptions {
    /// Storage: "memory", "file:DIR", or a PostgreSQL URL
    /// "postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=require]" that
    /// any number of servers may share [default: file:./keyserver-data].
    #[arg(long, env = "KEYSERVER_STORAGE")]
    pub storage: Option<String>,
    /// Cipher suite: awslc (the fastest, BENCHMARKS.md), rustcrypto (pure
    /// Rust) or openssl (the system's) [default: awslc].
    #[arg(long, env = "KEYSERVER_SUITE", value_enum)]
    pub suite: Option<SuiteName>,
    /// Security strength of new keys: 128, 192 or 256 [default: 128].
    #[arg(long, env = "KEYSERVER_STRENGTH")]
    pub strength: Option<u32>,
    /// Refuse to start unless the cipher suite is a FIPS 140-3 validated
    /// module in FIPS mode (`--suite awslc` built with feature
    /// cipher-awslc-fips).
    #[arg(long, env = "KEYSERVER_REQUIRE_FIPS")]
    #[serde(default)]
    pub require_fips: bool,
    /// Address to listen on [default: 127.0.0.1:8731].
    #[arg(long, env = "KEYSERVER_LISTEN")]
    pub listen: Option<String>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "KEYSERVER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "KEYSERVER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: enables mutual TLS.
    #[arg(long, env = "KEYSERVER_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long, env = "KEYSERVER_INSECURE")]
    #[serde(default)]
    pub insecure: bool,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "KEYSERVER_MAX_BODY")]
    pub max_body: Option<usize>,
    /// RSA key pairs kept ready for generate(); 0 generates inline [default: 8].
    #[arg(long, env = "KEYSERVER_KEK_POOL")]
    pub kek_pool: Option<usize>,
    /// Background threads refilling the pool [default: 1].
    #[arg(long, env = "KEYSERVER_KEK_WORKERS")]
    pub kek_workers: Option<usize>,
    /// Wrapped-DEK records (and key states) kept in memory; 0 reads every
    /// request's record from the storage [default: 16384].
    #[arg(long, env = "KEYSERVER_CACHE_RECORDS")]
    pub cache_records: Option<usize>,
    /// Strengths a client's generate may ask for, comma-separated (e.g.
    /// "128,192") [default: --strength only].
    #[arg(long, env = "KEYSERVER_ALLOW_STRENGTHS")]
    pub allow_strengths: Option<String>,
    /// KEK algorithm of new keys (and of rotations of keys whose own
    /// algorithm is not allowed): rsa, ec (P-256/384/521 by strength, HPKE
    /// wrapping) or hybrid-pq (ML-KEM with ECDH) [default: rsa].
    #[arg(long, env = "KEYSERVER_KEK_ALG")]
    pub kek_alg: Option<String>,
    /// KEK algorithms a client's generate may ask for, comma-separated (e.g.
    /// "rsa,ec,hybrid-pq") [default: --kek-alg only].
    #[arg(long, env = "KEYSERVER_ALLOW_KEK_ALGS")]
    pub allow_kek_algs: Option<String>,
    /// Threads generating keys when the pool is empty [default: one per core].
    #[arg(long, env = "KEYSERVER_GENERATE_WORKERS")]
    pub generate_workers: Option<usize>,
    /// generate requests that may wait for a worker; beyond that they are
    /// refused with code 12 (busy) [default: 16].
    #[arg(long, env = "KEYSERVER_GENERATE_QUEUE")]
    pub generate_queue: Option<usize>,
    /// Seconds one request may take, from its first body byte to its
    /// answer, batches whole [default: 30].
    #[arg(long, env = "KEYSERVER_REQUEST_TIMEOUT")]
    pub request_timeout: Option<u64>,
    /// Connections served at once; more are closed at once [default: 1024,
    /// capped by the descriptor limit].
    #[arg(long, env = "KEYSERVER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client may take to send a request's headers (HTTP/1 also
    /// closes a keep-alive connection idle this long) [default: 10].
    #[arg(long, env = "KEYSERVER_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Seconds a connection may stay without a byte in either direction
    /// [default: 60].
    #[arg(long, env = "KEYSERVER_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// HTTP/2 streams at once per connection [default: 32].
    #[arg(long, env = "KEYSERVER_MAX_STREAMS")]
    pub max_streams: Option<u32>,
    /// Bytes of request bodies held in memory at once, all requests
    /// together; a request over the budget is answered "busy" (code 12)
    /// [default: 67108864].
    #[arg(long, env = "KEYSERVER_MAX_REQUEST_MEMORY")]
    pub max_request_memory: Option<usize>,
    /// With --auth: bytes of request bodies held at once by requests that
    /// did not authenticate, a budget apart from --max-request-memory
    /// [default: 4194304].
    #[arg(long, env = "KEYSERVER_MAX_PREAUTH_MEMORY")]
    pub max_preauth_memory: Option<usize>,
    /// Connections one client address may hold at once (behind a proxy,
    /// raise it to --max-connections) [default: 256].
    #[arg(long, env = "KEYSERVER_MAX_CONNECTIONS_PER_PEER")]
    pub max_connections_per_peer: Option<usize>,
    /// Expensive calls (generate, get_key, rotate, state changes, list_keys)
    /// one batch or multicall may hold
    /// [default: 8].
    #[arg(long, env = "KEYSERVER_MAX_BATCH_EXPENSIVE")]
    pub max_batch_expensive: Option<usize>,
    /// Host names (comma-separated) clients may use in the Host header,
    /// besides the listener's own address (and localhost on loopback)
    /// [default: none].
    #[arg(long, env = "KEYSERVER_ALLOWED_HOSTS")]
    pub allowed_hosts: Option<String>,
    /// Auth file (TOML, `[[principal]]` entries): who may call what; re-read
    /// on SIGHUP [default: none: every caller may do everything, loopback
    /// only].
    #[arg(long, env = "KEYSERVER_AUTH")]
    pub auth: Option<PathBuf>,
    /// Seconds SIGTERM waits for requests in flight before the process
    /// exits [default: 10].
    #[arg(long, env = "KEYSERVER_GRACE_PERIOD")]
    pub grace_period: Option<u64>,
    /// Audit log: one MAC-chained JSON line per call; a new key is answered
    /// only once a line naming it is on disk [default: none]. Needs
    /// --audit-key.
    #[arg(long, env = "KEYSERVER_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// The audit log's MAC key file (at least 32 bytes, mode 0600; made by
    /// `keyserver audit new-key`).
    #[arg(long, env = "KEYSERVER_AUDIT_KEY")]
    pub audit_key: Option<PathBuf>,
    /// Instead of --audit-key: K of the audit key's custodian share files,
    /// comma-separated (`keyserver audit new-key --shares K/N`), combined
    /// in memory at start.
    #[arg(long, env = "KEYSERVER_AUDIT_KEY_SHARES")]
    pub audit_key_shares: Option<String>,
    /// Size in bytes at which the audit log rotates [default: 67108864].
    #[arg(long, env = "KEYSERVER_AUDIT_ROTATE")]
    pub audit_rotate: Option<u64>,
    /// An active key older than this is deactivated (decrypt only), like
    /// `30s`, `12h`, `90d` [default: 730d].
    #[arg(long, env = "KEYSERVER_CRYPTOPERIOD")]
    pub cryptoperiod: Option<String>,
    /// Time between `destroy` and the destruction of the wrapped DEK
    /// (`0s`: at once) [default: 7d].
    #[arg(long, env = "KEYSERVER_DESTROY_WINDOW")]
    pub destroy_window: Option<String>,
    /// Seal every stored record under a master key in an HSM: a PKCS#11
    /// URI (RFC 7512) naming the token, the key, the module and the PIN
    /// file, like "pkcs11:token=ks;object=master-1?module-path=/usr/lib/
    /// softhsm/libsofthsm2.so&pin-source=file:/etc/keyserver/pin" (or the
    /// PIN in KEYSERVER_PKCS11_PIN) [default: none].
    #[arg(long, env = "KEYSERVER_SEAL")]
    pub seal: Option<String>,
    /// With --seal: reseal, in the background while serving, every record
    /// not yet under the --seal key (unsealed ones, or ones under another
    /// key of the token); resumes where it stopped after a restart.
    #[arg(long, env = "KEYSERVER_RESEAL")]
    #[serde(default)]
    pub reseal: bool,
    /// Log format (the global --log-format wins).
    #[arg(skip)]
    pub log_format: Option<LogFormat>,
}

/// `self.x.or(other.x)` for each optional field.
macro_rules! either {
    ($a:ident, $b:ident; $($field:ident),+) => {
        ServeOptions { $($field: $a.$field.or($b.$field),)+ insecure: $a.insecure || $b.insecure, require_fips: $a.require_fips || $b.require_fips, reseal: $a.reseal || $b.reseal }
    };
}

impl ServeOptions {
    /// These settings, with `fallback`'s where these have none (flags and
    /// environment over the file).
    pub fn or(self, fallback: ServeOptions) -> ServeOptions {
        either!(self, fallback; storage, suite, strength, listen, tls_cert, tls_key, client_ca,
            max_body, kek_pool, kek_workers, cache_records, allow_strengths, kek_alg,
            allow_kek_algs, generate_workers,
            generate_queue, request_timeout, max_connections, header_timeout, idle_timeout,
            max_streams, max_request_memory, max_preauth_memory, max_connections_per_peer,
            max_batch_expensive, allowed_hosts, auth, grace_period,
            audit_log, audit_key, audit_key_shares, audit_rotate, cryptoperiod, destroy_window, seal, log_format)
    }
}

#[derive(Clone, Copy, Debug, Deserialize, ValueEnum, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SuiteName {
    Rustcrypto,
    // Offered on the command line only by a binary built with it (a
    // configuration file naming it is refused with the reason).
    #[cfg_attr(not(feature = "cipher-openssl"), value(skip))]
    Openssl,
    Awslc,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Protocol {
    Xmlrpc,
    Jsonrpc,
}

#[derive(Args)]
pub(crate) struct ClientArgs {
    /// The key server's URL, or several comma-separated (servers sharing one
    /// storage): reads move to the next on failure, changes only when the
    /// request certainly never left.
    #[arg(long, env = "KEYSERVER_URL", default_value = "http://127.0.0.1:8731")]
    pub server: String,
    /// Wire protocol.
    #[arg(
        long,
        env = "KEYSERVER_TRANSPORT",
        value_enum,
        default_value = "xmlrpc"
    )]
    pub transport: Protocol,
    /// CA certificate (PEM) for an https server; the system's roots if absent.
    #[arg(long, env = "KEYSERVER_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "KEYSERVER_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Client certificate key (PEM) for mutual TLS.
    #[arg(long, env = "KEYSERVER_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Seconds to wait for the server.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Allow sending or receiving key material over plain http:// to a host
    /// that is not loopback (only behind a TLS-terminating proxy).
    #[arg(long, env = "KEYSERVER_INSECURE")]
    pub insecure: bool,
    /// Bearer token for a server with access control.
    #[arg(
        long,
        env = "KEYSERVER_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, env = "KEYSERVER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Unwrap the DEK here (the KEK never leaves this machine) instead of on the server.
    #[arg(long)]
    pub client_unwrap: bool,
    /// Cipher suite for local encryption and decryption (both write the same bytes).
    #[arg(
        long = "suite",
        env = "KEYSERVER_CLIENT_SUITE",
        value_enum,
        default_value = "awslc"
    )]
    pub local_suite: SuiteName,
}

#[derive(Args)]
pub(crate) struct ReencryptArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The KEK the input is sealed under.
    #[command(flatten)]
    pub kek: KekArgs,
    /// The KEK to seal it under (PEM; an active key, made by `generate`).
    #[arg(long)]
    pub new_kek: PathBuf,
    /// Input file; stdin if absent.
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// Output file (written whole or not at all; an existing file is
    /// refused unless --force); stdout if absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file (whole, and only on success).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub(crate) struct CryptArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub kek: KekArgs,
    /// Input file; stdin if absent.
    #[arg(long = "in")]
    pub input: Option<PathBuf>,
    /// Output file (written whole or not at all; an existing file is
    /// refused unless --force); stdout if absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file (whole, and only on success).
    #[arg(long)]
    pub force: bool,
    /// encrypt: write one envelope message (the format `KeyClient::encrypt`
    /// and the Python client write; the input is read whole, at most 256
    /// MiB) instead of a stream. decrypt opens either, by its first bytes.
    #[arg(long)]
    pub message: bool,
    /// A context bound to a message as associated data (it must be given
    /// again to decrypt); messages only.
    #[arg(long)]
    pub context: Option<String>,
}
