//! docs/PROTOCOL.md works as written: its Python (`xmlrpc.client`) and curl
//! examples run against a live server, when python3, curl and openssl exist.

use std::process::Command;

use crate::transport::loopback;

/// The bodies of the fenced blocks of `lang` in `markdown`.
fn blocks(markdown: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_end() == fence => current = Some(String::new()),
            Some(body) if line.trim_end() == "```" => {
                out.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Runs an example (`python3 -c SCRIPT` or `bash -euo pipefail -c SCRIPT`)
/// against the server at `url` in `dir`; its stdout, after checking that it
/// succeeded.
async fn run_example(
    what: &str,
    program: &'static str,
    script: &str,
    url: &str,
    dir: &std::path::Path,
) -> String {
    let script = script.replace("http://127.0.0.1:8731", url);
    let dir = dir.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(program);
        if program == "bash" {
            cmd.args(["-euo", "pipefail"]);
        }
        cmd.arg("-c")
            .arg(&script)
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_examples_work_as_written() {
    let missing: Vec<_> = ["python3", "curl", "openssl"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        crate::common::unavailable("the PROTOCOL.md examples", format!("missing {missing:?}"));
        return;
    }
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    // The server of the examples is the quick start's (its own strength,
    // 128, only) that also offers EC KEKs (`--allow-kek-algs rsa,ec`).
    let server = std::sync::Arc::new(
        keyserver::KeyServer::new(
            keyserver::backends::RustCrypto::new(),
            keyserver::backends::MemoryStorage::new(),
        )
        .with_allowed_strengths(&[keyserver::Strength::S128])
        .with_allowed_kek_algs(&[keyserver::KekAlg::Ec]),
    );
    let http = loopback(server.clone()).await;
    let url = http.url();
    let dir = tempfile::tempdir().unwrap();

    let python = blocks(&doc, "python");
    assert_eq!(python.len(), 3);
    let mut stdout = String::new();
    for block in &python {
        stdout.push_str(&run_example("python example", "python3", block, &url, dir.path()).await);
    }
    for expected in [
        "DEK bytes: 16",
        "keys on the server: 1 suite: rustcrypto",
        "contains: True",
        "record bytes: 468",
        "fault 2",
        "methods: generate get_key get_wrapped contains status describe rotate suspend resume \
         compromised destroy cancel_destroy list_keys system.multicall system.listMethods \
         system.methodHelp",
        "help: contains(key_id) -> boolean",
        "DEKs in one request: [16, 16, 16]",
        "multicall fault 2",
        "state: suspended",
        "suspended get_key fault 14",
        "same DEK after rotate: True",
        "destroy_at set: True state: destroy-pending",
        "cancelled: active",
        "ec DEK bytes: 16",
        "server kek_alg: rsa",
        "unknown algorithm fault 4",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }

    let shell = blocks(&doc, "sh");
    assert!(shell.len() >= 2);
    let mut first = true;
    for (i, block) in shell.iter().enumerate() {
        let stdout = run_example(
            &format!("shell example {i}"),
            "bash",
            block,
            &url,
            dir.path(),
        )
        .await;
        if block.contains("describe") {
            // describe answered the lifecycle of the key curl made.
            let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(answer["result"]["state"], "active", "{stdout}");
            assert_eq!(answer["result"]["strength"], 128, "{stdout}");
            assert!(answer["result"]["deactivate_at"].is_string(), "{stdout}");
        } else if std::mem::take(&mut first) {
            // get_key answered a base64 DEK, and contains answered true.
            // (curl prints the answers back to back, without newlines.)
            let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
                .into_iter()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(answers.len(), 2, "{stdout}");
            assert_eq!(answers[0]["result"].as_str().unwrap().len(), 24, "{stdout}");
            assert_eq!(answers[1]["result"], serde_json::json!(true), "{stdout}");
        } else {
            assert!(stdout.contains("<name>keys</name>"), "{stdout}");
        }
    }
    // The README's Python and curl examples, against the same server.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let python = blocks(&readme, "python");
    assert_eq!(python.len(), 1);
    let curl: Vec<String> = blocks(&readme, "sh")
        .into_iter()
        .filter(|b| b.trim_start().starts_with("curl"))
        .collect();
    assert_eq!(curl.len(), 1);
    for (program, script) in [("python3", &python[0]), ("bash", &curl[0])] {
        let stdout = run_example(
            &format!("README {program} example"),
            program,
            script,
            &url,
            dir.path(),
        )
        .await;
        match program {
            "python3" => assert!(stdout.contains("README: DEK bytes 16"), "{stdout}"),
            _ => assert!(stdout.contains("\"result\""), "{stdout}"),
        }
    }
    assert_eq!(
        server.len(),
        10,
        "one key from Python, three from its multicall, three from the lifecycle example \
         (generate, rotate, an EC KEK), one from curl, one from the lifecycle curl, one from \
         the README"
    );
    http.shutdown().await;
}
