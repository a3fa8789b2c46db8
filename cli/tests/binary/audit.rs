//! The audit log and the metrics, through the `keyserver` binary: every call
//! recorded with its principal, the chain verified by `keyserver audit
//! verify` (and broken by any edit), a kill -9 in a storm of `generate`
//! calls, a log that cannot be written, and `/metrics` parsed by a strict
//! OpenMetrics parser.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyserver::policy::AuthPolicy;
use keyserver::KeyService;

const BIN: &str = env!("CARGO_BIN_EXE_keyserver");
const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A directory with an audit key and an auth file granting `app` generate,
/// get_key and status.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("audit.key");
    let out = Command::new(BIN)
        .args(["audit", "new-key", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[principal]]\nname = \"app\"\ntoken_sha256 = \"{}\"\n\
             methods = [\"generate\", \"get_key\", \"status\"]\n",
            AuthPolicy::token_hash(TOKEN)
        ),
    )
    .unwrap();
    let log = dir.path().join("audit.log");
    (dir, key, auth, log)
}

fn serve(key: &Path, auth: &Path, log: &Path, extra: &[&str]) -> (std::process::Child, String) {
    crate::common::spawn_server(
        Command::new(BIN)
            .args(["serve", "--storage", "memory", "--listen", "127.0.0.1:0"])
            .arg("--auth")
            .arg(auth)
            .arg("--audit-log")
            .arg(log)
            .arg("--audit-key")
            .arg(key)
            .args(extra)
            .stderr(Stdio::null()),
    )
}

fn verify(key: &Path, logs: &[PathBuf]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--audit-key"])
        .arg(key)
        .args(logs)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn verify_torn(key: &Path, log: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--allow-torn-tail", "--audit-key"])
        .arg(key)
        .arg(log)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

use crate::common::clients;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_recorded_and_any_edit_is_caught() {
    let (_dir, key, auth, log) = setup();
    let (child, url) = serve(&key, &auth, &log, &[]);
    let mut ids = Vec::new();
    for client in clients(&url, Some(TOKEN)) {
        let kek = client.generate(None).await.unwrap();
        client.get_key(&kek).await.unwrap();
        ids.push(kek.id().to_string());
    }
    for client in clients(&url, None) {
        assert_eq!(client.generate(None).await.unwrap_err().code(), 13);
        client.status().await.unwrap();
    }
    stop(child);

    let (ok, text) = verify(&key, std::slice::from_ref(&log));
    assert!(ok, "{text}");
    // open, start, 8 calls and the begun lines of the two keys made, stop.
    assert!(text.contains("13 lines"), "{text}");
    assert!(text.contains("head: reaches seq 13"), "{text}");
    let everything = lines(&log);
    let events: Vec<&str> = everything
        .iter()
        .filter_map(|l| l["event"].as_str())
        .collect();
    assert_eq!(events, ["open", "start", "stop"]);
    // Each key made has its begun line (written while it was stored),
    // before its call's own line.
    let begun: Vec<(usize, &str)> = everything
        .iter()
        .enumerate()
        .filter(|(_, l)| l["begun"] == true)
        .map(|(i, l)| (i, l["key_id"].as_str().unwrap()))
        .collect();
    assert_eq!(begun.len(), 2, "one begun line per key made");
    for ((at, id), made) in begun.iter().zip(&ids) {
        assert_eq!(id, made);
        assert_eq!(everything[at + 1]["key_id"], made.as_str());
        assert_eq!(everything[at + 1]["method"], "generate");
        assert!(
            everything[*at]["code"].is_null(),
            "a begun line has no outcome"
        );
    }
    let all: Vec<&serde_json::Value> = everything
        .iter()
        .filter(|l| l["event"].is_null() && l["begun"].is_null())
        .collect();
    let calls: Vec<(String, String, i64)> = all
        .iter()
        .map(|l| {
            (
                l["principal"].as_str().unwrap().to_owned(),
                l["method"].as_str().unwrap().to_owned(),
                l["code"].as_i64().unwrap(),
            )
        })
        .collect();
    let expect = |p: &str, m: &str, c: i64| (p.to_owned(), m.to_owned(), c);
    assert_eq!(
        calls,
        vec![
            expect("app", "generate", 0),
            expect("app", "get_key", 0),
            expect("app", "generate", 0),
            expect("app", "get_key", 0),
            expect("anonymous", "generate", 13),
            expect("anonymous", "status", 0),
            expect("anonymous", "generate", 13),
            expect("anonymous", "status", 0),
        ]
    );
    for (line, id) in [(0, &ids[0]), (1, &ids[0]), (2, &ids[1])] {
        assert_eq!(all[line]["key_id"], id.as_str());
        assert!(all[line]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
        assert_eq!(
            all[line]["protocol"],
            if line < 2 { "xmlrpc" } else { "jsonrpc" }
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(TOKEN), "a token reached the audit log");
    assert!(!text.contains("PRIVATE"), "a key reached the audit log");

    // One changed byte: verify fails naming the line.
    let changed = text.replacen("\"get_key\"", "\"get_kez\"", 1);
    std::fs::write(&log, changed).unwrap();
    let (ok, text) = verify(&key, std::slice::from_ref(&log));
    assert!(!ok);
    assert!(text.contains("line 5"), "{text}");
    // The server refuses to append to a log that does not verify.
    let out = Command::new(BIN)
        .args(["serve", "--storage", "memory", "--listen", "127.0.0.1:0"])
        .arg("--audit-log")
        .arg(&log)
        .arg("--audit-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify at line 5"),
        "{out:?}"
    );
}

/// A restart continues the chain of the file it finds; the key file must
/// be private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_the_chain_and_the_key_must_be_private() {
    let (_dir, key, auth, log) = setup();
    for _ in 0..2 {
        let (child, url) = serve(&key, &auth, &log, &[]);
        for client in clients(&url, Some(TOKEN)) {
            client.generate(None).await.unwrap();
        }
        stop(child);
    }
    let (ok, text) = verify(&key, std::slice::from_ref(&log));
    assert!(ok, "{text}");
    // Each run: start, 2 calls and their keys' begun lines, stop; and the
    // file's open line.
    assert!(text.contains("13 lines"), "{text}");
    assert!(
        text.contains("starts: 2, after a crash or kill: 0"),
        "{text}"
    );
    // Lines cut from the end: verify fails, and the server will not
    // carry on from the cut log.
    let whole = std::fs::read_to_string(&log).unwrap();
    let cut: String = whole.lines().take(6).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, &cut).unwrap();
    let (ok, text) = verify(&key, std::slice::from_ref(&log));
    assert!(
        !ok && text.contains("lines were cut from its end"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["serve", "--storage", "memory", "--listen", "127.0.0.1:0"])
        .arg("--audit-log")
        .arg(&log)
        .arg("--audit-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cut from its end"),
        "{out:?}"
    );
    std::fs::write(&log, &whole).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--storage", "memory", "--listen", "127.0.0.1:0"])
        .arg("--audit-log")
        .arg(&log)
        .arg("--audit-key")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{out:?}"
    );
}

