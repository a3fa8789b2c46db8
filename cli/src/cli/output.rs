//! Where output goes: stdout, a new private file, or a file replaced whole.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::exit::{io_failure, usage, Failure};

/// Writes to stdout; a closed stdout (`| head`) is an error, not a panic.
pub(crate) fn print_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| io_failure("writing to stdout".into(), e))
}

/// Creates `path` 0600, refusing to overwrite (a lost KEK is lost data).
pub(crate) fn create_private_file(path: &Path) -> Result<(PathBuf, File), Failure> {
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
pub(crate) enum Sink {
    File(TmpOut),
    Special(File),
    Stdout(std::io::Stdout),
}

/// A temporary output file, removed when dropped unless it was renamed into
/// place: every failure path (an error, an early return, a panic) leaves no
/// partial output behind.
pub(crate) struct TmpOut {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    done: bool,
    /// Whether an existing `dest` may be replaced (`--force`).
    replace: bool,
}

impl Drop for TmpOut {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Sink {
    /// The output `out` (stdout if `None`). An existing regular file is
    /// refused before anything is read unless `replace` (`--force`), as
    /// `generate --out` refuses: a file replaced by mistake can be data
    /// lost.
    pub fn open(out: Option<&Path>, replace: bool) -> Result<Self, Failure> {
        let Some(dest) = out else {
            return Ok(Sink::Stdout(std::io::stdout()));
        };
        // Renaming a temporary file over a device or a FIFO would replace it
        // (as root, `--out /dev/null` would leave a regular file there):
        // such outputs are written in place; they have no partial file to
        // protect anyway.
        if let Ok(meta) = std::fs::metadata(dest) {
            if meta.is_dir() {
                // Refused before anything is read or decrypted.
                return Err(usage(format!(
                    "--out {}: is a directory; name a file",
                    dest.display()
                )));
            }
            if meta.is_file() && !replace {
                return Err(usage(format!(
                    "--out {}: the file exists; --force replaces it (whole, and only on success)",
                    dest.display()
                )));
            }
            if !meta.is_file() {
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
        Ok(Sink::File(TmpOut {
            tmp,
            dest: dest.to_path_buf(),
            file,
            done: false,
            replace,
        }))
    }

    pub fn writer(&mut self) -> Box<dyn Write + Send + '_> {
        match self {
            Sink::File(TmpOut { file, .. }) | Sink::Special(file) => {
                Box::new(std::io::BufWriter::with_capacity(1 << 16, file))
            }
            Sink::Stdout(out) => Box::new(std::io::BufWriter::with_capacity(1 << 16, out)),
        }
    }

    /// Puts the output in place; on failure the temporary file is removed
    /// (when `self` drops).
    pub fn commit(self) -> Result<(), Failure> {
        if let Sink::File(mut out) = self {
            out.file
                .sync_all()
                .map_err(|e| io_failure(format!("cannot write {}", out.tmp.display()), e))?;
            if out.replace {
                std::fs::rename(&out.tmp, &out.dest)
            } else {
                // link(2) refuses an existing name: a file that appeared
                // meanwhile is not replaced either.
                std::fs::hard_link(&out.tmp, &out.dest)
            }
            .map_err(|e| io_failure(format!("cannot create {}", out.dest.display()), e))?;
            if !out.replace {
                let _ = std::fs::remove_file(&out.tmp);
            }
            out.done = true;
        }
        Ok(())
    }
}
