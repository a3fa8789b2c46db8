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
mod exit;
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
    logs::flush();
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
                Command::Audit(args::AuditCommand::NewKey { out }) => new_audit_key(&out),
                Command::Audit(args::AuditCommand::Verify {
                    audit_key,
                    allow_torn_tail,
                    logs,
                }) => verify_audit(&audit_key, &logs, allow_torn_tail),
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
/// new file only its owner can read.
fn new_audit_key(out: &std::path::Path) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    choice::suite(args::SuiteName::Rustcrypto)?
        .fill_random(&mut bytes[..])
        .map_err(Failure::from)?;
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
    key: &std::path::Path,
    logs: &[std::path::PathBuf],
    allow_torn_tail: bool,
) -> Result<(), Failure> {
    let key =
        keyserver::policy::AuditKey::from_file(key).map_err(|e| exit::usage(e.to_string()))?;
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
    // Colours only on a terminal: not escape codes in a file or a pipe.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(logs::writer);
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
            match super::clock::now() {
                Some(stamp) => writer.write_str(stamp.as_str())?,
                None => SystemTime.format_time(&mut writer)?,
            }
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

/// The access lines' time stamps, as tracing-subscriber's `SystemTime`
/// writes them (RFC 3339, UTC, microseconds: `2026-12-06T13:45:12.123456Z`)
/// but with the date and time of day worked out once a second per thread:
/// formatting the whole stamp was a tenth of an access line's cost.
mod clock {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// `YYYY-MM-DDTHH:MM:SS.` then six digits and `Z`.
    const LEN: usize = 27;
    const PREFIX: usize = 20;

    pub(super) struct Stamp([u8; LEN]);

    impl Stamp {
        pub(super) fn as_str(&self) -> &str {
            // Only ASCII digits and punctuation are ever written.
            std::str::from_utf8(&self.0).unwrap_or_default()
        }
    }

    thread_local! {
        /// The second last formatted on this thread, and its prefix.
        static LAST: Cell<(u64, [u8; PREFIX])> = const { Cell::new((u64::MAX, [0; PREFIX])) };
    }

    /// Now; `None` before 1970 or after 9999 (the caller falls back to
    /// tracing-subscriber's own formatting).
    pub(super) fn now() -> Option<Stamp> {
        at(SystemTime::now().duration_since(UNIX_EPOCH).ok()?)
    }

    pub(super) fn at(since_epoch: std::time::Duration) -> Option<Stamp> {
        let secs = since_epoch.as_secs();
        let (last, mut prefix) = LAST.with(Cell::get);
        if last != secs {
            prefix = date_time(secs)?;
            LAST.with(|cell| cell.set((secs, prefix)));
        }
        let mut stamp = [0u8; LEN];
        stamp[..PREFIX].copy_from_slice(&prefix);
        digits(&mut stamp[PREFIX..PREFIX + 6], since_epoch.subsec_micros());
        stamp[LEN - 1] = b'Z';
        Some(Stamp(stamp))
    }

    /// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch, from the
    /// library's own RFC 3339 writer (once a second per thread).
    fn date_time(secs: u64) -> Option<[u8; PREFIX]> {
        // `YYYY-MM-DDTHH:MM:SSZ`: longer past the year 9999.
        let text = keyserver::api::rfc3339(secs);
        let seconds = text
            .as_bytes()
            .get(..PREFIX - 1)
            .filter(|_| text.len() == PREFIX)?;
        let mut out = [b'.'; PREFIX];
        out[..PREFIX - 1].copy_from_slice(seconds);
        Some(out)
    }

    /// `value` in decimal, zero-padded to fill `out`.
    fn digits(out: &mut [u8], mut value: u32) {
        for digit in out.iter_mut().rev() {
            // ok: value % 10 < 10.
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::FormatTime;

        #[test]
        fn stamps_are_rfc3339_utc_with_microseconds() {
            let cases = [
                (0, 0, "1970-01-01T00:00:00.000000Z"),
                (951_782_400, 5_000, "2000-02-29T00:00:00.000005Z"),
                (951_868_799, 999_999_999, "2000-02-29T23:59:59.999999Z"),
                (1_709_164_800, 0, "2024-02-29T00:00:00.000000Z"),
                (4_107_542_399, 123_456_000, "2100-02-28T23:59:59.123456Z"),
                (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
                (253_402_300_799, 1_000, "9999-12-31T23:59:59.000001Z"),
            ];
            for (secs, nanos, expected) in cases {
                let stamp = at(Duration::new(secs, nanos)).unwrap();
                assert_eq!(stamp.as_str(), expected);
                // The same second again comes from the cache.
                assert_eq!(at(Duration::new(secs, nanos)).unwrap().as_str(), expected);
            }
            assert!(at(Duration::from_secs(253_402_300_800)).is_none());
        }

        #[test]
        fn stamps_match_tracing_subscribers_own() {
            // Taken around tracing-subscriber's: equal up to the second
            // unless a second boundary fell between (then tried again).
            for _ in 0..100 {
                let before = now().unwrap();
                let mut theirs = String::new();
                tracing_subscriber::fmt::time::SystemTime
                    .format_time(&mut Writer::new(&mut theirs))
                    .unwrap();
                let after = now().unwrap();
                if before.as_str()[..19] != after.as_str()[..19] {
                    continue;
                }
                assert_eq!(theirs.len(), LEN, "{theirs}");
                assert_eq!(&theirs[..19], &before.as_str()[..19]);
                assert!(before.as_str() <= theirs.as_str() && theirs.as_str() <= after.as_str());
                return;
            }
            panic!("the clock never held still for a second");
        }
    }
}

/// Log lines go to stderr through a buffer that one background thread
/// drains, at least every 20 ms and at once past 64 KiB: a request pays a
/// copy into memory for its access-log line, not a `write` system call of
/// its own (BENCHMARKS.md, issue 18). A writer waits while 4 MiB are
/// pending rather than drop a line. Log lines keep their order among
/// themselves (not against what is written to stderr directly, such as a
/// panic message); what is pending is written when the process ends and
/// when it panics. A process killed outright loses at most the last 20 ms.
mod logs {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Condvar, Mutex, Once, PoisonError};
    use std::time::Duration;

    const PERIOD: Duration = Duration::from_millis(20);
    const WAKE_AT: usize = 64 << 10;
    const MAX_PENDING: usize = 4 << 20;

    static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    /// Held while lines move from the buffer to stderr, so that a flush
    /// never overtakes lines the drainer holds.
    static WRITING: Mutex<()> = Mutex::new(());
    static READY: Condvar = Condvar::new();
    static DRAINED: Condvar = Condvar::new();
    static DRAINER: Once = Once::new();
    static UNBUFFERED: AtomicBool = AtomicBool::new(false);
    /// Set when a writer has woken the drainer early, until it drains: one
    /// wake-up per fill, not one per line past the mark.
    static WOKEN: AtomicBool = AtomicBool::new(false);

    /// The writer the log layer takes for each line.
    pub(super) fn writer() -> Writer {
        DRAINER.call_once(|| {
            let started = std::thread::Builder::new()
                .name("keyserver-log".into())
                .spawn(drain);
            if started.is_err() {
                // No thread: every line is written as it comes instead.
                UNBUFFERED.store(true, Ordering::Relaxed);
            }
            // A panic's lines before it are written before its message.
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                flush();
                previous(info);
            }));
        });
        Writer
    }

    pub(super) struct Writer;

    impl Write for Writer {
        fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
            if UNBUFFERED.load(Ordering::Relaxed) {
                return std::io::stderr().write_all(line).map(|()| line.len());
            }
            let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
            while pending.len() >= MAX_PENDING {
                pending = DRAINED
                    .wait_timeout(pending, PERIOD)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            pending.extend_from_slice(line);
            if pending.len() >= WAKE_AT && !WOKEN.swap(true, Ordering::Relaxed) {
                READY.notify_one();
            }
            Ok(line.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn drain() {
        let mut out = Vec::new();
        loop {
            {
                let pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
                if pending.len() < WAKE_AT {
                    // Lines that come meanwhile wait for the period's end:
                    // under load, one write per period, not one per line
                    // (and no thread spinning on the lock beside the
                    // workers).
                    let _ = READY.wait_timeout(pending, PERIOD);
                }
            }
            write_pending(&mut out);
        }
    }

    fn write_pending(out: &mut Vec<u8>) {
        let _writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *pending, out);
            // Under the lock the writers set it under: a writer that fills
            // the buffer again wakes the drainer again.
            WOKEN.store(false, Ordering::Relaxed);
        }
        DRAINED.notify_all();
        if !out.is_empty() {
            // Best effort, as eprintln!: a closed stderr must not stop the server.
            let _ = std::io::stderr().write_all(out);
            out.clear();
        }
    }

    /// Writes every pending line now.
    pub(super) fn flush() {
        write_pending(&mut Vec::new());
    }
}
