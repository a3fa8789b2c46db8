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
    File {
        tmp: PathBuf,
        dest: PathBuf,
        file: File,
    },
    Special(File),
    Stdout(std::io::Stdout),
}

impl Sink {
    pub fn open(out: Option<&Path>) -> Result<Self, Failure> {
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

    pub fn writer(&mut self) -> Box<dyn Write + Send + '_> {
        match self {
            Sink::File { file, .. } | Sink::Special(file) => {
                Box::new(std::io::BufWriter::with_capacity(1 << 16, file))
            }
            Sink::Stdout(out) => Box::new(std::io::BufWriter::with_capacity(1 << 16, out)),
        }
    }

    pub fn commit(self) -> Result<(), Failure> {
        if let Sink::File { tmp, dest, file } = self {
            file.sync_all()
                .map_err(|e| io_failure(format!("cannot write {}", tmp.display()), e))?;
            std::fs::rename(&tmp, &dest)
                .map_err(|e| io_failure(format!("cannot create {}", dest.display()), e))?;
        }
        Ok(())
    }

    pub fn abort(self) {
        if let Sink::File { tmp, .. } = self {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
