//! Where log lines go: a buffer in memory that one thread writes to stderr
//! in batches.
//!
//! A request pays for its access-log line a lock and a copy, never a
//! system call, and nobody is woken for it: the thread writes what has
//! gathered every [`FLUSH_EVERY`], or at once when [`FLUSH_AT`] bytes are
//! waiting. (tracing-appender's channel woke its thread for each line and
//! flushed whenever the channel ran empty: under load, about one `write`
//! and one wake-up per request, a tenth of the server's CPU in the
//! production configuration; BENCHMARKS.md.) Lines keep their order. A
//! writer waits while [`MAX_PENDING`] bytes are already waiting (stderr
//! blocked) rather than drop a line. What is pending is written by
//! [`Flusher::finish`] when the process ends (waiting at most
//! [`FINISH_WAIT`] for a blocked stderr), and by the panic hook
//! ([`LogWriter::write_pending_now`]) before a panic's message; a process
//! killed outright loses at most the last [`FLUSH_EVERY`] of lines.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a line may wait in memory.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Bytes waiting at which the thread is woken.
const FLUSH_AT: usize = 256 << 10;
/// Bytes waiting beyond which a writer waits for the thread.
const MAX_PENDING: usize = 8 << 20;
/// How long the end of the process waits for the last lines to be written.
const FINISH_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The thread waits on `wake`.
    asleep: bool,
    /// Writers wait on `room`.
    full: bool,
    closed: bool,
    /// The thread has written everything and stopped.
    done: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handle the log subscriber writes through (cheap to clone).
#[derive(Clone)]
pub(crate) struct LogWriter {
    shared: Arc<Shared>,
}

/// The thread that writes; [`LogWriter::finish`] stops it.
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogWriter {
    /// A writer whose lines reach `out` from a thread of its own (named
    /// `name`); `None` if the thread cannot start.
    pub(crate) fn start<W: Write + Send + 'static>(
        name: &str,
        out: W,
    ) -> Option<(LogWriter, Flusher)> {
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&for_thread, out))
            .ok()?;
        let writer = LogWriter {
            shared: Arc::clone(&shared),
        };
        Some((
            writer,
            Flusher {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

impl Flusher {
    /// Writes every pending line and stops the thread: waits at most
    /// [`FINISH_WAIT`] (a stderr nobody reads must not keep the process
    /// from exiting).
    pub(crate) fn finish(mut self) {
        let mut pending = self.shared.lock();
        pending.closed = true;
        self.shared.wake.notify_one();
        let deadline = std::time::Instant::now() + FINISH_WAIT;
        while !pending.done {
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            pending = self
                .shared
                .room
                .wait_timeout(pending, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(pending);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LogWriter {
    /// Writes what is pending to stderr from this thread, if the lock is
    /// free (the panic hook: the lines before a panic are the ones most
    /// wanted).
    pub(crate) fn write_pending_now(&self) {
        if let Ok(mut pending) = self.shared.pending.try_lock() {
            let bytes = std::mem::take(&mut pending.bytes);
            drop(pending);
            let _ = io::stderr().write_all(&bytes);
        }
    }
}

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut pending = shared.lock();
            if pending.bytes.len() < FLUSH_AT && !pending.closed {
                pending.asleep = true;
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                pending.asleep = false;
            }
            std::mem::swap(&mut batch, &mut pending.bytes);
            if pending.full {
                pending.full = false;
                shared.room.notify_all();
            }
            pending.closed
        };
        if !batch.is_empty() {
            // Nowhere to report a failed write of the log itself.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            // Keep the buffer's capacity, but not a burst's.
            batch.shrink_to(FLUSH_AT * 2);
        }
        if closed {
            let mut pending = shared.lock();
            if pending.bytes.is_empty() {
                pending.done = true;
                shared.room.notify_all();
                return;
            }
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pending = self.shared.lock();
        if pending.done {
            // After the end (work left running past shutdown): bounded, and
            // written only by a later panic hook.
            if pending.bytes.len() < MAX_PENDING {
                pending.bytes.extend_from_slice(buf);
            }
            return Ok(buf.len());
        }
        while pending.bytes.len() >= MAX_PENDING && !pending.closed {
            pending.full = true;
            if pending.asleep {
                pending.asleep = false;
                self.shared.wake.notify_one();
            }
            pending = self
                .shared
                .room
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        pending.bytes.extend_from_slice(buf);
        if pending.asleep && pending.bytes.len() >= FLUSH_AT {
            pending.asleep = false;
            self.shared.wake.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_and_all_at_finish() {
        let sink = Sink::default();
        let (writer, flusher) = LogWriter::start("test-log", sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        writer
                            .write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        flusher.finish();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 80_000);
        for t in 0..4 {
            let own: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(own, (0..20_000).collect::<Vec<_>>(), "thread {t}");
        }
    }

    /// A sink that never returns from a write: a stderr nobody reads.
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            loop {
                std::thread::park();
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_end_does_not_wait_for_a_blocked_stderr() {
        let (mut writer, flusher) = LogWriter::start("test-log", Stuck).unwrap();
        writer.write_all(b"never read\n").unwrap();
        let start = std::time::Instant::now();
        flusher.finish();
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_line_alone_is_written_without_a_finish() {
        let sink = Sink::default();
        let (mut writer, flusher) = LogWriter::start("test-log", sink.clone()).unwrap();
        writer.write_all(b"alone\n").unwrap();
        let start = std::time::Instant::now();
        while sink.0.lock().unwrap().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"alone\n");
        flusher.finish();
    }
}
