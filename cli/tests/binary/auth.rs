//! Principals and permissions end to end: tokens as Bearer or Basic
//! credentials, every method a principal lacks refused with code 13 over
//! both protocols, Python's standard library with the token in the URL, and
//! a revocation by SIGHUP.

use std::process::{Command, Stdio};
use std::sync::Arc;

use keyserver::api::Call;
use keyserver::backends::{MemoryStorage, RustCrypto};
use keyserver::policy::{Auth, AuthFile, AuthPolicy, Policy, PrincipalSpec};
use keyserver::transports::{ClientOptions, HttpServer, JsonRpc, ServerConfig, Token, XmlRpc};
use keyserver::{KeyServer, KeyService, Strength, Transport};

const APP_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const READER_TOKEN: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn principal(name: &str, token: Option<&str>, methods: &[&str]) -> PrincipalSpec {
    PrincipalSpec {
        name: name.into(),
        token_sha256: token.map(AuthPolicy::token_hash),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        ..PrincipalSpec::default()
    }
}

use crate::common::clients;

/// Every call of the wire API, on a key that exists.
fn every_call(kek: &keyserver::Kek) -> Vec<Call> {
    vec![
        Call::Generate(None, None),
        Call::Generate(Some(Strength::S128), None),
        Call::GetKey(kek.clone()),
        Call::GetWrapped(kek.id()),
        Call::Contains(kek.id()),
        Call::Status,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_principal_may_call_what_it_is_granted_and_nothing_else() {
    let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    let kek = keys.generate().await.unwrap();
    let mut app = principal("app", Some(APP_TOKEN), &["generate", "get_key", "status"]);
    app.strengths = Some(vec![128]);
    let reader = principal("reader", Some(READER_TOKEN), &["get_wrapped", "contains"]);
    let policy = AuthPolicy::new(&AuthFile {
        principals: vec![app, reader],
    })
    .unwrap();
    let http = HttpServer::start(
        Policy::new()
            .with_auth(Auth::new(policy))
            .wrap(Arc::clone(&keys) as Arc<dyn KeyService>),
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let url = http.url();
    let granted = |who: Option<&str>, call: &Call| match (who, call) {
        (Some(APP_TOKEN), Call::Generate(..) | Call::GetKey(_) | Call::Status) => true,
        (Some(READER_TOKEN), Call::GetWrapped(_) | Call::Contains(_)) => true,
        (None, Call::Status) => true, // anonymous: status only
        _ => false,
    };
    let bad = "ab".repeat(32);
    for who in [
        Some(APP_TOKEN),
        Some(READER_TOKEN),
        None,
        Some(bad.as_str()),
    ] {
        for client in clients(&url, who) {
            for call in every_call(&kek) {
                let answer = client.send(call.clone()).await;
                if granted(who, &call) {
                    assert!(
                        answer.is_ok(),
                        "{:?} {call:?}: {answer:?}",
                        who.map(|_| "token")
                    );
                } else {
                    let err = answer.unwrap_err();
                    assert_eq!(err.code(), 13, "{call:?}: {err}");
                    assert_eq!(err.to_string(), "not permitted");
                }
            }
        }
    }
    // A strength not granted: code 13 too.
    for client in clients(&url, Some(APP_TOKEN)) {
        let err = client.generate(Some(Strength::S192)).await.unwrap_err();
        assert_eq!(err.code(), 13, "{err}");
    }
    // HTTP Basic with the token as the password, by hand.
    let addr = http.local_addr();
    let answer = tokio::task::spawn_blocking(move || {
        use base64::Engine;
        use std::io::{Read, Write};
        let body = "<?xml version=\"1.0\"?><methodCall><methodName>contains</methodName><params>\
                    <param><value><string>0000000000000000000000000000000000000000000000000000000000000000</string></value></param></params></methodCall>";
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("reader:{READER_TOKEN}"));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "POST /RPC2 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nAuthorization: Basic {credentials}\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(answer.contains("<boolean>0</boolean>"), "{answer}");
    // Python's standard library, with the token in the URL.
    let python = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import xmlrpc.client\n\
             s = xmlrpc.client.ServerProxy('http://reader:{READER_TOKEN}@{addr}/RPC2')\n\
             print(s.contains('{}'))\n\
             try:\n    xmlrpc.client.ServerProxy('http://{addr}/RPC2').generate()\n\
             except xmlrpc.client.Fault as f:\n    print(f.faultCode)",
            kek.id()
        ))
        .output();
    match python {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text,
                "True\n13\n",
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => crate::common::unavailable("python3", e),
    }
    assert_eq!(keys.len(), 1 + 4, "app's generates only");
    http.shutdown().await;
}

/// `serve --auth FILE`: the policy is read at start; SIGHUP re-reads it
/// (a revoked token stops working without a restart), and a file that does
/// not load keeps the policy in force.
#[test]
fn sighup_reloads_the_auth_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("auth.toml");
    let entry = |name: &str, token: &str| {
        format!(
            "[[principal]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nmethods = [\"status\", \"contains\"]\n",
            AuthPolicy::token_hash(token)
        )
    };
    std::fs::write(
        &file,
        format!(
            "{}\n{}",
            entry("app", APP_TOKEN),
            entry("reader", READER_TOKEN)
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_keyserver");
    let (mut child, url) = crate::common::spawn_server(
        Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--storage", "memory"])
            .arg("--auth")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null()),
    );
    let status = |token: &str| {
        Command::new(bin)
            .args(["status", "--server", &url, "--token", token])
            .output()
            .unwrap()
            .status
            .code()
    };
    let hup = |pid: u32| {
        assert!(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    assert_eq!(status(APP_TOKEN), Some(0));
    assert_eq!(status(READER_TOKEN), Some(0));
    // Revoke app.
    std::fs::write(&file, entry("reader", READER_TOKEN)).unwrap();
    hup(child.id());
    let mut revoked = false;
    for _ in 0..100 {
        if status(APP_TOKEN) == Some(7) {
            revoked = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(revoked, "app's token still works after SIGHUP");
    assert_eq!(status(READER_TOKEN), Some(0));
    // A broken file keeps the policy in force.
    std::fs::write(&file, "[[principal]\nname = ").unwrap();
    hup(child.id());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(status(READER_TOKEN), Some(0), "the old policy stays");
    assert_eq!(status(APP_TOKEN), Some(7));
    let _ = child.kill();
    let _ = child.wait();
}

/// `keyserver token new NAME` prints a token and an entry holding its hash.
#[test]
fn token_new_prints_a_token_and_its_entry() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyserver"))
        .args(["token", "new", "app"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("token: "))
        .unwrap();
    assert_eq!(token.len(), 64);
    let toml_part = text.split_once("\n\n").unwrap().1;
    assert!(toml_part.contains(&AuthPolicy::token_hash(token)), "{text}");
    assert!(!toml_part.contains(token), "only the hash goes in the file");
    assert!(toml_part.contains("name = \"app\""), "{text}");
}

/// A listener off loopback refuses to start without access control (an
/// auth policy or client certificates) unless told insecure.
#[tokio::test]
async fn a_public_listener_needs_access_control() {
    use keyserver::transports::TlsFiles;
    let keys: Arc<dyn KeyService> =
        Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    let tls = |client_ca: Option<&str>| {
        Some(TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: client_ca.map(Into::into),
        })
    };
    let config = |tls| ServerConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        tls,
        ..Default::default()
    };
    let open = Policy::new().wrap(Arc::clone(&keys));
    let err = HttpServer::start(open, config(tls(None)))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), 4, "{err}");
    assert!(err.to_string().contains("access control"), "{err}");
    // With a policy, or client certificates, it goes on (and here fails
    // later, on the missing TLS files).
    let policy = Auth::new(AuthPolicy::new(&AuthFile::default()).unwrap());
    for (tls, policy) in [
        (tls(None), Policy::new().with_auth(policy)),
        (tls(Some("/nonexistent/ca.pem")), Policy::new()),
    ] {
        let err = HttpServer::start(policy.wrap(Arc::clone(&keys)), config(tls))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), 11, "{err}");
    }
}

