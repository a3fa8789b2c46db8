//! The `keyserver` command, split by job: [`args`] (the command line),
//! [`config`] (one merged `serve` configuration), [`choice`] (suite and
//! storage chosen at run time, once), [`serve`], [`client`] (the client
//! commands), [`crypt`] (streaming files), [`bench`] (the load generator),
//! [`output`] and [`exit`] (failures and exit codes).

mod args;
mod bench;
mod choice;
mod client;
mod config;
mod crypt;
mod custody;
mod exit;
mod log_writer;
mod output;
mod serve;
mod transfer;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, LogFormat};
use exit::Failure;

/// Parses the command line, runs the command, and gives its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
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
    // Work still on the blocking pool (an RSA key a shut-down server was
    // generating for a request nobody will answer) is not waited for: the
    // process exits within its grace period whatever CPU work is in flight.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    flush_logs();
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

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve::serve(*args, cli.log_format).await,
        command => {
            init_logging(cli.log_format.unwrap_or(LogFormat::Text));
            match command {
                Command::Bench(args) => bench::bench(args).await,
                Command::Encrypt(args) => crypt::crypt(args, true).await,
                Command::Reencrypt(args) => crypt::reencrypt(args).await,
                Command::Decrypt(args) => crypt::crypt(args, false).await,
                Command::Token(args::TokenCommand::New { name }) => new_token(&name),
                Command::Audit(args::AuditCommand::NewKey {
                    out,
                    shares,
                    out_dir,
                }) => new_audit_key(out.as_deref(), shares.as_deref(), out_dir.as_deref()),
                Command::Audit(args::AuditCommand::Verify {
                    audit_key,
                    allow_torn_tail,
                    logs,
                }) => verify_audit(&audit_key, &logs, allow_torn_tail),
                Command::Combine { input, out } => custody::combine(&input, &out),
                Command::Seal(command) => custody::seal_command(command).await,
                Command::Reseal { storage, to, from } => {
                    custody::reseal(&storage, &to, from.as_deref()).await
                }
                Command::Copy { from, to } => transfer::copy(&from, &to).await,
                Command::Backup { storage, out } => transfer::backup(&storage, &out).await,
                Command::Restore { input, storage } => transfer::restore(&input, &storage).await,
                command => client::run(command).await,
            }
        }
    }
}

/// `keyserver token new NAME`: 256 random bits from the OS, printed once,
/// with the auth file entry that holds only their hash.
fn new_token(name: &str) -> Result<(), Failure> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    choice::suite(args::SuiteName::Rustcrypto)?
        .fill_random(&mut bytes[..])
        .map_err(Failure::from)?;
    let token = zeroize::Zeroizing::new(hex::encode(&bytes[..]));
    let entry = format!(
        "token: {}\n\n[[principal]]\nname = {name:?}\ntoken_sha256 = \"{}\"\nmethods = [\"status\"]\n",
        token.as_str(),
        keyserver::policy::AuthPolicy::token_hash(&token)
    );
    output::print_stdout(&entry)
}

/// `keyserver audit new-key --out FILE`: 32 random bytes from the OS in a
/// new file only its owner can read; with `--shares K/N --out-dir DIR`,
/// N share files of them instead, and no file holds the key.
fn new_audit_key(
    out: Option<&std::path::Path>,
    shares: Option<&str>,
    out_dir: Option<&std::path::Path>,
) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let split = shares.map(custody::parse_split).transpose()?;
    let share_files = match (split, out_dir) {
        (Some((_, n)), Some(dir)) => Some(custody::ShareFiles::create(dir, n)?),
        _ => None,
    };
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    choice::suite(args::SuiteName::Rustcrypto)?
        .fill_random(&mut bytes[..])
        .map_err(Failure::from)?;
    if let (Some(files), Some((k, n))) = (share_files, split) {
        let id = keyserver::shares::audit_key_id(&bytes[..]);
        let split = keyserver::shares::split_secret(
            keyserver::shares::ShareKind::AuditKey,
            id,
            &bytes[..],
            k,
            n,
        )
        .map_err(Failure::from)?;
        let paths = files.write(&split)?;
        custody::report_shares(&format!("audit key {id}"), k, &paths)?;
        return output::print_stdout(&format!("audit key {id} written as {n} shares\n"));
    }
    let Some(out) = out else {
        return Err(exit::usage("give --out FILE or --shares K/N --out-dir DIR"));
    };
    let shown = out.display();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| exit::io_failure(format!("cannot create {shown}"), e))?;
    file.write_all(&bytes[..])
        .and_then(|()| file.sync_all())
        .map_err(|e| exit::io_failure(format!("cannot write {shown}"), e))?;
    output::print_stdout(&format!("audit key written to {shown}\n"))
}

