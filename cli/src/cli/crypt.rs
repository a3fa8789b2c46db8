//! `encrypt` and `decrypt` of files or stdin: streaming through the
//! client, output replaced whole or not at all, a progress bar on a terminal.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};

use indicatif::{ProgressBar, ProgressStyle};

use super::args::{CryptArgs, ReencryptArgs};
use super::client::client;
use super::custody::{read_kek, read_kek_arg};
use super::exit::{io_failure, usage, Failure};
use super::output::Sink;
use keyserver::Encryption;

/// A progress bar with rate and time left on a terminal; nothing otherwise.
fn progress(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} left",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {bytes} {binary_bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// The input file (unbuffered: the stream reads whole chunks itself; a
/// buffer in between copied every byte twice once a read no longer started
/// on its boundary) or stdin, and its length if known.
fn open_input(
    input: Option<&std::path::Path>,
) -> Result<(Box<dyn Read + Send>, Option<u64>), Failure> {
    Ok(match input {
        Some(path) => {
            let file = File::open(path)
                .map_err(|e| io_failure(format!("cannot open {}", path.display()), e))?;
            let len = file.metadata().ok().map(|m| m.len());
            (Box::new(file), len)
        }
        None => (Box::new(std::io::stdin()), None),
    })
}

/// Ends a streaming command: the output kept on success, removed on error.
fn finish(bar: &ProgressBar, sink: Sink, result: keyserver::Result<u64>) -> Result<(), Failure> {
    bar.finish_and_clear();
    match result {
        Ok(_) => sink.commit(),
        Err(e) => {
            // Dropping the sink removes its temporary file.
            drop(sink);
            Err(e.into())
        }
    }
}

/// `keyserver reencrypt --kek OLD --new-kek NEW [--in FILE] [--out FILE]`.
pub(crate) async fn reencrypt(args: ReencryptArgs) -> Result<(), Failure> {
    let old = read_kek_arg(&args.kek)?;
    let new = read_kek(&args.new_kek)?;
    let (input, total) = open_input(args.input.as_deref())?;
    let bar = progress(total);
    let input = bar.wrap_read(input);
    let client = client(&args.client)?;
    let mut sink = Sink::open(args.out.as_deref(), args.force)?;
    let result = client
        .reencrypt_stream(&old, &new, input, sink.writer())
        .await;
    finish(&bar, sink, result)
}

/// The most a message (`encrypt --message`, or an envelope given to
/// `decrypt`) may be: it is read whole. Streams have no limit.
const MAX_MESSAGE: u64 = 256 << 20;

/// Reads all of `input` (a message: at most `limit` bytes, `total` if its
/// length is known) into memory that is wiped when dropped.
fn read_message(
    input: impl Read,
    total: Option<u64>,
    limit: u64,
    encrypting: bool,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Failure> {
    // Sized up front when the length is known, so growing leaves no copy.
    let capacity = total.unwrap_or(0).min(limit + 1);
    let mut data = zeroize::Zeroizing::new(Vec::with_capacity(capacity as usize));
    input
        .take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| io_failure("cannot read the input".into(), e))?;
    if data.len() as u64 > limit {
        return Err(usage(if encrypting {
            "the input is larger than a message may be (256 MiB): encrypt it as a stream \
             (without --message)"
                .to_string()
        } else {
            format!("the input is larger than a message may be ({limit} bytes)")
        }));
    }
    Ok(data)
}

pub(crate) async fn crypt(args: CryptArgs, encrypting: bool) -> Result<(), Failure> {
    let kek = read_kek_arg(&args.kek)?;
    let (mut input, total) = open_input(args.input.as_deref())?;
    // decrypt tells a message from a stream by its magic ("KSE", "KSS").
    let mut magic = Vec::new();
    if !encrypting {
        (&mut input)
            .take(3)
            .read_to_end(&mut magic)
            .map_err(|e| io_failure("cannot read the input".into(), e))?;
    }
    let message = if encrypting {
        args.message
    } else {
        magic == keyserver::envelope::MAGIC
    };
    if args.context.is_some() && !message {
        return Err(usage(if encrypting {
            "--context binds a message: add --message (a stream has no context)"
        } else {
            "--context is for messages: this input is a stream, which has none"
        }));
    }
    let context = args.context.as_deref().unwrap_or_default().as_bytes();
    let bar = progress(total);
    let input = bar.wrap_read(std::io::Cursor::new(magic).chain(input));
    let client = client(&args.client)?;
    let mut sink = Sink::open(args.out.as_deref(), args.force)?;
    let result = if message {
        // The limit is on the plaintext; a sealed message is that and the
        // envelope's overhead.
        let limit = if encrypting {
            MAX_MESSAGE
        } else {
            MAX_MESSAGE + keyserver::envelope::OVERHEAD_V2 as u64
        };
        match read_message(input, total, limit, encrypting) {
            Err(failure) => {
                bar.finish_and_clear();
                return Err(failure);
            }
            Ok(data) => {
                let write = |bytes: &[u8], sink: &mut Sink| {
                    let mut writer = sink.writer();
                    writer
                        .write_all(bytes)
                        .and_then(|()| writer.flush())
                        .map(|()| bytes.len() as u64)
                        .map_err(|source| keyserver::Error::Io {
                            what: "writing output",
                            source,
                        })
                };
                if encrypting {
                    match client.encrypt_with_context(&kek, &data, context).await {
                        Ok(sealed) => write(&sealed, &mut sink),
                        Err(e) => Err(e),
                    }
                } else {
                    match client.decrypt_with_context(&kek, &data, context).await {
                        Ok(plain) => write(&plain, &mut sink),
                        Err(e) => Err(e),
                    }
                }
            }
        }
    } else {
        let writer = sink.writer();
        if encrypting {
            client.encrypt_stream(&kek, input, writer).await
        } else {
            client.decrypt_stream(&kek, input, writer).await
        }
    };
    finish(&bar, sink, result)
}