/// kill -9 in the middle of a storm of generate calls: the log verifies up
/// to its last complete line, and every key id a client received is in it
/// (a generate is answered only once its begun line is on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_a_generate_storm_loses_no_acknowledged_line() {
    let (_dir, key, auth, log) = setup();
    let (mut child, url) = serve(
        &key,
        &auth,
        &log,
        &["--kek-pool", "16", "--kek-workers", "1"],
    );
    // A warm pool: the storm measures the log, not key generation.
    for _ in 0..600 {
        let metrics = crate::common::raw_http(false)
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let ready = metrics
            .lines()
            .find_map(|l| l.strip_prefix("keyserver_kek_pool_ready "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if ready >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = url.clone();
        let received = Arc::clone(&received);
        tasks.push(tokio::spawn(async move {
            let client = clients(&url, Some(TOKEN)).swap_remove(i % 2);
            while let Ok(kek) = client.generate(None).await {
                received.lock().unwrap().push(kek.id().to_string());
            }
        }));
    }
    // Let the storm run, then kill the server without warning.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let received = received.lock().unwrap().clone();
    assert!(received.len() >= 6, "only {} keys made", received.len());
    // The kill may have cut a line being written: checked up to it.
    let (ok, text) = verify_torn(&key, &log);
    assert!(ok, "{text}");
    let text = std::fs::read_to_string(&log).unwrap();
    // A key answered has its begun line on disk (its call's own line,
    // written without a sync of its own, may be lost with the process).
    let logged: HashSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["method"] == "generate" && l["begun"] == true)
        .map(|l| l["key_id"].as_str().unwrap().to_owned())
        .collect();
    for id in &received {
        assert!(logged.contains(id), "key {id} was received but not logged");
    }
    // A server started on the log continues it.
    let (child, url) = serve(&key, &auth, &log, &[]);
    clients(&url, Some(TOKEN))[0].generate(None).await.unwrap();
    stop(child);
    let (ok, text) = verify(&key, std::slice::from_ref(&log));
    assert!(ok, "{text}");
    assert!(
        text.contains("starts: 2, after a crash or kill: 1"),
        "{text}"
    );
}