/// `keyserver audit verify --audit-key FILE [--allow-torn-tail] LOG...`.
fn verify_audit(
    key: &args::AuditKeyArgs,
    logs: &[std::path::PathBuf],
    allow_torn_tail: bool,
) -> Result<(), Failure> {
    let key = match &key.audit_key {
        Some(path) => {
            keyserver::policy::AuditKey::from_file(path).map_err(|e| exit::usage(e.to_string()))?
        }
        None => custody::audit_key_from_shares(&key.audit_key_shares)?,
    };
    let options = keyserver::policy::VerifyOptions { allow_torn_tail };
    let report = keyserver::policy::verify_audit(&key, logs, options).map_err(|e| Failure {
        code: 1,
        message: match e {
            keyserver::Error::Policy { reason } => format!("audit log does not verify: {reason}"),
            other => other.to_string(),
        },
    })?;
    let mut text = format!(
        "audit log verifies: {} lines, seq {}..={}, last MAC {}\n",
        report.lines, report.first_seq, report.last_seq, report.last_mac
    );
    match report.head_seq {
        Some(seq) => text.push_str(&format!(
            "head: reaches seq {seq} as its head record names\n"
        )),
        None => text.push_str(
            "note: no head record was checked (only rotated files given, or a log from before \
             head records)\n",
        ),
    }
    text.push_str(&format!(
        "starts: {}, after a crash or kill: {}; {}\n",
        report.starts,
        report.unclean_starts,
        if report.stopped {
            "the last run stopped cleanly"
        } else {
            "the last run has not stopped (running, or crashed)"
        }
    ));
    if !report.from_start {
        text.push_str("note: the chain starts after seq 1 (earlier files were not given)\n");
    }
    if report.incomplete_tail {
        text.push_str("note: the last file ends in an incomplete line, not checked\n");
    }
    output::print_stdout(&text)
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

/// Log lines go to stderr through [`log_writer`]: a request pays a lock and
/// a copy for its access-log line, not a `write` system call or a thread
/// wake-up; one thread writes what has gathered every 50 ms. A writer
/// waits while 8 MiB are pending rather than drop a line. Log lines keep
/// their order among themselves (not against what is written to stderr
/// directly); what is pending is written when the process ends
/// ([`flush_logs`]).
static LOG_FLUSHER: std::sync::Mutex<Option<log_writer::Flusher>> = std::sync::Mutex::new(None);

/// Writes every pending log line and stops the log thread.
fn flush_logs() {
    let flusher = LOG_FLUSHER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(flusher) = flusher {
        flusher.finish();
    }
}

pub(crate) fn init_logging(format: LogFormat) {
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
    let writer = match log_writer::LogWriter::start("keyserver-log", std::io::stderr()) {
        Some((writer, flusher)) => {
            *LOG_FLUSHER
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(flusher);
            // The lines before a panic are written before its message.
            let previous = std::panic::take_hook();
            let pending = writer.clone();
            std::panic::set_hook(Box::new(move |info| {
                pending.write_pending_now();
                previous(info);
            }));
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(writer)
        }
        // No thread for the log: each line written directly.
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    // Colours only on a terminal: not escape codes in a file or a pipe.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.event_format(access_text::Text::default()).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter).with_filter(no_bodies))
        .try_init();
}

/// The text log format: tracing-subscriber's own, except for access-log
/// lines, which are written as their message alone. Their fields (for the
/// JSON format) say again what the message says: written out too, they
/// doubled every access line and the time spent formatting it.
mod access_text {
    use std::fmt::{self, Write as _};

    use tracing::field::{Field, Visit};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::fmt::format::{Format, Full, Writer};
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    const ACCESS: &str = "keyserver::access";

    #[derive(Default)]
    pub(super) struct Text {
        full: Format<Full>,
    }

    struct Message<'a, 'w> {
        writer: &'a mut Writer<'w>,
        result: fmt::Result,
    }

    impl Visit for Message<'_, '_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.result = write!(Escaped(&mut *self.writer), "{value:?}");
            }
        }
    }

    /// Writes control characters (escape sequences, line breaks) as Rust
    /// escapes: a message may quote what a client sent (an unknown filter
    /// member, say), and must neither drive the terminal of an operator
    /// reading the log nor start a line of its own.
    struct Escaped<'a, 'w>(&'a mut Writer<'w>);

    impl fmt::Write for Escaped<'_, '_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            // A control character is a byte below 0x20, 0x7f, or (U+0080
            // to U+009F) a two-byte sequence starting 0xc2: text with none
            // of these bytes (nearly every line) is written as it is.
            if !s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
                return self.0.write_str(s);
            }
            for c in s.chars() {
                if c.is_control() {
                    write!(self.0, "{}", c.escape_default())?;
                } else {
                    self.0.write_char(c)?;
                }
            }
            Ok(())
        }
    }

    impl<S, N> FormatEvent<S, N> for Text
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let meta = event.metadata();
            if meta.target() != ACCESS {
                return self.full.format_event(ctx, writer, event);
            }
            // As the full format lays a line out, without colours (access
            // lines are for files and collectors).
            SystemTime.format_time(&mut writer)?;
            write!(writer, " {:>5} {ACCESS}: ", meta.level().as_str())?;
            let mut message = Message {
                writer: &mut writer,
                result: Ok(()),
            };
            event.record(&mut message);
            message.result?;
            writeln!(writer)
        }
    }
}