/// A server on loopback enforcing `principals`.
async fn serve_with(
    principals: Vec<PrincipalSpec>,
) -> (Arc<KeyServer<RustCrypto, MemoryStorage>>, HttpServer) {
    let keys =
        Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()).with_kek_pool(4, 1));
    let policy = AuthPolicy::new(&AuthFile { principals }).unwrap();
    let http = HttpServer::start(
        Policy::new()
            .with_auth(Auth::new(policy))
            .wrap(Arc::clone(&keys) as Arc<dyn KeyService>),
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (keys, http)
}

/// A principal's request rate and generate rate: calls beyond the bucket
/// are answered "busy" (code 12) without running, and the bucket refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_busy_and_recover() {
    let mut app = principal("app", Some(APP_TOKEN), &["generate", "status"]);
    app.rate = Some(4.0);
    app.generate_rate = Some(1.0);
    let (keys, http) = serve_with(vec![app]).await;
    for client in clients(&http.url(), Some(APP_TOKEN)) {
        // Wait for full buckets (one second refills both).
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let before = keys.status().keys;
        // generate: one a second.
        client.generate(None).await.unwrap();
        let err = client.generate(None).await.unwrap_err();
        assert_eq!(err.code(), 12, "{err}");
        assert!(err.to_string().contains("generate rate"), "{err}");
        assert_eq!(
            keys.status().keys,
            before + 1,
            "the refused call made nothing"
        );
        // Requests: 4 a second in all (2 spent above), so 2 more statuses
        // pass and the next is refused.
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(client.status().await.map(|_| ()).map_err(|e| e.code()));
        }
        let refused = answers.iter().filter(|a| **a == Err(12)).count();
        assert!(refused >= 1, "{answers:?}");
        assert_eq!(answers[0], Ok(()), "{answers:?}");
        // Recovered a second later.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        client.status().await.unwrap();
        client.generate(None).await.unwrap();
    }
    http.shutdown().await;
}

