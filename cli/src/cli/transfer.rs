//! `keyserver copy`, `backup` and `restore`: moving and keeping keys
//! between storages (`keyserver::transfer`).

use std::path::Path;

use keyserver::transfer;

use super::choice;
use super::exit::{io_failure, usage, Failure};
use super::output::{create_private_file, print_stdout};

/// Removes a temporary file when dropped.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// `copy --from STORAGE --to STORAGE`.
pub(crate) async fn copy(from: &str, to: &str) -> Result<(), Failure> {
    if from == to {
        return Err(usage("--from and --to name the same storage"));
    }
    let source = choice::read_storage(from).await?;
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
    let store = choice::read_storage(storage).await?;
    let name = out
        .file_name()
        .ok_or_else(|| usage(format!("--out {}: not a file name", out.display())))?;
    // Written under a temporary name (removed however this ends), synced,
    // then linked to its name: link(2) fails if a file took the name
    // meanwhile, where a rename would replace it.
    let tmp = out.with_file_name(format!(
        ".{}.keyserver-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let (_, file) = create_private_file(&tmp)?;
    let _remove = RemoveOnDrop(&tmp);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut writer = std::io::BufWriter::new(file);
    let keys = transfer::write_backup(&*store, &mut writer, now).await?;
    let file = writer
        .into_inner()
        .map_err(|e| io_failure(format!("cannot write {}", tmp.display()), e.into_error()))?;
    file.sync_all()
        .map_err(|e| io_failure(format!("cannot write {}", tmp.display()), e))?;
    std::fs::hard_link(&tmp, out)
        .map_err(|e| io_failure(format!("cannot create {}", out.display()), e))?;
    // The new name is durable too.
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_failure(format!("cannot sync {}", dir.display()), e))?;
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
