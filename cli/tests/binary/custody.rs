//! Custodian shares from the command line: a KEK and an audit key split
//! into K-of-N share files, used without ever being whole on disk, and
//! every way a share can be wrong named.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use keyserver::Kek;

const BIN: &str = env!("CARGO_BIN_EXE_keyserver");

fn run(args: &[&str], dir: &Path, url: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("KEYSERVER_URL", url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// A server process, killed if the test ends (or fails) before `stop`.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(dir: &Path, extra: &[&str]) -> Serving {
    let (child, url) = crate::common::spawn_server(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--kek-pool", "0"])
            .arg("--storage")
            .arg(format!("file:{}", dir.join("data").display()))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
    );
    std::fs::write(dir.join("url"), url).unwrap();
    Serving(child)
}

fn stop(mut serving: Serving) {
    let _ = Command::new("kill")
        .args(["-TERM", &serving.0.id().to_string()])
        .status();
    let _ = serving.0.wait();
}

fn shares_in(dir: &Path, n: usize) -> Vec<PathBuf> {
    (1..=n)
        .map(|i| dir.join(format!("share-{i}-of-{n}.pem")))
        .collect()
}

fn args_with<'a>(head: &[&'a str], paths: &'a [&'a str]) -> Vec<&'a str> {
    head.iter().copied().chain(paths.iter().copied()).collect()
}

