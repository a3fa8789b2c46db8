//! The `keyserver` command end to end, against a real server process.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use keyserver::Kek;

const BIN: &str = env!("CARGO_BIN_EXE_keyserver");

/// A `keyserver serve` process on an ephemeral loopback port.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let (child, url) = crate::common::spawn_server(
            Command::new(BIN)
                .args(["serve", "--listen", "127.0.0.1:0", "--storage"])
                .arg(format!("file:{}", dir.join("data").display()))
                .args(extra)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        );
        ServerProcess { child, url }
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str], dir: &Path, envs: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Writes `mib` MiB of a non-repeating pattern.
fn write_big_file(path: &Path, mib: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block: Vec<u8> = (0..1usize << 20)
        .map(|j| (j.wrapping_mul(31) ^ (j >> 9)) as u8)
        .collect();
    for i in 0..mib {
        // Every MiB differs, so a swapped or repeated block would show.
        block[..8].copy_from_slice(&(i as u64).to_be_bytes());
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}

fn same_contents(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let n = fb.read(&mut bb[nb..na]).unwrap();
            if n == 0 {
                return false;
            }
            nb += n;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

fn peak_rss_kib(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("peak RSS"))
        .unwrap_or_else(|| panic!("no peak RSS in {stderr}"));
    line.split_whitespace()
        .rev()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn cli_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = ServerProcess::start(dir, &[]);
    let url = server.url.clone();
    let env = [("KEYSERVER_URL", url.as_str())];

    // status, generate (0600, never overwritten), get.
    let out = run(&["status"], dir, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("keys: 0"));
    let out = run(&["generate", "--out", "kek.pem"], dir, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let kek = Kek::from_pem(&std::fs::read_to_string(dir.join("kek.pem")).unwrap()).unwrap();
    assert!(stderr(&out).contains(&format!("key id: {}", kek.id())));
    let mode = std::fs::metadata(dir.join("kek.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let out = run(&["generate", "--out", "kek.pem"], dir, &env);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a KEK file is never overwritten"
    );
    assert_eq!(
        kek,
        Kek::from_pem(&std::fs::read_to_string(dir.join("kek.pem")).unwrap()).unwrap()
    );

    let out = run(&["get", "--kek", "kek.pem"], dir, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let dek_hex = String::from_utf8(out.stdout).unwrap();
    assert_eq!(dek_hex.trim().len(), 32);
    // The same DEK over JSON-RPC and with client-side unwrap.
    for extra in [&["--transport", "jsonrpc"][..], &["--client-unwrap"][..]] {
        let mut args = vec!["get", "--kek", "kek.pem"];
        args.extend_from_slice(extra);
        let out = run(&args, dir, &env);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), dek_hex);
    }

    // A file larger than 64 MiB round-trips in bounded memory.
    let plain = dir.join("plain.bin");
    write_big_file(&plain, 70);
    let rss = [
        ("KEYSERVER_URL", url.as_str()),
        ("KEYSERVER_REPORT_PEAK_RSS", "1"),
    ];
    let out = run(
        &[
            "encrypt",
            "--kek",
            "kek.pem",
            "--in",
            "plain.bin",
            "--out",
            "sealed.kss",
        ],
        dir,
        &rss,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let enc_rss = peak_rss_kib(&stderr(&out));
    let out = run(
        &[
            "decrypt",
            "--kek",
            "kek.pem",
            "--in",
            "sealed.kss",
            "--out",
            "opened.bin",
        ],
        dir,
        &rss,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dec_rss = peak_rss_kib(&stderr(&out));
    assert!(same_contents(&plain, &dir.join("opened.bin")));
    println!("cli: 70 MiB file, peak RSS encrypt {enc_rss} KiB, decrypt {dec_rss} KiB");
    assert!(
        enc_rss < 64 * 1024 && dec_rss < 64 * 1024,
        "memory is bounded"
    );
    std::fs::remove_file(dir.join("opened.bin")).unwrap();

    // stdin to stdout works too.
    let mut child = Command::new(BIN)
        .args(["encrypt", "--kek", "kek.pem"])
        .current_dir(dir)
        .env("KEYSERVER_URL", &url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Stephan Richter")
        .unwrap();
    let sealed = child.wait_with_output().unwrap();
    assert!(sealed.status.success());
    std::fs::write(dir.join("small.kss"), &sealed.stdout).unwrap();
    let out = run(
        &["decrypt", "--kek", "kek.pem", "--in", "small.kss"],
        dir,
        &env,
    );
    assert_eq!(out.stdout, b"Stephan Richter");

    // An output that is not a regular file (here a FIFO; /dev/null is the
    // same case) is written in place, never replaced by a renamed file.
    let fifo = dir.join("out.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = run(
        &[
            "decrypt",
            "--kek",
            "kek.pem",
            "--in",
            "small.kss",
            "--out",
            "out.fifo",
        ],
        dir,
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // (Checked before joining: a replaced FIFO would leave the reader
    // blocked.)
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(reader.join().unwrap(), b"Stephan Richter");

    // Tampered, truncated, wrong KEK: exit 5, a clear line, no output file.
    let sealed = std::fs::read(dir.join("sealed.kss")).unwrap();
    let mut tampered = sealed.clone();
    tampered[10 << 20] ^= 1;
    std::fs::write(dir.join("tampered.kss"), &tampered).unwrap();
    let out = run(
        &[
            "decrypt",
            "--kek",
            "kek.pem",
            "--in",
            "tampered.kss",
            "--out",
            "t.bin",
        ],
        dir,
        &env,
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("decryption failed"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"));
    assert!(
        !dir.join("t.bin").exists(),
        "no partial plaintext left behind"
    );
    std::fs::write(dir.join("truncated.kss"), &sealed[..sealed.len() - 100]).unwrap();
    let out = run(
        &[
            "decrypt",
            "--kek",
            "kek.pem",
            "--in",
            "truncated.kss",
            "--out",
            "t.bin",
        ],
        dir,
        &env,
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(!dir.join("t.bin").exists());
    let out = run(&["generate", "--out", "other.pem"], dir, &env);
    assert!(out.status.success());
    let out = run(
        &[
            "decrypt",
            "--kek",
            "other.pem",
            "--in",
            "sealed.kss",
            "--out",
            "t.bin",
        ],
        dir,
        &env,
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sealed under key"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("t.bin").exists());

    // An --out that is an existing directory is refused (usage, 2) before
    // anything is decrypted; no temporary file is left anywhere, on this or
    // on any failure above.
    std::fs::create_dir(dir.join("outdir")).unwrap();
    let out = run(
        &[
            "decrypt",
            "--kek",
            "kek.pem",
            "--in",
            "sealed.kss",
            "--out",
            "outdir",
        ],
        dir,
        &env,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(std::fs::read_dir(dir.join("outdir")).unwrap().count(), 0);

    // A KEK the server does not know: 4. A file that is not a KEK: 1.
    let stranger = crate::common::fixture_kek(3072);
    std::fs::write(dir.join("stranger.pem"), stranger.to_pem().as_bytes()).unwrap();
    let out = run(&["get", "--kek", "stranger.pem"], dir, &env);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    std::fs::write(dir.join("junk.pem"), "junk").unwrap();
    let out = run(&["get", "--kek", "junk.pem"], dir, &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Usage errors: 2. An unreachable server: 3. A second server on the same
    // directory is refused.
    assert_eq!(run(&["frobnicate"], dir, &env).status.code(), Some(2));
    assert_eq!(
        run(&["serve", "--strength", "100"], dir, &env)
            .status
            .code(),
        Some(2)
    );
    let out = run(&["status", "--server", "http://127.0.0.1:1"], dir, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().count(),
        1,
        "one clear line: {}",
        stderr(&out)
    );
    // The line says where and why, over either protocol.
    for transport in ["xmlrpc", "jsonrpc"] {
        let out = run(
            &[
                "status",
                "--server",
                "http://127.0.0.1:1",
                "--transport",
                transport,
            ],
            dir,
            &[],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(
            err.contains("127.0.0.1:1") && err.to_lowercase().contains("refused"),
            "{transport}: {err}"
        );
    }
    // A malformed URL is a usage error, not an unreachable server.
    for url in ["not a url", "ftp://127.0.0.1:1", "http://"] {
        let out = run(&["status", "--server", url], dir, &[]);
        assert_eq!(out.status.code(), Some(2), "{url}: {}", stderr(&out));
    }
    let out = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--storage",
            &format!("file:{}", dir.join("data").display()),
        ],
        dir,
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in use by another process"),
        "{}",
        stderr(&out)
    );

    // The load generator runs against the live server.
    for op in ["get-wrapped", "encrypt"] {
        let out = run(
            &["bench", "--op", op, "--clients", "2", "--duration", "0.3"],
            dir,
            &env,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains(" 0 errors") && text.contains("p99"), "{text}");
    }

    // SIGTERM stops the server cleanly; its keys are on disk for the next one.
    assert!(server.stop().success());
    let server = ServerProcess::start(dir, &["--suite", "rustcrypto"]);
    let out = run(&["status", "--server", &server.url], dir, &[]);
    // kek.pem, other.pem and the load generator's key.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("keys: 4"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(server.stop().success());
}

#[test]
fn serve_reads_a_config_file_and_flags_win() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("keyserver.toml"),
        "storage = \"memory\"\nstrength = 192\nmax_body = 4096\ncache_records = 0\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--config",
            "keyserver.toml",
            "--listen",
            "127.0.0.1:0",
            "--strength",
            "128",
        ])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("storage memory"), "{first}");
    assert!(
        first.contains("strength 128"),
        "the flag wins over the file: {first}"
    );

    std::fs::write(dir.join("bad.toml"), "colour = \"blue\"\n").unwrap();
    let out = run(&["serve", "--config", "bad.toml"], dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));
}

/// `keyserver serve` on a free loopback port with memory storage, no KEK
/// pool, `extra` arguments and `RUST_LOG=info`, its stderr piped for the
/// caller: the process, its URL and its first line (the banner).
fn serve_on_loopback(extra: &[&str]) -> (std::process::Child, String, String) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--storage",
            "memory",
            "--kek-pool",
            "0",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    (child, url, first)
}

/// Text logs: an access line is its message alone (no repeated fields),
/// and what a client sent that reaches it (an unknown filter member, with
/// a terminal escape sequence and a line break in its name) is escaped:
/// it neither drives the terminal of whoever reads the log nor forges a
/// line of its own.
#[test]
fn text_access_lines_escape_what_clients_send() {
    let (mut child, url, _) = serve_on_loopback(&[]);
    let stderr_pipe = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        std::io::Read::read_to_string(&mut BufReader::new(stderr_pipe), &mut all).unwrap();
        all
    });
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"list_keys","params":[{"\u001b[31mevil\nFORGED LINE":1}]}"#;
    let out = Command::new("curl")
        .args(["-s", "-H", "Content-Type: application/json", "-d", body])
        .arg(format!("{url}/jsonrpc"))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(answer.contains(r#""code":-32602"#), "{answer}");
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let logs = logs.join().unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("keyserver::access: jsonrpc list_keys"))
        .unwrap_or_else(|| panic!("no access line in:\n{logs}"));
    assert!(
        !logs.contains('\u{1b}'),
        "a raw escape reached the log:\n{logs}"
    );
    assert!(
        !logs.lines().any(|l| l.starts_with("FORGED LINE")),
        "a client forged a log line:\n{logs}"
    );
    assert!(line.contains(r"\u{1b}[31mevil\nFORGED LINE"), "{line}");
    assert!(!line.contains("protocol="), "fields repeated: {line}");
}

/// `--suite openssl` and `--log-format json` end to end: the server runs the
/// OpenSSL suite and every line it logs is one JSON object, the access log
/// among them; the client's own `--suite openssl` reads the same bytes.
#[cfg(feature = "cipher-openssl")]
#[test]
fn serve_with_the_openssl_suite_and_json_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut child, url, first) =
        serve_on_loopback(&["--suite", "openssl", "--log-format", "json"]);
    assert!(first.contains("suite openssl"), "{first}");
    let stderr_pipe = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr_pipe)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let out = run(
        &[
            "generate", "--server", &url, "--suite", "openssl", "--out", "kek.pem",
        ],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &["status", "--server", &url, "--transport", "jsonrpc"],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("suite: openssl"));
    std::fs::write(dir.join("plain"), b"Stephan Richter").unwrap();
    let out = run(
        &[
            "encrypt", "--server", &url, "--suite", "openssl", "--kek", "kek.pem", "--in", "plain",
            "--out", "sealed",
        ],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Sealed with the OpenSSL suite, opened with RustCrypto: the same bytes.
    let out = run(
        &[
            "decrypt",
            "--server",
            &url,
            "--suite",
            "rustcrypto",
            "--kek",
            "kek.pem",
            "--in",
            "sealed",
            "--out",
            "opened",
        ],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(dir.join("opened")).unwrap(),
        b"Stephan Richter"
    );

    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let logs = logs.join().unwrap();
    assert!(!logs.is_empty());
    let mut access = 0;
    for line in logs.iter().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["target"] == "keyserver::access" {
            access += 1;
            assert!(event["fields"]["method"].is_string(), "{line}");
        }
    }
    assert!(
        access >= 4,
        "generate, status, and get_key twice: {logs:#?}"
    );
}

