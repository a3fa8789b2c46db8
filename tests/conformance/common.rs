//! Shared helpers: fixtures and vectors.

#![allow(dead_code)]

use keyserver::Kek;

/// The checkout's root (these helpers are shared by the library's tests and
/// the binary's, in `cli/`).
pub fn root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|dir| dir.join("testing/fixtures").is_dir())
        .unwrap_or(here)
        .to_path_buf()
}

/// The checked-in KEK of `bits` bits (2048, 3072, 7680, 15360), made with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:BITS`.
pub fn fixture_kek(bits: usize) -> Kek {
    let path = format!("{}/testing/fixtures/kek-rsa{bits}.pem", root().display());
    let pem = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Kek::from_pem(&pem).unwrap()
}

/// A vector file under testing/vectors/, parsed.
pub fn vectors(name: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/testing/vectors/{name}", root().display());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A hex field of a vector.
pub fn hex_field(v: &serde_json::Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().unwrap()).unwrap()
}

/// `n` bytes of a repeating, non-trivial pattern.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// A check that cannot run on this machine (a tool or a privilege is
/// missing). In CI (`CI` set) that is a failure: `.ci/run` installs what
/// these tests need, so nothing may be skipped there. Elsewhere the skip is
/// written straight to the process's stderr, past the test harness's
/// capture, so it is seen rather than read as "ok".
pub fn unavailable(what: &str, why: impl std::fmt::Display) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} cannot run: {why} (CI must provide it)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {why}");
}

/// A raw HTTP client (HTTP/2 with prior knowledge if `http2`), with its TLS
/// provider given explicitly (never a process-wide default).
#[cfg(all(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub fn raw_http(http2: bool) -> reqwest::Client {
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let builder = reqwest::Client::builder().use_preconfigured_tls(tls);
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder
    };
    builder.build().unwrap()
}

/// Starts `command` (a `keyserver serve`), reads the URL from the line it
/// prints when it listens, and keeps draining its stdout.
pub fn spawn_server(command: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_string();
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with the `openssl` command line in `dir`. `None` if openssl is missing.
pub fn make_pki(dir: &std::path::Path) -> Option<()> {
    let run = |args: &[&str]| -> Option<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=keyserver test CA",
    ])?;
    crate::common::issue(
        dir,
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "2",
    );
    crate::common::issue(dir, "client", "extendedKeyUsage=clientAuth\n", "2");
    Some(())
}

/// Issues a certificate `name` from the CA in `dir` with the extension lines
/// `ext`, valid for `days` (0: it expires the second it is made).
pub fn issue(dir: &std::path::Path, name: &str, ext: &str, days: &str) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &format!("{name}.key"),
        "-out",
        &format!("{name}.csr"),
        "-subj",
        &format!("/CN={name}"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        days,
        "-out",
        &format!("{name}.pem"),
        "-extfile",
        &format!("{name}.ext"),
    ]);
}

/// An XML-RPC and a JSON-RPC client of `url`, with `token` if given.
#[cfg(all(feature = "transport-xmlrpc", feature = "transport-jsonrpc"))]
pub fn clients(url: &str, token: Option<&str>) -> Vec<Box<dyn keyserver::Transport>> {
    use keyserver::transports::{ClientOptions, JsonRpc, Token, XmlRpc};
    let options = ClientOptions {
        token: token.map(Token::new),
        ..Default::default()
    };
    vec![
        Box::new(XmlRpc::with_options(url, options.clone()).unwrap()),
        Box::new(JsonRpc::with_options(url, options).unwrap()),
    ]
}

/// A new, empty PostgreSQL database for one test, on the cluster named by
/// `KEYSERVER_TEST_POSTGRES` (a URL whose role may create databases:
/// `scripts/pg-cluster start DIR` prints one, and `.ci/run` sets it).
/// `None` (the test skips; in CI it fails) when that is not set.
#[cfg(feature = "storage-postgres")]
pub async fn postgres_db(what: &str) -> Option<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Ok(admin) = std::env::var("KEYSERVER_TEST_POSTGRES") else {
        unavailable(
            what,
            "KEYSERVER_TEST_POSTGRES is not set (scripts/pg-cluster start DIR)",
        );
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("KEYSERVER_TEST_POSTGRES={admin}: {e}"));
    let task = tokio::spawn(connection);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!(
        "ks_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    let (base, _) = admin
        .rsplit_once('/')
        .expect("KEYSERVER_TEST_POSTGRES is a URL with a database");
    Some(format!("{base}/{name}"))
}

/// Runs the `openssl` command line; `None` (and a printed reason) if absent.
pub fn openssl(args: &[&str]) -> Option<Vec<u8>> {
    match std::process::Command::new("openssl").args(args).output() {
        Ok(out) if out.status.success() => Some(out.stdout),
        Ok(out) => panic!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            unavailable("the openssl command-line checks", e);
            None
        }
    }
}
