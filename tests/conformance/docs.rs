//! docs/PROTOCOL.md works as written: its Python (`xmlrpc.client`) and curl
//! examples run against a live server, when python3, curl and openssl exist.

use std::process::Command;

use crate::transport::{loopback, new_server};

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
    let server = new_server();
    let http = loopback(server.clone()).await;
    let url = http.url();
    let dir = tempfile::tempdir().unwrap();

    let python = blocks(&doc, "python");
    assert_eq!(python.len(), 2);
    let mut stdout = String::new();
    for block in &python {
        let script = block.replace("http://127.0.0.1:8731", &url);
        let out = tokio::task::spawn_blocking({
            let dir = dir.path().to_path_buf();
            move || {
                Command::new("python3")
                    .arg("-c")
                    .arg(&script)
                    .current_dir(dir)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        stdout.push_str(&String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "python example failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for expected in [
        "DEK bytes: 16",
        "keys on the server: 1 suite: rustcrypto",
        "contains: True",
        "record bytes: 468",
        "fault 2",
        "methods: generate get_key get_wrapped contains status system.multicall \
         system.listMethods system.methodHelp",
        "help: contains(key_id) -> boolean",
        "DEKs in one request: [16, 16, 16]",
        "multicall fault 2",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }

    let shell = blocks(&doc, "sh");
    assert!(shell.len() >= 2);
    for (i, block) in shell.iter().enumerate() {
        let script = block.replace("http://127.0.0.1:8731", &url);
        let out = tokio::task::spawn_blocking({
            let dir = dir.path().to_path_buf();
            move || {
                Command::new("bash")
                    .args(["-euo", "pipefail", "-c", &script])
                    .current_dir(dir)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "shell example {i} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if i == 0 {
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
    for (program, args, script) in [
        ("python3", vec!["-c"], python[0].clone()),
        ("bash", vec!["-euo", "pipefail", "-c"], curl[0].clone()),
    ] {
        let script = script.replace("http://127.0.0.1:8731", &url);
        let out = tokio::task::spawn_blocking({
            let dir = dir.path().to_path_buf();
            move || {
                Command::new(program)
                    .args(&args)
                    .arg(&script)
                    .current_dir(dir)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "README {program} example failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        match program {
            "python3" => assert!(stdout.contains("README: DEK bytes 16"), "{stdout}"),
            _ => assert!(stdout.contains("\"result\""), "{stdout}"),
        }
    }
    assert_eq!(
        server.len(),
        6,
        "one key from Python, three from its multicall, one from curl, one from the README"
    );
    http.shutdown().await;
}