/// Plain HTTP off loopback: `serve` refuses it with a clear message unless
/// told `--insecure` (flag or environment). Nothing connects: the test only
/// looks at what the process says.
#[test]
fn serve_refuses_plain_http_off_loopback_unless_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--storage",
        "memory",
        "--kek-pool",
        "0",
    ];
    let out = run(&args, tmp.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    for (extra, envs) in [
        (vec!["--insecure"], vec![]),
        (vec![], vec![("KEYSERVER_INSECURE", "true")]),
    ] {
        let mut child = Command::new(BIN)
            .args(args)
            .args(&extra)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(
            first.contains("listening on http://0.0.0.0:"),
            "{extra:?} {envs:?}: {first}"
        );
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(child.wait().unwrap().success());
    }
}

/// The lifecycle commands through the binary: describe, suspend (exit code
/// 8 for what the state forbids), resume, rotate (the old file decrypts
/// with the new KEK), destroy and cancel-destroy, list-keys, and the serve
/// durations.
#[test]
fn lifecycle_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = ServerProcess::start(dir, &["--destroy-window", "1h", "--cryptoperiod", "365d"]);
    let env = [("KEYSERVER_URL", server.url.as_str())];
    let ok = |args: &[&str]| {
        let out = run(args, dir, &env);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    ok(&["generate", "--out", "kek.pem"]);
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["describe", "--kek", "kek.pem"])).unwrap();
    assert_eq!(info["state"], "active");
    let created = keyserver::api::parse_rfc3339(info["created"].as_str().unwrap()).unwrap();
    let deactivate =
        keyserver::api::parse_rfc3339(info["deactivate_at"].as_str().unwrap()).unwrap();
    assert_eq!(deactivate - created, 365 * 86_400);
    std::fs::write(dir.join("plain"), b"lifecycle through the CLI").unwrap();
    ok(&[
        "encrypt", "--kek", "kek.pem", "--in", "plain", "--out", "sealed",
    ]);
    // An existing output is refused (as `generate --out` refuses), before
    // anything is read; --force replaces it whole.
    let before = std::fs::read(dir.join("sealed")).unwrap();
    let out = run(
        &[
            "encrypt", "--kek", "kek.pem", "--in", "plain", "--out", "sealed",
        ],
        dir,
        &env,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(dir.join("sealed")).unwrap(), before);
    ok(&[
        "encrypt", "--kek", "kek.pem", "--in", "plain", "--out", "sealed", "--force",
    ]);
    assert_ne!(
        std::fs::read(dir.join("sealed")).unwrap(),
        before,
        "a new salt"
    );

    let info: serde_json::Value =
        serde_json::from_str(&ok(&["suspend", "--kek", "kek.pem"])).unwrap();
    assert_eq!(info["state"], "suspended");
    let out = run(&["get", "--kek", "kek.pem"], dir, &env);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(suspended) forbids this"),
        "{}",
        stderr(&out)
    );
    ok(&["resume", "--kek", "kek.pem"]);

    ok(&["rotate", "--kek", "kek.pem", "--out", "kek2.pem"]);
    ok(&[
        "decrypt", "--kek", "kek2.pem", "--in", "sealed", "--out", "opened",
    ]);
    assert_eq!(
        std::fs::read(dir.join("opened")).unwrap(),
        b"lifecycle through the CLI"
    );
    let out = run(
        &[
            "encrypt", "--kek", "kek.pem", "--in", "plain", "--out", "again",
        ],
        dir,
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(8),
        "the rotated key encrypts nothing new"
    );

    // A URL whose path serves no key server: HTTP 404, said as such (exit
    // 3), not "cannot reach".
    for transport in ["xmlrpc", "jsonrpc"] {
        let wrong = format!("{}/nothing-here", server.url);
        let out = run(
            &["status", "--server", &wrong, "--transport", transport],
            dir,
            &[],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{transport}: {err}");
        assert!(
            err.contains("404") && err.contains("nothing-here") && !err.contains("cannot reach"),
            "{transport}: {err}"
        );
    }

    // Rekeying after a compromise: a key made by generate (a rotation
    // would wrap the same DEK), and the file re-encrypted under it in one
    // pass, the plaintext never on disk.
    ok(&["generate", "--out", "fresh.pem"]);
    ok(&[
        "reencrypt",
        "--kek",
        "kek.pem",
        "--new-kek",
        "fresh.pem",
        "--in",
        "sealed",
        "--out",
        "rekeyed",
    ]);
    ok(&[
        "decrypt",
        "--kek",
        "fresh.pem",
        "--in",
        "rekeyed",
        "--out",
        "reopened",
    ]);
    assert_eq!(
        std::fs::read(dir.join("reopened")).unwrap(),
        b"lifecycle through the CLI"
    );
    let out = run(
        &[
            "decrypt", "--kek", "kek2.pem", "--in", "rekeyed", "--out", "nothing",
        ],
        dir,
        &env,
    );
    assert!(!out.status.success(), "the old key opens the rekeyed file");
    assert!(!dir.join("nothing").exists());
    // A damaged input: refused, and nothing written.
    let mut damaged = std::fs::read(dir.join("sealed")).unwrap();
    let at = damaged.len() - 5;
    damaged[at] ^= 1;
    std::fs::write(dir.join("damaged"), &damaged).unwrap();
    let out = run(
        &[
            "reencrypt",
            "--kek",
            "kek.pem",
            "--new-kek",
            "fresh.pem",
            "--in",
            "damaged",
            "--out",
            "rekeyed2",
        ],
        dir,
        &env,
    );
    assert!(!out.status.success(), "a damaged file was re-encrypted");
    assert!(!dir.join("rekeyed2").exists(), "{}", stderr(&out));
    // Data moves only to a key that may encrypt.
    let out = run(
        &[
            "reencrypt",
            "--kek",
            "fresh.pem",
            "--new-kek",
            "kek.pem",
            "--in",
            "rekeyed",
            "--out",
            "back",
        ],
        dir,
        &env,
    );
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(!dir.join("back").exists());

    let info: serde_json::Value =
        serde_json::from_str(&ok(&["destroy", "--kek", "kek.pem"])).unwrap();
    assert_eq!(info["state"], "destroy-pending");
    assert!(info["destroy_at"].is_string());
    ok(&["cancel-destroy", "--kek", "kek.pem"]);
    let listed = ok(&["list-keys"]);
    let states: Vec<String> = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["state"].to_string())
        .collect();
    assert_eq!(states.len(), 3, "{listed}");
    assert!(states.contains(&"\"deactivated\"".to_string()), "{listed}");
    let out = run(&["suspend", "--key-id", "not-hex"], dir, &env);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["serve", "--destroy-window", "7 days"], dir, &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("30s, 15m, 12h or 7d"),
        "{}",
        stderr(&out)
    );
    assert!(server.stop().success());
}