/// An audit log that cannot be written (here: the process's file-size
/// limit, as a full disk would) refuses every call with code 5, and
/// /readyz says not ready; nothing is done unrecorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_refuses_every_call() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        crate::common::unavailable("prlimit (util-linux)", "not installed");
        return;
    }
    let (_dir, key, auth, log) = setup();
    let (child, url) = crate::common::spawn_server(
        Command::new("prlimit")
            .arg("--fsize=4000")
            .arg(BIN)
            .args(["serve", "--storage", "memory", "--listen", "127.0.0.1:0"])
            .arg("--auth")
            .arg(&auth)
            .arg("--audit-log")
            .arg(&log)
            .arg("--audit-key")
            .arg(&key)
            .stderr(Stdio::null()),
    );
    let client = clients(&url, Some(TOKEN)).swap_remove(1);
    let mut made = 0;
    let mut first_error = None;
    for _ in 0..40 {
        match client.generate(None).await {
            Ok(_) => made += 1,
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    let err = first_error.expect("the log never filled up");
    assert_eq!(err.code(), 5, "{err}");
    assert!(err.to_string().contains("audit"), "{err}");
    assert!(made >= 3, "{made}");
    // Everything is refused now, and the probe says so.
    assert_eq!(client.status().await.unwrap_err().code(), 5);
    let ready = crate::common::raw_http(false)
        .get(format!("{url}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let health = crate::common::raw_http(false)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    stop(child);
    // What was written verifies, and holds every key made: its begun line
    // was on disk before it was answered. The call's own line, written
    // without a sync of its own, may have shared the write that did not
    // fit: it is then kept for after a `resume` line, which this full log
    // never gets to write.
    let (ok, text) = verify(&key, std::slice::from_ref(&log));
    assert!(ok, "{text}");
    let all = lines(&log);
    let begun = all
        .iter()
        .filter(|l| l["method"] == "generate" && l["begun"] == true)
        .count();
    let generated = all
        .iter()
        .filter(|l| l["method"] == "generate" && l["code"] == 0)
        .count();
    assert_eq!(begun, made);
    assert!(
        (made.saturating_sub(1)..=made).contains(&generated),
        "{generated} of {made}"
    );
}

/// `/metrics` parses as OpenMetrics text (Python's prometheus_client, in
/// strict mode) and counts what was done; no key id is a label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_what_was_done() {
    let python = "/usr/bin/python3";
    let has_parser = Command::new(python)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_parser {
        crate::common::unavailable("the metrics test", "no python3-prometheus-client");
        return;
    }
    let (_dir, key, auth, log) = setup();
    let (child, url) = serve(&key, &auth, &log, &["--kek-pool", "4"]);
    let mut ids = Vec::new();
    for client in clients(&url, Some(TOKEN)) {
        for _ in 0..3 {
            let kek = client.generate(None).await.unwrap();
            ids.push(kek.id().to_string());
        }
        client.status().await.unwrap();
    }
    for client in clients(&url, None) {
        assert_eq!(client.generate(None).await.unwrap_err().code(), 13);
    }
    // The lines nobody waits for (the refused calls') linger up to 20 ms
    // before they are written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = crate::common::raw_http(false)
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    stop(child);
    for id in &ids {
        assert!(!text.contains(id.as_str()), "a key id in the metrics");
    }
    // The strict parser: every sample as "name{labels} value" lines.
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut parser = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = String::from_utf8(out.stdout).unwrap();
    let value = |name: &str| -> f64 {
        samples
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{samples}"))
    };
    assert_eq!(value("keyserver_calls_total{code=0,method=generate}"), 6.0);
    assert_eq!(value("keyserver_calls_total{code=0,method=status}"), 2.0);
    assert_eq!(value("keyserver_calls_total{code=13,method=generate}"), 2.0);
    assert_eq!(
        value("keyserver_call_duration_seconds_count{method=generate}"),
        8.0
    );
    assert_eq!(value("keyserver_keys_stored{}"), 6.0);
    assert!(value("keyserver_kek_pool_ready{}") <= 4.0);
    assert_eq!(value("keyserver_generate_waiting{}"), 0.0);
    assert!(value("keyserver_connections_open{}") >= 1.0);
    // The open and start lines, 10 calls and the begun lines of 6 keys.
    assert_eq!(value("keyserver_audit_lines_total{}"), 18.0);
    assert!(value("keyserver_audit_sync_duration_seconds_count{}") >= 1.0);
    assert_eq!(value("keyserver_audit_writable{}"), 1.0);
}
