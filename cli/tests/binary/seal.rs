//! `serve --seal pkcs11:…` against SoftHSM2 with a throwaway token made
//! here: records sealed at rest, the store useless without the token, a
//! store moved from none to sealed, between two keys and back, the old key
//! destroyed, a server that cannot use its token refusing to start or
//! answering code 5 with `/readyz` 503 until the token is back.
//! `cargo test -p keyserver-cli --test binary seal -- --ignored` (CI does).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_keyserver");
const PIN: &str = "11223344";

/// A SoftHSM2 token in its own folder (its configuration, a PIN file only
/// its owner reads).
struct Token {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Token {
    fn new(label: &str) -> Token {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", PIN, "--so-pin", "99887766"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util (apt-get install softhsm2)");
        assert!(out.status.success(), "{out:?}");
        let pin = dir.path().join("pin");
        std::fs::write(&pin, format!("{PIN}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        Token { dir, conf }
    }

    fn uri(&self, label: &str, object: &str) -> String {
        let module = [
            "/usr/lib/softhsm/libsofthsm2.so",
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("SoftHSM2's module");
        format!(
            "pkcs11:token={label};object={object}?module-path={module}&pin-source=file:{}",
            self.dir.path().join("pin").display()
        )
    }

    fn run(&self, args: &[&str], url: &str) -> Output {
        Command::new(BIN)
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("KEYSERVER_URL", url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `keyserver serve` on `data` with `extra`; its URL, or its failure.
    fn serve(&self, data: &Path, extra: &[&str]) -> Result<(Serving, String), Output> {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--kek-pool", "0"])
            .arg("--storage")
            .arg(format!("file:{}", data.display()))
            .args(extra)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            first.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&first).to_string();
        match line.split_whitespace().find(|w| w.starts_with("http://")) {
            Some(url) => {
                let url = url.to_string();
                std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
                let mut stderr = child.stderr.take().unwrap();
                std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
                Ok((Serving(child), url))
            }
            None => Err(child.wait_with_output().unwrap()),
        }
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// A server process, killed if the test ends (or fails) before `stop`.
#[derive(Debug)]
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop(mut serving: Serving) {
    let _ = Command::new("kill")
        .args(["-TERM", &serving.0.id().to_string()])
        .status();
    let _ = serving.0.wait();
}

/// The status code of `GET /readyz`.
fn readyz(url: &str) -> u16 {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The versions of the records in a file store (byte 4 of each `.rec`
/// file: 1 unsealed, 2 sealed).
fn record_versions(data: &Path) -> Vec<u8> {
    let mut versions = Vec::new();
    for shard in std::fs::read_dir(data).unwrap().flatten() {
        if !shard.path().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let name = file.file_name().to_string_lossy().to_string();
            if name.ends_with(".rec") {
                let bytes = std::fs::read(file.path()).unwrap();
                if bytes.starts_with(b"KSWR") {
                    versions.push(bytes[4]);
                }
            }
        }
    }
    versions
}

#[test]
#[ignore = "needs SoftHSM2 (apt-get install softhsm2)"]
fn a_sealed_server_keeps_its_store_useless_without_the_token() {
    let token = Token::new("ks");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let kek = work.path().join("kek.pem");
    let one = token.uri("ks", "master-1");
    let two = token.uri("ks", "master-2");
    let out = token.run(&["seal", "new-key", "--seal", &one], "");
    assert!(out.status.success(), "{}", text(&out));

    // Keys from before sealing.
    let (child, url) = token.serve(&data, &[]).unwrap();
    let out = token.run(&["generate", "--out", kek.to_str().unwrap()], &url);
    assert!(out.status.success(), "{}", text(&out));
    let dek = token
        .run(&["get", "--kek", kek.to_str().unwrap()], &url)
        .stdout;
    stop(child);
    assert_eq!(record_versions(&data), vec![1]);

    // Sealing on, with --reseal: the old record is sealed in the
    // background, new ones are sealed as written, all serve.
    let (child, url) = token.serve(&data, &["--seal", &one, "--reseal"]).unwrap();
    assert_eq!(readyz(&url), 200);
    let kek2 = work.path().join("kek2.pem");
    let out = token.run(&["generate", "--out", kek2.to_str().unwrap()], &url);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        token
            .run(&["get", "--kek", kek.to_str().unwrap()], &url)
            .stdout,
        dek
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while record_versions(&data) != vec![2, 2] {
        assert!(Instant::now() < deadline, "{:?}", record_versions(&data));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Client-side unwrap gets the record unsealed (the wire is unchanged).
    let out = token.run(
        &["get", "--client-unwrap", "--kek", kek.to_str().unwrap()],
        &url,
    );
    assert_eq!(out.stdout, dek, "{}", text(&out));
    stop(child);

    // Without the token: the store and the KEK give nothing, code 5.
    let (child, url) = token.serve(&data, &[]).unwrap();
    let out = token.run(&["get", "--kek", kek.to_str().unwrap()], &url);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("sealed under master key"),
        "{}",
        text(&out)
    );
    stop(child);

    // Offline, to a second key of the token; it resumes (nothing left).
    let out = token.run(&["seal", "new-key", "--seal", &two], "");
    assert!(out.status.success(), "{}", text(&out));
    let storage = format!("file:{}", data.display());
    let out = token.run(&["reseal", "--storage", &storage, "--to", &two], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 resealed"), "{}", text(&out));
    let out = token.run(&["reseal", "--storage", &storage, "--to", &two], "");
    assert!(
        text(&out).contains("0 resealed, 2 already"),
        "{}",
        text(&out)
    );
    // The old key can go; destroying needs the confirmation.
    let out = token.run(&["seal", "destroy-key", "--seal", &one], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = token.run(
        &[
            "seal",
            "destroy-key",
            "--seal",
            &one,
            "--yes-destroy-every-record-sealed-under-it",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let (child, url) = token.serve(&data, &["--seal", &two]).unwrap();
    assert_eq!(
        token
            .run(&["get", "--kek", kek2.to_str().unwrap()], &url)
            .stdout,
        token
            .run(&["get", "--kek", kek2.to_str().unwrap()], &url)
            .stdout
    );
    assert_eq!(
        token
            .run(&["get", "--kek", kek.to_str().unwrap()], &url)
            .stdout,
        dek
    );

    // The token goes away while serving: code 5 and /readyz 503; it comes
    // back: the server serves again by itself.
    let tokens = token.dir.path().join("tokens");
    let away = token.dir.path().join("away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(&url) != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz stays up without the token"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing is served from memory meanwhile: every read needs the token.
    let out = token.run(&["get", "--kek", kek.to_str().unwrap()], &url);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("seal storage failed") && text(&out).contains("token"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(&url) != 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz stays down with the token back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(child);

    // Back to unsealed; then destroying the last key shreds nothing.
    let out = token.run(
        &[
            "reseal",
            "--storage",
            &storage,
            "--to",
            "none",
            "--from",
            &two,
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(record_versions(&data), vec![1, 1]);
}

#[test]
#[ignore = "needs SoftHSM2 (apt-get install softhsm2)"]
fn destroying_the_master_key_shreds_the_store_and_a_bad_token_stops_the_start() {
    let token = Token::new("shred");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let kek = work.path().join("kek.pem");
    let key = token.uri("shred", "master-1");
    assert!(token
        .run(&["seal", "new-key", "--seal", &key], "")
        .status
        .success());
    let (child, url) = token.serve(&data, &["--seal", &key]).unwrap();
    let out = token.run(&["generate", "--out", kek.to_str().unwrap()], &url);
    assert!(out.status.success(), "{}", text(&out));
    stop(child);
    let out = token.run(
        &[
            "seal",
            "destroy-key",
            "--seal",
            &key,
            "--yes-destroy-every-record-sealed-under-it",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    // The server cannot start on a key that is gone; under a new key, the
    // old records are unreadable for good.
    let err = token.serve(&data, &["--seal", &key]).unwrap_err();
    assert!(text(&err).contains("no AES key labelled"), "{}", text(&err));
    let fresh = token.uri("shred", "master-2");
    assert!(token
        .run(&["seal", "new-key", "--seal", &fresh], "")
        .status
        .success());
    let (child, url) = token.serve(&data, &["--seal", &fresh]).unwrap();
    let out = token.run(&["get", "--kek", kek.to_str().unwrap()], &url);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not in"), "{}", text(&out));
    stop(child);

    // A wrong PIN, a missing module, an absent token, a PIN in the URI:
    // the server does not start, and says why (never the PIN).
    let wrong = work.path().join("wrong");
    std::fs::write(&wrong, "00000000\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pin_path = token.dir.path().join("pin").display().to_string();
    let cases = [
        (
            fresh.replace(&pin_path, wrong.to_str().unwrap()),
            "PIN is wrong",
        ),
        (
            fresh.replace("softhsm2.so", "nothing.so"),
            "cannot load the PKCS#11 module",
        ),
        (fresh.replace("token=shred", "token=elsewhere"), "not found"),
        (
            format!("{}&pin-value=00000000", fresh.split('&').next().unwrap()),
            "pin-value is refused",
        ),
    ];
    for (uri, why) in cases {
        let err = token.serve(&data, &["--seal", &uri]).unwrap_err();
        assert!(!err.status.success());
        assert!(text(&err).contains(why), "{why}: {}", text(&err));
        assert!(!text(&err).contains("00000000"), "{}", text(&err));
    }
}