#[test]
fn bad_rates_and_subjects_are_refused_with_the_reason() {
    let mut zero = principal("a", Some(APP_TOKEN), &[]);
    zero.rate = Some(0.0);
    let mut nan = principal("a", Some(APP_TOKEN), &[]);
    nan.generate_rate = Some(f64::NAN);
    let mut subject = principal("a", None, &[]);
    subject.tls_subject = Some("O=acme".into());
    let mut twice = principal("b", None, &[]);
    twice.tls_subject = Some("CN=app".into());
    let mut again = principal("c", None, &[]);
    again.tls_subject = Some("cn=app".into());
    for (principals, needle) in [
        (vec![zero], "rate is a number"),
        (vec![nan], "generate_rate is a number"),
        (vec![subject], "tls_subject is CN=NAME"),
        (vec![twice, again], "another principal's"),
    ] {
        let err = AuthPolicy::new(&AuthFile { principals }).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    // The file form: every key of the issue's example parses.
    let file: AuthFile = toml::from_str(&format!(
        r#"
        [[principal]]
        name = "app"
        token_sha256 = "{}"
        tls_subject = "CN=app"
        methods = ["generate", "get_key", "status", "metrics"]
        strengths = [128]
        rate = 100
        generate_rate = 10

        [[principal]]
        name = "anonymous"
        methods = ["status"]
        "#,
        AuthPolicy::token_hash(APP_TOKEN)
    ))
    .unwrap();
    AuthPolicy::new(&file).unwrap();
}

/// Principals recognised by their client certificate (common name or DNS
/// name), with or without a token; a token and a certificate of two
/// different principals are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_identify_principals() {
    use keyserver::transports::{ClientTls, TlsFiles};
    let dir = tempfile::tempdir().unwrap();
    if crate::common::make_pki(dir.path()).is_none() {
        crate::common::unavailable("the mTLS principal test", "no openssl command");
        return;
    }
    // "client" (CN=client) from make_pki; one more with a DNS name.
    crate::common::issue(
        dir.path(),
        "svc",
        "subjectAltName=DNS:Batch.Example\nextendedKeyUsage=clientAuth\n",
        "2",
    );
    crate::common::issue(dir.path(), "stranger", "extendedKeyUsage=clientAuth\n", "2");
    let p = |name: &str| dir.path().join(name);
    let mut by_cn = principal("app", None, &["generate", "status"]);
    by_cn.tls_subject = Some("CN=client".into());
    let mut by_dns = principal("batch", None, &["contains"]);
    by_dns.tls_subject = Some("DNS:batch.example".into());
    let with_token = principal("ops", Some(APP_TOKEN), &["status"]);
    let policy = AuthPolicy::new(&AuthFile {
        principals: vec![by_cn, by_dns, with_token],
    })
    .unwrap();
    let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
    let http = HttpServer::start(
        Policy::new()
            .with_auth(Auth::new(policy))
            .wrap(Arc::clone(&keys) as Arc<dyn KeyService>),
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Some(TlsFiles {
                cert: p("server.pem"),
                key: p("server.key"),
                client_ca: Some(p("ca.pem")),
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let url = http.url();
    let as_holder = |name: &str, token: Option<&str>| -> Vec<Box<dyn Transport>> {
        let options = ClientOptions {
            tls: ClientTls {
                ca_cert: Some(p("ca.pem")),
                client_cert: Some(p(&format!("{name}.pem"))),
                client_key: Some(p(&format!("{name}.key"))),
            },
            token: token.map(Token::new),
            ..Default::default()
        };
        vec![
            Box::new(XmlRpc::with_options(&url, options.clone()).unwrap()),
            Box::new(JsonRpc::with_options(&url, options).unwrap()),
        ]
    };
    for client in as_holder("client", None) {
        let kek = client.generate(None).await.unwrap();
        assert_eq!(client.contains(&kek.id()).await.unwrap_err().code(), 13);
    }
    let any = keyserver::KeyId::from_bytes([0; 32]);
    for client in as_holder("svc", None) {
        assert!(!client.contains(&any).await.unwrap());
        assert_eq!(client.generate(None).await.unwrap_err().code(), 13);
    }
    // A certificate no principal claims: anonymous (status only).
    for client in as_holder("stranger", None) {
        client.status().await.unwrap();
        assert_eq!(client.generate(None).await.unwrap_err().code(), 13);
        assert_eq!(client.contains(&any).await.unwrap_err().code(), 13);
    }
    // A token with a certificate nobody claims: the token's principal.
    for client in as_holder("stranger", Some(APP_TOKEN)) {
        client.status().await.unwrap();
    }
    // A token and a certificate of two principals: refused.
    for client in as_holder("client", Some(APP_TOKEN)) {
        assert_eq!(client.status().await.unwrap_err().code(), 13);
    }
    assert_eq!(keys.status().keys, 2);
    http.shutdown().await;
}
