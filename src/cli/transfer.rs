//! `keyserver copy`, `backup` and `restore`: moving and keeping keys
//! between storages (`keyserver::transfer`).

use std::path::Path;

use keyserver::transfer;

use super::choice;
use super::exit::{io_failure, usage, Failure};
use super::output::{print_stdout, Sink};

/// `copy --from STORAGE --to STORAGE`.
pub(crate) async fn copy(from: &str, to: &str) -> Result<(), Failure> {
    if from == to {
        return Err(usage("--from and --to name the same storage"));
    }
    let source = choice::storage(from, 0).await?;
    let dest = choice::storage(to, 0).await?;
    let report = transfer::copy_keys(&*source, &*dest).await?;
    print_stdout(&format!(
        "copied {} to {}: {report}\n",
        choice::redacted(from),
        choice::redacted(to)
    ))
}

/// `backup --storage STORAGE --out FILE`: a new file (never over an
/// existing one), 0600, synced before it takes its name.
pub(crate) async fn backup(storage: &str, out: &Path) -> Result<(), Failure> {
    if out.exists() {
        return Err(usage(format!(
            "--out {}: exists (a backup never overwrites a file)",
            out.display()
        )));
    }
    let store = choice::storage(storage, 0).await?;
    let mut sink = Sink::open(Some(out))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let keys = {
        let mut writer = sink.writer();
        transfer::write_backup(&*store, &mut writer, now).await?
    };
    sink.commit()?;
    // The new name is durable too.
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_failure(format!("cannot sync {}", dir.display()), e))?;
    }
    print_stdout(&format!(
        "backed up {keys} keys of {} to {} (it holds wrapped DEKs: destroying a key \
         destroys it only once every backup holding it is destroyed too)\n",
        choice::redacted(storage),
        out.display()
    ))
}

/// `restore --in FILE --storage STORAGE`: the whole file is checked before
/// anything is written.
pub(crate) async fn restore(input: &Path, storage: &str) -> Result<(), Failure> {
    let file = std::fs::File::open(input)
        .map_err(|e| io_failure(format!("cannot open {}", input.display()), e))?;
    let entries = transfer::read_backup(&mut std::io::BufReader::new(file)).map_err(|e| {
        let why = match e {
            keyserver::Error::Policy { reason } => reason,
            other => other.to_string(),
        };
        Failure {
            code: 1,
            message: format!("{}: {why}", input.display()),
        }
    })?;
    let store = choice::storage(storage, 0).await?;
    let report = transfer::restore_backup(&entries, &*store).await?;
    print_stdout(&format!(
        "restored {} into {}: {report}\n",
        input.display(),
        choice::redacted(storage)
    ))
}