/// `serve --kek-alg ec`: `generate` makes EC KEKs of every strength that
/// `openssl` reads, `get`, `encrypt`/`decrypt` (both suites, client-side
/// unwrap) and `rotate` work with them, `status` reports the algorithm,
/// `generate --alg` picks among the allowed ones, and an algorithm that is
/// not offered or not known is refused with a one-line reason.
#[test]
fn ec_keks_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = ServerProcess::start(
        dir,
        &[
            "--kek-alg",
            "ec",
            "--allow-kek-algs",
            "ec,rsa",
            "--allow-strengths",
            "128,192,256",
        ],
    );
    let url = server.url.clone();
    let out = run(&["status", "--server", &url], dir, &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kek_alg: ec"));
    std::fs::write(dir.join("plain"), b"Stephan Richter").unwrap();
    for (strength, curve) in [("128", "P-256"), ("192", "P-384"), ("256", "P-521")] {
        let kek = format!("kek-{strength}.pem");
        let out = run(
            &[
                "generate",
                "--server",
                &url,
                "--strength",
                strength,
                "--out",
                &kek,
            ],
            dir,
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let parsed = Kek::from_pem(&std::fs::read_to_string(dir.join(&kek)).unwrap()).unwrap();
        assert_eq!(parsed.curve().unwrap().to_string(), curve);
        // The second suite: OpenSSL when the binary has it, else AWS-LC.
        let other = if cfg!(feature = "cipher-openssl") {
            "openssl"
        } else {
            "awslc"
        };
        for (suite, where_) in [("rustcrypto", None), (other, Some("--client-unwrap"))] {
            let sealed = format!("sealed-{strength}-{suite}");
            let common = ["--server", &url, "--suite", suite, "--kek", &kek];
            let mut args = vec!["encrypt"];
            args.extend(common);
            args.extend(where_);
            args.extend(["--in", "plain", "--out", &sealed]);
            let out = run(&args, dir, &[]);
            assert!(out.status.success(), "{suite}: {}", stderr(&out));
            let mut args = vec!["decrypt"];
            args.extend(common);
            args.extend(where_);
            args.extend(["--in", &sealed]);
            let out = run(&args, dir, &[]);
            assert!(out.status.success(), "{suite}: {}", stderr(&out));
            assert_eq!(out.stdout, b"Stephan Richter");
        }
    }
    let out = run(
        &["describe", "--server", &url, "--kek", "kek-256.pem"],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            described["kek_alg"].as_str(),
            described["strength"].as_u64()
        ),
        (Some("ec"), Some(256))
    );
    // Rotation moves a key to a new EC KEK; the data still opens.
    let out = run(
        &[
            "rotate",
            "--server",
            &url,
            "--kek",
            "kek-128.pem",
            "--out",
            "kek-new.pem",
        ],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &[
            "decrypt",
            "--server",
            &url,
            "--kek",
            "kek-new.pem",
            "--in",
            "sealed-128-rustcrypto",
        ],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"Stephan Richter");
    // An allowed other algorithm, an unknown one, and one not available.
    let out = run(
        &[
            "generate", "--server", &url, "--alg", "rsa", "--out", "rsa.pem",
        ],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rsa = Kek::from_pem(&std::fs::read_to_string(dir.join("rsa.pem")).unwrap()).unwrap();
    assert_eq!(rsa.bits(), 3072);
    let out = run(&["generate", "--server", &url, "--alg", "dsa"], dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    drop(server);

    // A server that offers only RSA refuses EC with the server's reason.
    std::fs::create_dir(dir.join("other")).unwrap();
    let rsa_only = ServerProcess::start(&dir.join("other"), &[]);
    let out = run(
        &["generate", "--server", &rsa_only.url, "--alg", "ec"],
        dir,
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not offered"), "{}", stderr(&out));
    drop(rsa_only);
    // A hybrid server: its KEKs come out as HPKE PEM and work.
    std::fs::create_dir(dir.join("pq")).unwrap();
    let pq = ServerProcess::start(
        &dir.join("pq"),
        &["--kek-alg", "hybrid-pq", "--strength", "256"],
    );
    let out = run(
        &["generate", "--server", &pq.url, "--out", "pq.pem"],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pem = std::fs::read_to_string(dir.join("pq.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN HPKE PRIVATE KEY-----"));
    let out = run(
        &[
            "encrypt",
            "--server",
            &pq.url,
            "--client-unwrap",
            "--kek",
            "pq.pem",
            "--in",
            "plain",
            "--out",
            "pq.sealed",
        ],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &[
            "decrypt",
            "--server",
            &pq.url,
            "--kek",
            "pq.pem",
            "--in",
            "pq.sealed",
        ],
        dir,
        &[],
    );
    assert_eq!(out.stdout, b"Stephan Richter", "{}", stderr(&out));
    drop(pq);
    // The OpenSSL suite has no ML-KEM: a hybrid server on it does not start.
    let openssl_flags: &[&[&str]] = if cfg!(feature = "cipher-openssl") {
        &[
            &["--suite", "openssl", "--kek-alg", "hybrid-pq"][..],
            &[
                "--suite",
                "openssl",
                "--kek-alg",
                "ec",
                "--allow-kek-algs",
                "ec,hybrid-pq",
            ],
        ]
    } else {
        &[]
    };
    for &flags in openssl_flags {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--storage", "memory"])
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let reason = stderr(&out);
        assert_eq!(reason.lines().count(), 1, "{reason}");
        assert!(reason.contains("hybrid-pq"), "{reason}");
    }
}

/// `--suite awslc` end to end, server and client, with every KEK
/// algorithm: what the AWS-LC suite seals the RustCrypto suite opens, with
/// the DEK unwrapped on either side. `status` says whether the suite is a
/// FIPS 140-3 module, and `--require-fips` refuses to start on any other.
#[test]
fn serve_with_the_awslc_suite_and_the_fips_policy() {
    let fips = cfg!(feature = "cipher-awslc-fips");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = ServerProcess::start(
        dir,
        &[
            "--suite",
            "awslc",
            "--kek-pool",
            "0",
            "--allow-kek-algs",
            "rsa,ec,hybrid-pq",
        ],
    );
    let url = server.url.clone();
    let out = run(&["status", "--server", &url], dir, &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("suite: awslc"), "{text}");
    let said = if fips { "fips: yes" } else { "fips: no" };
    assert!(text.contains(said), "{text}");
    std::fs::write(dir.join("plain"), b"Stephan Richter").unwrap();
    for alg in ["rsa", "ec", "hybrid-pq"] {
        let kek = format!("kek-{alg}.pem");
        let out = run(
            &[
                "generate", "--server", &url, "--alg", alg, "--suite", "awslc", "--out", &kek,
            ],
            dir,
            &[],
        );
        assert!(out.status.success(), "{alg}: {}", stderr(&out));
        for (sealer, opener, where_) in [
            ("awslc", "rustcrypto", None),
            ("rustcrypto", "awslc", Some("--client-unwrap")),
        ] {
            let sealed = format!("sealed-{alg}-{sealer}");
            let mut args = vec![
                "encrypt", "--server", &url, "--suite", sealer, "--kek", &kek,
            ];
            args.extend(where_);
            args.extend(["--in", "plain", "--out", &sealed]);
            let out = run(&args, dir, &[]);
            assert!(out.status.success(), "{alg} {sealer}: {}", stderr(&out));
            let mut args = vec![
                "decrypt", "--server", &url, "--suite", opener, "--kek", &kek,
            ];
            args.extend(where_);
            args.extend(["--in", &sealed]);
            let out = run(&args, dir, &[]);
            assert!(out.status.success(), "{alg} {opener}: {}", stderr(&out));
            assert_eq!(
                out.stdout, b"Stephan Richter",
                "{alg}: {sealer} -> {opener}"
            );
        }
    }
    drop(server);

    // --require-fips: only a FIPS module starts; anything else is refused
    // in one line with the usage exit code, before it listens.
    let mut suites = vec!["rustcrypto"];
    if !fips {
        suites.push("awslc");
    }
    for suite in suites {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--storage", "memory"])
            .args(["--suite", suite, "--require-fips"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{suite}");
        let reason = stderr(&out);
        assert_eq!(reason.lines().count(), 1, "{reason}");
        assert!(
            reason.contains("--require-fips") && reason.contains(suite),
            "{reason}"
        );
    }
    if fips {
        let server = ServerProcess::start(dir, &["--suite", "awslc", "--require-fips"]);
        let out = run(&["status", "--server", &server.url], dir, &[]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("fips: yes"));
    }
}

/// `encrypt --message` writes one envelope (v2, as `KeyClient::encrypt`
/// and the Python client do), with `--context` bound to it; `decrypt`
/// tells a message from a stream by its first bytes and opens both; a
/// context for a stream is a usage error.
#[test]
fn messages_with_a_context_and_streams_from_one_decrypt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = ServerProcess::start(dir, &[]);
    let env = [("KEYSERVER_URL", server.url.as_str())];
    let ok = |args: &[&str]| {
        let out = run(args, dir, &env);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    ok(&["generate", "--out", "kek.pem"]);
    std::fs::write(dir.join("plain"), b"Stephan Richter").unwrap();
    ok(&[
        "encrypt",
        "--message",
        "--context",
        "row 42",
        "--kek",
        "kek.pem",
        "--in",
        "plain",
        "--out",
        "message",
    ]);
    ok(&[
        "encrypt", "--kek", "kek.pem", "--in", "plain", "--out", "stream",
    ]);
    let message = std::fs::read(dir.join("message")).unwrap();
    assert_eq!(&message[..4], b"KSE\x02");
    assert_eq!(&std::fs::read(dir.join("stream")).unwrap()[..3], b"KSS");
    ok(&[
        "decrypt",
        "--context",
        "row 42",
        "--kek",
        "kek.pem",
        "--in",
        "message",
        "--out",
        "opened-message",
    ]);
    ok(&[
        "decrypt",
        "--kek",
        "kek.pem",
        "--in",
        "stream",
        "--out",
        "opened-stream",
    ]);
    for opened in ["opened-message", "opened-stream"] {
        assert_eq!(std::fs::read(dir.join(opened)).unwrap(), b"Stephan Richter");
    }
    // Without its context the message does not open (exit 4: not authentic).
    let out = run(
        &["decrypt", "--kek", "kek.pem", "--in", "message"],
        dir,
        &env,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("decryption failed"),
        "{}",
        stderr(&out)
    );
    for args in [
        &[
            "encrypt",
            "--context",
            "x",
            "--kek",
            "kek.pem",
            "--in",
            "plain",
        ][..],
        &[
            "decrypt",
            "--context",
            "x",
            "--kek",
            "kek.pem",
            "--in",
            "stream",
        ][..],
    ] {
        let out = run(args, dir, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--context"), "{}", stderr(&out));
    }
}

/// `keyserver backup` (and `copy --from`) of a file store while its server
/// runs and makes keys: no stop, the server's files untouched, and every
/// key made before the backup began is in it and restores with its DEK.
#[test]
fn a_running_file_store_backs_up_without_a_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = ServerProcess::start(dir, &["--kek-pool", "0", "--kek-alg", "ec"]);
    let env = [("KEYSERVER_URL", server.url.as_str())];
    let mut before = Vec::new();
    for i in 0..20 {
        let out = run(&["generate", "--out", &format!("k{i}.pem")], dir, &env);
        assert!(out.status.success(), "{}", stderr(&out));
        let dek = run(&["get", "--kek", &format!("k{i}.pem")], dir, &env).stdout;
        before.push((format!("k{i}.pem"), dek));
    }
    // Keys keep being made while the backup reads.
    let url = server.url.clone();
    let dir_path = dir.to_path_buf();
    let maker = std::thread::spawn(move || {
        for i in 0..20 {
            let out = run(
                &["generate", "--out", &format!("during{i}.pem")],
                &dir_path,
                &[("KEYSERVER_URL", url.as_str())],
            );
            assert!(out.status.success(), "{}", stderr(&out));
        }
    });
    let storage = format!("file:{}", dir.join("data").display());
    let out = run(
        &["backup", "--storage", &storage, "--out", "live.backup"],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &["copy", "--from", &storage, "--to", "file:copied"],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    maker.join().unwrap();
    // The server never noticed.
    let out = run(&["get", "--kek", "k0.pem"], dir, &env);
    assert_eq!(out.stdout, before[0].1);
    assert_eq!(server.stop().code(), Some(0));

    // Restored (and copied) elsewhere, every earlier key gives its DEK.
    let out = run(
        &[
            "restore",
            "--in",
            "live.backup",
            "--storage",
            "file:restored",
        ],
        dir,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for store in ["restored", "copied"] {
        let (child, url) = crate::common::spawn_server(
            Command::new(BIN)
                .args(["serve", "--listen", "127.0.0.1:0", "--storage"])
                .arg(format!("file:{}", dir.join(store).display()))
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        );
        let mut restored = ServerProcess { child, url };
        for (kek, dek) in &before {
            let out = run(
                &["get", "--kek", kek],
                dir,
                &[("KEYSERVER_URL", restored.url.as_str())],
            );
            assert_eq!(&out.stdout, dek, "{store} {kek}: {}", stderr(&out));
        }
        let _ = restored.child.kill();
    }
}
