//! Custody on the command line: custodian shares (`generate --shares K/N`,
//! `audit new-key --shares K/N`, `combine`, and `--kek-shares` /
//! `--audit-key-shares` wherever a KEK or the audit key is read), and the
//! master key in an HSM (`seal new-key`, `seal destroy-key`, `reseal`).

use std::fs::{DirBuilder, File};
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use keyserver::shares::{self, Share, ShareKind};
use keyserver::Kek;
use zeroize::Zeroizing;

use super::args::{KekArgs, SealCommand};
use super::choice;
use super::exit::{io_failure, usage, Failure};
use super::output::{create_private_file, print_stdout};

/// Reads a KEK file (PEM, at most 64 KiB) into memory wiped on drop.
pub(crate) fn read_kek(path: &Path) -> Result<Kek, Failure> {
    let mut text = zeroize::Zeroizing::new(String::new());
    File::open(path)
        .and_then(|f| f.take(1 << 16).read_to_string(&mut text))
        .map_err(|e| io_failure(format!("cannot read the KEK file {}", path.display()), e))?;
    Kek::from_pem(&text).map_err(|e| Failure {
        code: 1,
        message: format!("{}: {e}", path.display()),
    })
}

/// `K/N` as two numbers with 2 <= K <= N <= 255.
pub(crate) fn parse_split(text: &str) -> Result<(u8, u8), Failure> {
    let bad = || {
        usage(format!(
            "--shares: expected K/N with 2 <= K <= N <= 255, got {text:?}"
        ))
    };
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let k: u8 = k.trim().parse().map_err(|_| bad())?;
    let n: u8 = n.trim().parse().map_err(|_| bad())?;
    if k < 2 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// The KEK of `--kek FILE` or `--kek-shares FILE...`.
pub(crate) fn read_kek_arg(args: &KekArgs) -> Result<Kek, Failure> {
    match &args.kek {
        Some(path) => read_kek(path),
        None => kek_from_shares(&args.kek_shares),
    }
}

/// A KEK rebuilt from its share files.
pub(crate) fn kek_from_shares(paths: &[PathBuf]) -> Result<Kek, Failure> {
    let shares = read_shares(paths)?;
    shares::combine_kek(&shares).map_err(|e| Failure {
        code: 1,
        message: format!("--kek-shares: {e}"),
    })
}

/// An audit key rebuilt from its share files.
pub(crate) fn audit_key_from_shares(
    paths: &[PathBuf],
) -> Result<keyserver::policy::AuditKey, Failure> {
    let shares = read_shares(paths)?;
    let key = shares::combine_audit_key(&shares).map_err(|e| Failure {
        code: 1,
        message: format!("--audit-key-shares: {e}"),
    })?;
    keyserver::policy::AuditKey::new(key.to_vec()).map_err(|e| usage(e.to_string()))
}

/// The largest share file read.
const MAX_SHARE_FILE: u64 = 256 << 10;

/// Reads share files (each at most 256 KiB, readable by its owner only),
/// naming the file that is bad.
fn read_shares(paths: &[PathBuf]) -> Result<Vec<Share>, Failure> {
    use std::os::unix::fs::PermissionsExt;
    paths
        .iter()
        .map(|path| {
            let shown = path.display();
            let file = File::open(path)
                .map_err(|e| io_failure(format!("cannot read the share file {shown}"), e))?;
            let meta = file
                .metadata()
                .map_err(|e| io_failure(format!("cannot read the share file {shown}"), e))?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(usage(format!(
                    "the share file {shown} is readable by others: chmod 600 {shown}"
                )));
            }
            // Sized once: a growing buffer would leave unwiped copies.
            let mut text = Zeroizing::new(String::with_capacity(
                meta.len().min(MAX_SHARE_FILE) as usize + 1,
            ));
            file.take(MAX_SHARE_FILE)
                .read_to_string(&mut text)
                .map_err(|e| io_failure(format!("cannot read the share file {shown}"), e))?;
            Share::from_pem(&text).map_err(|e| Failure {
                code: 1,
                message: format!("{}: {e}", path.display()),
            })
        })
        .collect()
}

/// The share files of a split into `dir`, created (0600, never over an
/// existing file) before the secret exists, so that a secret that cannot
/// be saved is never made. Dropped unfinished, they are removed.
pub(crate) struct ShareFiles {
    files: Vec<(PathBuf, File)>,
    done: bool,
}

impl ShareFiles {
    /// Creates `dir` (0700) if needed and `share-I-of-N.pem` in it.
    pub(crate) fn create(dir: &Path, total: u8) -> Result<Self, Failure> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_failure(format!("cannot create {}", dir.display()), e))?;
        let mut files = ShareFiles {
            files: Vec::new(),
            done: false,
        };
        for i in 1..=total {
            let path = dir.join(format!("share-{i}-of-{total}.pem"));
            files.files.push(create_private_file(&path)?);
        }
        Ok(files)
    }

    /// Writes each share to its file and syncs them all. The key exists
    /// by now: nothing is removed from here on, whatever fails (K shares
    /// that were written still rebuild it), and a failure names the files
    /// that were written.
    pub(crate) fn write(mut self, split: &[Share]) -> Result<Vec<PathBuf>, Failure> {
        self.done = true;
        let mut written = Vec::new();
        for ((path, file), share) in self.files.iter_mut().zip(split) {
            file.write_all(share.to_pem().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    io_failure(
                        format!(
                            "cannot write {} (the key exists; written so far: {written:?})",
                            path.display()
                        ),
                        e,
                    )
                })?;
            written.push(path.display().to_string());
        }
        if let Some((path, _)) = self.files.first() {
            if let Some(dir) = path.parent() {
                // The new names reach the disk with the folder.
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
        }
        Ok(self.files.iter().map(|(p, _)| p.clone()).collect())
    }
}