#[test]
fn a_kek_in_shares_is_used_without_being_whole_on_disk_until_combined() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let child = server(dir, &[]);
    let url = std::fs::read_to_string(dir.join("url")).unwrap();

    // generate --shares 3/5: five 0600 files in a 0700 folder, none of
    // which is (or holds) the KEK.
    let out = run(
        &["generate", "--shares", "3/5", "--out-dir", "custodians"],
        dir,
        &url,
    );
    assert!(out.status.success(), "{}", text(&out));
    let folder = dir.join("custodians");
    assert_eq!(
        std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let files = shares_in(&folder, 5);
    let key_id = text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap()
        .to_string();
    for file in &files {
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let body = std::fs::read_to_string(file).unwrap();
        assert!(body.contains(&key_id), "each share names its key");
        assert!(!body.contains("PRIVATE KEY"));
        assert!(Kek::from_pem(&body).is_err());
    }
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let s: Vec<&str> = names.iter().map(String::as_str).collect();

    // Any three give the same DEK; combine writes the KEK they name.
    let dek_of = |shares: &[&str]| {
        let out = run(&args_with(&["get", "--kek-shares"], shares), dir, &url);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let dek = dek_of(&[s[0], s[2], s[4]]);
    assert_eq!(dek_of(&[s[3], s[1], s[0]]), dek);
    assert_eq!(dek_of(&[s[0], s[1], s[2], s[3], s[4]]), dek);
    let out = run(
        &args_with(
            &["combine", "--out", "kek.pem", "--in"],
            &[s[1], s[3], s[4]],
        ),
        dir,
        &url,
    );
    assert!(out.status.success(), "{}", text(&out));
    let kek = Kek::from_pem(&std::fs::read_to_string(dir.join("kek.pem")).unwrap()).unwrap();
    assert_eq!(kek.id().to_string(), key_id);
    assert_eq!(
        std::fs::metadata(dir.join("kek.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let out = run(&["get", "--kek", "kek.pem"], dir, &url);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), dek);

    // encrypt with shares, decrypt with the combined file, and the reverse.
    std::fs::write(dir.join("plain"), b"custodians hold the key").unwrap();
    let out = run(
        &args_with(
            &[
                "encrypt",
                "--message",
                "--in",
                "plain",
                "--out",
                "sealed",
                "--kek-shares",
            ],
            &[s[0], s[1], s[2]],
        ),
        dir,
        &url,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run(
        &[
            "decrypt", "--kek", "kek.pem", "--in", "sealed", "--out", "back",
        ],
        dir,
        &url,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.join("back")).unwrap(),
        b"custodians hold the key"
    );
    // Lifecycle commands take them too.
    let out = run(
        &args_with(&["describe", "--kek-shares"], &[s[2], s[3], s[4]]),
        dir,
        &url,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&key_id));

    // Rotate with the shares, into new shares: the old data still opens
    // with the new key's shares.
    let out = run(
        &args_with(
            &[
                "rotate",
                "--shares",
                "2/3",
                "--out-dir",
                "rotated",
                "--kek-shares",
            ],
            &[s[0], s[1], s[2]],
        ),
        dir,
        &url,
    );
    assert!(out.status.success(), "{}", text(&out));
    let rotated = shares_in(&dir.join("rotated"), 3);
    let r: Vec<String> = rotated.iter().map(|p| p.display().to_string()).collect();
    let out = run(
        &[
            "decrypt",
            "--kek-shares",
            &r[2],
            &r[0],
            "--in",
            "sealed",
            "--out",
            "again",
        ],
        dir,
        &url,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(dir.join("again")).unwrap(),
        b"custodians hold the key"
    );

    // A share others can read is refused before it is used.
    let open = dir.join("open.pem");
    std::fs::copy(&files[0], &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = open.display().to_string();
    let out = run(
        &args_with(&["get", "--kek-shares"], &[&open, s[1], s[2]]),
        dir,
        &url,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));

    // Too few: refused, naming how many are needed; nothing is written.
    let out = run(
        &args_with(&["combine", "--out", "two.pem", "--in"], &[s[0], s[1]]),
        dir,
        &url,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("3 shares are needed"), "{}", text(&out));
    assert!(!dir.join("two.pem").exists());
    let out = run(
        &args_with(&["get", "--kek-shares"], &[s[0], s[1]]),
        dir,
        &url,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // The same share twice.
    let out = run(
        &args_with(&["get", "--kek-shares"], &[s[0], s[0], s[1]]),
        dir,
        &url,
    );
    assert!(text(&out).contains("given twice"), "{}", text(&out));

    // A damaged share: named, with its file.
    let damaged = dir.join("damaged.pem");
    let mut body = std::fs::read_to_string(&files[1]).unwrap();
    let at = body.find("-----\n").unwrap() + 20;
    let flipped = if &body[at..at + 1] == "A" { "B" } else { "A" };
    body.replace_range(at..at + 1, flipped);
    std::fs::write(&damaged, body).unwrap();
    std::fs::set_permissions(&damaged, std::fs::Permissions::from_mode(0o600)).unwrap();
    let damaged = damaged.display().to_string();
    let out = run(
        &args_with(&["get", "--kek-shares"], &[s[0], &damaged, s[2]]),
        dir,
        &url,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("damaged") && text(&out).contains("damaged.pem"),
        "{}",
        text(&out)
    );

    // Another key's shares do not mix in; nor does a second split of the
    // same key's file... (a second key here).
    let out = run(
        &["generate", "--shares", "2/3", "--out-dir", "other"],
        dir,
        &url,
    );
    assert!(out.status.success(), "{}", text(&out));
    let other = shares_in(&dir.join("other"), 3);
    let other0 = other[0].display().to_string();
    let out = run(
        &args_with(&["get", "--kek-shares"], &[s[0], s[1], &other0]),
        dir,
        &url,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("different"), "{}", text(&out));

    // Existing share files are never overwritten, and a refused generate
    // asks the server for nothing.
    let before = run(&["status"], dir, &url);
    let out = run(
        &["generate", "--shares", "2/3", "--out-dir", "other"],
        dir,
        &url,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(run(&["status"], dir, &url).stdout, before.stdout);
    // Bad numbers are usage errors.
    for bad in ["1/3", "4/3", "x"] {
        let out = run(&["generate", "--shares", bad, "--out-dir", "z"], dir, &url);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
    }
    stop(child);
}

#[test]
fn an_audit_key_in_shares_runs_a_server_and_verifies_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = run(
        &[
            "audit",
            "new-key",
            "--shares",
            "2/3",
            "--out-dir",
            "auditors",
        ],
        dir,
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let files = shares_in(&dir.join("auditors"), 3);
    for file in &files {
        let body = std::fs::read_to_string(file).unwrap();
        assert!(body.contains("audit key share"), "{body}");
    }
    let list = |a: usize, b: usize| format!("{},{}", files[a].display(), files[b].display());
    let log = dir.join("audit.log");
    let child = server(
        dir,
        &[
            "--audit-log",
            log.to_str().unwrap(),
            "--audit-key-shares",
            &list(0, 2),
        ],
    );
    let url = std::fs::read_to_string(dir.join("url")).unwrap();
    let out = run(&["generate", "--out", "kek.pem"], dir, &url);
    assert!(out.status.success(), "{}", text(&out));
    stop(child);

    // Any two other shares verify the chain; one alone cannot.
    let (f1, f2) = (
        files[1].display().to_string(),
        files[2].display().to_string(),
    );
    let logs = log.display().to_string();
    let out = run(
        &[
            "audit",
            "verify",
            "--audit-key-shares",
            &f1,
            &f2,
            "--",
            &logs,
        ],
        dir,
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit log verifies"));
    let out = run(
        &["audit", "verify", "--audit-key-shares", &f1, "--", &logs],
        dir,
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("2 shares are needed"), "{}", text(&out));

    // combine rebuilds the key file itself, which verifies as well.
    let out = run(
        &["combine", "--out", "audit.key", "--in", &f1, &f2],
        dir,
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(dir.join("audit.key")).unwrap().len(), 32);
    let out = run(
        &["audit", "verify", "--audit-key", "audit.key", &logs],
        dir,
        "",
    );
    assert!(out.status.success(), "{}", text(&out));

    // A server given one share refuses to start, saying why.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--storage", "memory"])
        .args(["--audit-log", log.to_str().unwrap()])
        .args(["--audit-key-shares", &f1])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("2 shares are needed"), "{}", text(&out));
}