impl Drop for ShareFiles {
    fn drop(&mut self) {
        if !self.done {
            for (path, _) in &self.files {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// `keyserver combine --in SHARE... --out FILE`: a KEK (PEM) or an audit
/// key (its bytes), by what the shares say they are.
pub(crate) fn combine(inputs: &[PathBuf], out: &Path) -> Result<(), Failure> {
    let split = read_shares(inputs)?;
    let kind = split.first().map(Share::kind);
    let (secret, what) = match kind {
        Some(ShareKind::AuditKey) => {
            let key = shares::combine_audit_key(&split).map_err(|e| Failure {
                code: 1,
                message: e.to_string(),
            })?;
            (key, format!("audit key {}", split[0].subject()))
        }
        _ => {
            let kek = shares::combine_kek(&split).map_err(|e| Failure {
                code: 1,
                message: e.to_string(),
            })?;
            let pem = kek.to_pem();
            (
                Zeroizing::new(pem.as_bytes().to_vec()),
                format!("KEK {}", kek.id()),
            )
        }
    };
    let (path, mut file) = create_private_file(out)?;
    if let Err(e) = file.write_all(&secret).and_then(|()| file.sync_all()) {
        let _ = std::fs::remove_file(&path);
        return Err(io_failure(format!("cannot write {}", path.display()), e));
    }
    print_stdout(&format!("{what} rebuilt into {}\n", path.display()))
}

/// Prints where the shares went.
pub(crate) fn report_shares(what: &str, k: u8, paths: &[PathBuf]) -> Result<(), Failure> {
    let mut text = format!(
        "{what} split into {} shares, any {k} of which rebuild it (give one to each custodian):\n",
        paths.len()
    );
    for path in paths {
        text.push_str(&format!("  {}\n", path.display()));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
    Ok(())
}

/// `keyserver seal new-key` and `keyserver seal destroy-key`.
pub(crate) async fn seal_command(command: SealCommand) -> Result<(), Failure> {
    let (uri, destroy) = match command {
        SealCommand::NewKey { seal } => (seal, false),
        SealCommand::DestroyKey {
            seal,
            yes_destroy_every_record_sealed_under_it,
        } => {
            if !yes_destroy_every_record_sealed_under_it {
                return Err(usage(
                    "destroying a master key makes every record sealed under it unreadable for \
                     good: add --yes-destroy-every-record-sealed-under-it",
                ));
            }
            (seal, true)
        }
    };
    let uri: keyserver::backends::Pkcs11Uri = uri
        .parse()
        .map_err(|e: keyserver::Error| usage(format!("--seal: {e}")))?;
    let shown = uri.to_string();
    let done = tokio::task::spawn_blocking(move || {
        if destroy {
            keyserver_pkcs11_destroy(&uri)
        } else {
            keyserver_pkcs11_create(&uri)
        }
    })
    .await
    .map_err(|_| usage("the token operation did not complete"))??;
    print_stdout(&format!(
        "master key {shown} (reference {done}) {}\n",
        if destroy { "destroyed" } else { "made" }
    ))
}

fn keyserver_pkcs11_create(
    uri: &keyserver::backends::Pkcs11Uri,
) -> Result<keyserver::seal::SealKeyRef, Failure> {
    keyserver::backends::pkcs11::create_key(uri).map_err(Failure::from)
}

fn keyserver_pkcs11_destroy(
    uri: &keyserver::backends::Pkcs11Uri,
) -> Result<keyserver::seal::SealKeyRef, Failure> {
    keyserver::backends::pkcs11::destroy_key(uri).map_err(Failure::from)
}

/// `keyserver reseal --storage S --to URI|none [--from URI]`.
pub(crate) async fn reseal(storage: &str, to: &str, from: Option<&str>) -> Result<(), Failure> {
    let to = match to {
        "none" => None,
        uri => Some(choice::seal("--to", uri).await?),
    };
    let from = match from {
        Some(uri) => Some(choice::seal("--from", uri).await?),
        None => None,
    };
    if let (Some(from), Some(to)) = (&from, &to) {
        if from.current_key() == to.current_key() {
            return Err(usage(format!(
                "--from and --to name the same master key ({}): nothing would move",
                to.current_key()
            )));
        }
    }
    let store = choice::storage(storage, 0).await?;
    let report = keyserver::seal::reseal_all(&*store, from.as_ref(), to.as_ref(), |r| {
        let _ = writeln!(
            std::io::stderr(),
            "reseal: {} keys examined, {} resealed",
            r.examined,
            r.resealed
        );
    })
    .await
    .map_err(|e| {
        let mut failure = Failure::from(e);
        failure.message = format!(
            "reseal stopped (what was done stays done; run it again to resume): {}",
            failure.message
        );
        failure
    })?;
    print_stdout(&format!(
        "every record is {}: {} keys, {} resealed, {} already, {} gone\n",
        match &to {
            Some(seal) => format!("under master key {}", seal.current_key()),
            None => "unsealed".to_string(),
        },
        report.examined,
        report.resealed,
        report.already,
        report.gone
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_split;

    #[test]
    fn split_numbers() {
        assert_eq!(parse_split("3/5").ok(), Some((3, 5)));
        assert_eq!(parse_split("2/2").ok(), Some((2, 2)));
        for bad in ["1/3", "4/3", "3", "a/b", "2/256", "0/0", "/"] {
            assert!(parse_split(bad).is_err(), "{bad}");
        }
    }
}
