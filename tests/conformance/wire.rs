//! The wire protocol against running servers on loopback: raw bad input of
//! every kind gets a typed error and the server keeps serving; TLS and mutual
//! TLS; plain HTTP off loopback refused; a server that is down is a typed
//! client error; the access log never holds a key.

use std::sync::Arc;

use keyserver::transports::{
    ClientOptions, ClientTls, HttpServer, JsonRpc, ServerConfig, TlsFiles, XmlRpc,
};
use keyserver::{Error, KeyService, Transport};
use serde_json::{json, Value};

use crate::transport::{loopback, new_server};

fn xml_call(method: &str, params: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"
    )
}

fn string_param(s: &str) -> String {
    format!("<param><value><string>{s}</string></value></param>")
}

fn raw_http() -> reqwest::Client {
    crate::common::raw_http(false)
}

/// POSTs `body` to `/RPC2` and returns (fault code or 0 for success, body).
async fn xml_post(url: &str, body: Vec<u8>) -> (i32, String) {
    let response = raw_http()
        .post(format!("{url}/RPC2"))
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "faults travel with HTTP 200");
    let text = response.text().await.unwrap();
    match dxr::FaultResponse::from_xml(&text) {
        Ok(fault) => (fault.fault.code(), text),
        Err(_) => {
            dxr::MethodResponse::from_xml(&text).expect("a response or a fault");
            (0, text)
        }
    }
}

/// POSTs `body` to `/jsonrpc`: (HTTP status, parsed JSON if any).
async fn json_post(url: &str, body: Vec<u8>) -> (u16, Option<Value>) {
    let response = raw_http()
        .post(format!("{url}/jsonrpc"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).ok())
}

fn json_error_code(v: &Value) -> Option<i64> {
    v.get("error")?.get("code")?.as_i64()
}

const NOT_A_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nU2VjcmV0IGJ1dCBub3QgYSBrZXk=\n-----END PRIVATE KEY-----\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmlrpc_bad_input_gets_typed_faults_and_the_server_keeps_serving() {
    let server = new_server();
    let http = loopback(server.clone()).await;
    let url = http.url();
    let kek = server.generate().await.unwrap();
    let stranger = crate::common::fixture_kek(3072);

    let valid = xml_call("get_key", &string_param(&kek.to_pem()));
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("oversize body", vec![b'x'; 2 << 20], 6),
        (
            "malformed XML",
            b"<methodCall><methodName>status".to_vec(),
            -32700,
        ),
        (
            "random bytes",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            -32700,
        ),
        (
            "truncated request",
            valid.as_bytes()[..valid.len() / 2].to_vec(),
            -32700,
        ),
        ("empty body", Vec::new(), -32700),
        (
            "int for a key",
            xml_call("get_key", "<param><value><int>7</int></value></param>").into_bytes(),
            -32602,
        ),
        (
            "two params",
            xml_call("contains", &(string_param("a") + &string_param("b"))).into_bytes(),
            -32602,
        ),
        (
            "string strength",
            xml_call("generate", &string_param("128")).into_bytes(),
            -32602,
        ),
        (
            "bad strength",
            xml_call("generate", "<param><value><int>100</int></value></param>").into_bytes(),
            4,
        ),
        (
            "PEM that is not a key",
            xml_call("get_key", &string_param(NOT_A_KEY)).into_bytes(),
            2,
        ),
        (
            "bad key id",
            xml_call("contains", &string_param("xyz")).into_bytes(),
            2,
        ),
        (
            "KEK of another key",
            xml_call("get_key", &string_param(&stranger.to_pem())).into_bytes(),
            1,
        ),
        (
            "unknown method",
            xml_call("drop_all_keys", "").into_bytes(),
            -32601,
        ),
    ];
    for (name, body, expected) in cases {
        let (code, text) = xml_post(&url, body).await;
        assert_eq!(code, expected, "{name}: {text}");
        // Never echo a key back.
        assert!(!text.contains("U2VjcmV0"), "{name}: {text}");
        assert!(!text.contains("PRIVATE KEY"), "{name}: {text}");
    }
    // Still serving, and the valid request works.
    let (code, text) = xml_post(&url, valid.into_bytes()).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(XmlRpc::new(&url).unwrap().status().await.unwrap().keys, 1);
    http.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_bad_input_gets_typed_errors_and_the_server_keeps_serving() {
    let server = new_server();
    let http = loopback(server.clone()).await;
    let url = http.url();
    let kek = server.generate().await.unwrap();
    let stranger = crate::common::fixture_kek(3072);
    let call = |method: &str, params: Value| {
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .unwrap()
    };

    // Oversize: HTTP 413 with error 6, and the server goes on.
    let (status, answer) = json_post(&url, vec![b' '; 2 << 20]).await;
    assert_eq!(status, 413);
    assert_eq!(json_error_code(&answer.unwrap()), Some(6));

    let valid = call("get_key", json!([kek.to_pem().as_str()]));
    let cases: Vec<(&str, Vec<u8>, i64)> = vec![
        (
            "malformed JSON",
            b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ".to_vec(),
            -32700,
        ),
        (
            "random bytes",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            -32700,
        ),
        (
            "truncated request",
            valid[..valid.len() / 2].to_vec(),
            -32700,
        ),
        ("number for a key", call("get_key", json!([7])), -32602),
        ("two params", call("contains", json!(["a", "b"])), -32602),
        ("wrong name", call("get_key", json!({"key": "x"})), -32602),
        ("string strength", call("generate", json!(["128"])), -32602),
        ("bad strength", call("generate", json!([100])), 4),
        (
            "PEM that is not a key",
            call("get_key", json!([NOT_A_KEY])),
            2,
        ),
        ("bad key id", call("contains", json!(["xyz"])), 2),
        (
            "KEK of another key",
            call("get_key", json!([stranger.to_pem().as_str()])),
            1,
        ),
        ("unknown method", call("drop_all_keys", json!([])), -32601),
    ];
    for (name, body, expected) in cases {
        let (status, answer) = json_post(&url, body).await;
        let answer = answer.unwrap_or_else(|| panic!("{name}: HTTP {status}, no JSON"));
        assert_eq!(json_error_code(&answer), Some(expected), "{name}: {answer}");
        let text = answer.to_string();
        assert!(
            !text.contains("U2VjcmV0") && !text.contains("PRIVATE KEY"),
            "{name}: {text}"
        );
    }
    // Named parameters work as well as positional ones, and batches too.
    let (_, answer) = json_post(
        &url,
        call("contains", json!({"key_id": kek.id().to_string()})),
    )
    .await;
    assert_eq!(answer.unwrap()["result"], json!(true));
    let batch = serde_json::to_vec(&json!([
        {"jsonrpc": "2.0", "id": 1, "method": "status"},
        {"jsonrpc": "2.0", "id": 2, "method": "contains", "params": [kek.id().to_string()]},
    ]))
    .unwrap();
    let (_, answer) = json_post(&url, batch).await;
    assert_eq!(answer.unwrap().as_array().map(Vec::len), Some(2));
    // Still serving.
    let (status, answer) = json_post(&url, valid).await;
    assert_eq!(status, 200);
    assert!(answer.unwrap()["result"].is_string());
    assert_eq!(JsonRpc::new(&url).unwrap().status().await.unwrap().keys, 1);
    http.shutdown().await;
}

#[tokio::test]
async fn a_server_that_is_down_is_a_typed_client_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let options = ClientOptions {
        timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    };
    let transports: Vec<Box<dyn Transport>> = vec![
        Box::new(XmlRpc::with_options(&url, options.clone()).unwrap()),
        Box::new(JsonRpc::with_options(&url, options).unwrap()),
    ];
    for t in transports {
        let err = t.status().await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert_eq!(err.code(), 11);
    }
    assert!(XmlRpc::new("ftp://example").is_err());
    assert!(JsonRpc::new("not a url").is_err());
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused() {
    let config = ServerConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    let err = HttpServer::start(new_server(), config).await.err().unwrap();
    assert!(matches!(err, Error::Policy { .. }), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    if crate::common::make_pki(dir.path()).is_none() {
        crate::common::unavailable("the TLS test", "no openssl command to make certificates");
        return;
    }
    let p = |name: &str| dir.path().join(name);
    let trusting = ClientOptions {
        tls: ClientTls {
            ca_cert: Some(p("ca.pem")),
            ..Default::default()
        },
        ..Default::default()
    };

    // TLS: a client that trusts the CA talks over both protocols; one that
    // does not is refused with a transport error.
    let server = new_server();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: p("server.pem"),
            key: p("server.key"),
            client_ca: None,
        }),
        ..Default::default()
    };
    let http = HttpServer::start(server.clone(), config).await.unwrap();
    let url = http.url();
    assert!(url.starts_with("https://"));
    let xml = XmlRpc::with_options(&url, trusting.clone()).unwrap();
    let json = JsonRpc::with_options(&url, trusting.clone()).unwrap();
    let kek = xml.generate(None).await.unwrap();
    assert_eq!(
        json.get_key(&kek).await.unwrap(),
        server.get(&kek).await.unwrap()
    );
    for t in [
        Box::new(XmlRpc::new(&url).unwrap()) as Box<dyn Transport>,
        Box::new(JsonRpc::new(&url).unwrap()),
    ] {
        let err = t.status().await.unwrap_err();
        assert_eq!(err.code(), 11, "untrusted certificate: {err:?}");
    }
    // Plain HTTP to the TLS port fails too.
    assert!(XmlRpc::new(&url.replace("https", "http"))
        .unwrap()
        .status()
        .await
        .is_err());
    http.shutdown().await;

    // Mutual TLS: without a client certificate the handshake is refused.
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: p("server.pem"),
            key: p("server.key"),
            client_ca: Some(p("ca.pem")),
        }),
        ..Default::default()
    };
    let http = HttpServer::start(server.clone(), config).await.unwrap();
    let url = http.url();
    for t in [
        Box::new(XmlRpc::with_options(&url, trusting.clone()).unwrap()) as Box<dyn Transport>,
        Box::new(JsonRpc::with_options(&url, trusting.clone()).unwrap()),
    ] {
        let err = t.status().await.unwrap_err();
        assert_eq!(err.code(), 11, "no client certificate: {err:?}");
    }
    let with_cert = ClientOptions {
        tls: ClientTls {
            ca_cert: Some(p("ca.pem")),
            client_cert: Some(p("client.pem")),
            client_key: Some(p("client.key")),
        },
        ..Default::default()
    };
    for t in [
        Box::new(XmlRpc::with_options(&url, with_cert.clone()).unwrap()) as Box<dyn Transport>,
        Box::new(JsonRpc::with_options(&url, with_cert.clone()).unwrap()),
    ] {
        assert_eq!(t.status().await.unwrap().keys, 1);
    }
    // A server certificate without its key file is a clear start-up error.
    let bad = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: p("server.pem"),
            key: p("missing.key"),
            client_ca: None,
        }),
        ..Default::default()
    };
    let err = HttpServer::start(server.clone(), bad).await.err().unwrap();
    assert!(err.to_string().contains("missing.key"), "{err}");
    http.shutdown().await;
}

/// A writer that keeps everything logged in the process.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            use tracing_subscriber::layer::SubscriberExt;
            // Everything at TRACE, except the one target that cannot be kept
            // quiet otherwise: jsonrpsee's client logs every response body
            // (a DEK) at TRACE on "jsonrpsee-http" (see SECURITY.md).
            let filter = tracing_subscriber::filter::Targets::new()
                .with_default(tracing::Level::TRACE)
                .with_target("jsonrpsee-http", tracing::Level::INFO);
            let subscriber = tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(move || writer.clone()),
                )
                .with(filter);
            tracing::subscriber::set_global_default(subscriber).unwrap();
            captured
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_log_line_per_request_and_never_a_key() {
    let captured = capture_logs();
    let server = new_server();
    let http = loopback(server.clone()).await;
    let url = http.url();
    let xml = XmlRpc::new(&url).unwrap();
    let json = JsonRpc::new(&url).unwrap();
    let kek = xml.generate(None).await.unwrap();
    let dek = json.get_key(&kek).await.unwrap();
    assert!(xml.contains(&kek.id()).await.unwrap());
    json.status().await.unwrap();
    let (code, _) = xml_post(
        &url,
        xml_call("get_key", &string_param(NOT_A_KEY)).into_bytes(),
    )
    .await;
    assert_eq!(code, 2);
    http.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let id = kek.id().to_string();
    for expected in [
        // protocol, method, key id, principal ("-": no access control).
        format!("xmlrpc generate {id} - ok"),
        format!("jsonrpc get_key {id} - ok"),
        format!("xmlrpc contains {id} - ok"),
        "jsonrpc status - - ok".to_string(),
        "xmlrpc get_key - - error 2".to_string(),
    ] {
        assert!(
            logs.contains(&expected),
            "no {expected:?} in the log:\n{logs}"
        );
    }
    // Nothing secret, even at TRACE level for every crate.
    let pem = kek.to_pem();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!logs.contains(line), "a KEK line reached the log");
    }
    assert!(
        !logs.contains("U2VjcmV0"),
        "a submitted PEM reached the log"
    );
    assert!(!logs.contains(&hex::encode(dek.as_bytes())));
    // One line per request: counted, not searched (other tests share the
    // log, but not this key).
    let lines = logs
        .lines()
        .filter(|l| l.contains("keyserver::access") && l.contains(&id))
        .count();
    assert_eq!(lines, 3, "generate, get_key, contains:\n{logs}");
    use base64::Engine;
    assert!(!logs.contains(&base64::engine::general_purpose::STANDARD.encode(dek.as_bytes())));
}

fn multicall_entry(method: &str, params: &str) -> String {
    format!(
        "<value><struct><member><name>methodName</name><value><string>{method}</string></value></member>\
         <member><name>params</name><value><array><data>{params}</data></array></value></member></struct></value>"
    )
}

fn multicall(entries: &[String]) -> Vec<u8> {
    xml_call(
        "system.multicall",
        &format!(
            "<param><value><array><data>{}</data></array></value></param>",
            entries.concat()
        ),
    )
    .into_bytes()
}

/// `system.multicall`: each call answered on its own, in order; the batch
/// limits of JSON-RPC; no nesting; hostile entries are faults, not panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmlrpc_multicall_answers_each_call_and_keeps_the_limits() {
    let server = new_server();
    let http = loopback(server.clone()).await;
    let url = http.url();

    let missing = "ab".repeat(32);
    let entries = vec![
        multicall_entry("status", ""),
        multicall_entry(
            "contains",
            &format!("<value><string>{missing}</string></value>"),
        ),
        multicall_entry(
            "get_key",
            &format!("<value><string>{NOT_A_KEY}</string></value>"),
        ),
        multicall_entry("nope", ""),
        multicall_entry("system.multicall", ""),
        "<value><int>7</int></value>".to_string(),
    ];
    let (code, text) = xml_post(&url, multicall(&entries)).await;
    assert_eq!(code, 0, "{text}");
    let response = dxr::MethodResponse::from_xml(&text).unwrap();
    let dxr::Value::Array(answers) = response.value else {
        panic!("an array: {text}")
    };
    assert_eq!(answers.len(), entries.len());
    let fault_code = |v: &dxr::Value| match v {
        dxr::Value::Struct(m) => match m.get("faultCode") {
            Some(dxr::Value::Integer(c)) => *c,
            _ => panic!("no faultCode"),
        },
        _ => 0,
    };
    assert!(matches!(&answers[0], dxr::Value::Array(v) if v.len() == 1));
    assert!(matches!(&answers[1], dxr::Value::Array(v) if v == &[dxr::Value::Boolean(false)]));
    assert_eq!(fault_code(&answers[2]), 2, "invalid key");
    assert_eq!(fault_code(&answers[3]), -32601, "unknown method");
    assert_eq!(fault_code(&answers[4]), -32600, "no nested multicall");
    assert_eq!(fault_code(&answers[5]), -32602, "not a call struct");
    assert!(!text.contains("U2VjcmV0"), "never echoes a parameter");

    // 1 to 64 calls.
    let (code, _) = xml_post(&url, multicall(&[])).await;
    assert_eq!(code, -32600);
    let many = vec![multicall_entry("status", ""); 65];
    let (code, _) = xml_post(&url, multicall(&many)).await;
    assert_eq!(code, -32600);
    let (code, _) = xml_post(&url, multicall(&many[..64])).await;
    assert_eq!(code, 0);
    // At most 8 expensive calls (generate, get_key) in one multicall.
    let expensive = vec![multicall_entry("generate", ""); 9];
    let (code, text) = xml_post(&url, multicall(&expensive)).await;
    assert_eq!(code, -32600, "{text}");
    assert_eq!(server.len(), 0, "none ran");
    let (code, _) = xml_post(&url, multicall(&expensive[..2])).await;
    assert_eq!(code, 0);
    assert_eq!(server.len(), 2);
    // Not an array.
    let (code, _) = xml_post(
        &url,
        xml_call("system.multicall", &string_param("x")).into_bytes(),
    )
    .await;
    assert_eq!(code, -32602);

    // Introspection.
    let (code, text) = xml_post(&url, xml_call("system.listMethods", "").into_bytes()).await;
    assert_eq!(code, 0);
    for name in keyserver::api::METHODS.iter().map(|m| m.name) {
        assert!(text.contains(&format!(">{name}<")), "{name} listed: {text}");
    }
    let (code, _) = xml_post(
        &url,
        xml_call("system.listMethods", &string_param("x")).into_bytes(),
    )
    .await;
    assert_eq!(code, -32602);
    let (code, text) = xml_post(
        &url,
        xml_call("system.methodHelp", &string_param("get_wrapped")).into_bytes(),
    )
    .await;
    assert_eq!(code, 0);
    assert!(text.contains("client-side unwrap"), "{text}");
    let (code, _) = xml_post(
        &url,
        xml_call("system.methodHelp", &string_param("nope")).into_bytes(),
    )
    .await;
    assert_eq!(code, -32601);

    // Still serving.
    assert_eq!(XmlRpc::new(&url).unwrap().status().await.unwrap().keys, 2);
    http.shutdown().await;
}

/// Every error a server sends comes back as the variant it was on the
/// server, with the same text, over both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_cross_the_wire_as_their_own_variant() {
    use keyserver::api::{Call, Reply, Status};
    use keyserver::{async_trait, Dek, Kek, KeyId, Strength, WrappedDek};
    use std::borrow::Cow;

    /// Fails every call with the error chosen by the key id asked for.
    struct Failing(Vec<fn(KeyId) -> Error>);

    #[async_trait]
    impl KeyService for Failing {
        async fn generate(&self, _: Option<Strength>) -> keyserver::Result<Kek> {
            Err(Error::Internal("generate".into()))
        }
        async fn get_key(&self, kek: &Kek) -> keyserver::Result<Dek> {
            Err(Error::NotFound { key_id: kek.id() })
        }
        async fn get_wrapped(&self, key_id: &KeyId) -> keyserver::Result<WrappedDek> {
            Err(self.0[usize::from(key_id.as_bytes()[0])](*key_id))
        }
        async fn contains(&self, _: &KeyId) -> keyserver::Result<bool> {
            Ok(true)
        }
        async fn status(&self) -> keyserver::Result<Status> {
            Err(Error::Internal("status".into()))
        }
    }

    let other = KeyId::from_bytes([9; 32]);
    let errors: Vec<fn(KeyId) -> Error> = vec![
        |key_id| Error::NotFound { key_id },
        |_| Error::InvalidKey {
            reason: "not a PKCS#8 private key".into(),
        },
        |key_id| Error::UnwrapFailed { key_id },
        |_| Error::Policy {
            reason: "strength 128 is below this server's minimum of 192".into(),
        },
        |key_id| Error::AlreadyExists { key_id },
        |key_id| Error::CorruptRecord {
            key_id,
            reason: "checksum mismatch".into(),
        },
        |_| Error::Storage {
            backend: "btree".into(),
            message: "writing record".into(),
            source: None,
        },
        |_| Error::TooLarge {
            size: 2_000_000,
            limit: 1_048_576,
        },
        |_| Error::Internal(Cow::Borrowed("the request timed out")),
        |_| Error::DecryptionFailed,
        |_| Error::MalformedCiphertext {
            reason: "truncated".into(),
        },
        |key_id| Error::KeyMismatch {
            expected: KeyId::from_bytes([9; 32]),
            given: key_id,
        },
        |_| Error::Busy {
            reason: "every key-generation worker is busy and the queue is full".into(),
        },
        |_| Error::NotPermitted,
        // No text form to parse back: these arrive as Remote, with the
        // server's code and text.
        |_| Error::Io {
            what: "reading a record",
            source: std::io::Error::other("disk"),
        },
        |_| Error::Crypto {
            suite: "rustcrypto",
            operation: "RSA key generation",
        },
    ];
    let count = errors.len();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let http = HttpServer::start(Arc::new(Failing(errors.clone())), config)
        .await
        .unwrap();
    let url = http.url();
    let transports: Vec<Box<dyn Transport>> = vec![
        Box::new(XmlRpc::new(&url).unwrap()),
        Box::new(JsonRpc::new(&url).unwrap()),
    ];
    for t in &transports {
        for (i, make) in errors.iter().enumerate().take(count) {
            let id = KeyId::from_bytes([u8::try_from(i).unwrap(); 32]);
            let local = make(id);
            let remote = t.get_wrapped(&id).await.unwrap_err();
            assert_eq!(remote.kind(), local.kind());
            if matches!(local, Error::Io { .. } | Error::Crypto { .. }) {
                assert!(
                    matches!(&remote, Error::Remote { code, message }
                        if *code == local.code() && *message == local.to_string()),
                    "{remote:?}"
                );
                continue;
            }
            assert_eq!(
                std::mem::discriminant(&remote),
                std::mem::discriminant(&local),
                "{}: {local:?} came back as {remote:?}",
                t.endpoint()
            );
            assert_eq!(remote.to_string(), local.to_string());
        }
        let err = t.send(Call::Status).await.unwrap_err();
        assert!(
            matches!(err, Error::Internal(ref m) if m == "status"),
            "{err:?}"
        );
        assert!(matches!(
            t.send(Call::Contains(other)).await.unwrap(),
            Reply::Bool(true)
        ));
    }
    http.shutdown().await;
}

/// JSON-RPC envelopes: invalid requests are -32600, a notification is
/// answered with 204 and no body (but a `generate` notification is refused:
/// its KEK would be lost), a batch holds 1 to 64 calls of which at most 8
/// are expensive (`generate`, `get_key`), and its answers keep its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_envelopes_batches_and_notifications() {
    let server = new_server();
    let http = loopback(server.clone()).await;
    let url = http.url();
    for bad in [
        json!({"jsonrpc": "1.0", "method": "status", "id": 1}),
        json!({"jsonrpc": "2.0", "id": 1}),
        json!({"jsonrpc": "2.0", "method": "status", "params": "x", "id": 1}),
        json!({"jsonrpc": "2.0", "method": "status", "id": [1]}),
        json!(7),
        json!([]),
    ] {
        let (status, answer) = json_post(&url, serde_json::to_vec(&bad).unwrap()).await;
        assert_eq!(status, 200, "{bad}");
        assert_eq!(json_error_code(&answer.unwrap()), Some(-32600), "{bad}");
    }
    // A notification (no id) is run and not answered.
    let note = json!({"jsonrpc": "2.0", "method": "contains", "params": ["00".repeat(32)]});
    let (status, answer) = json_post(&url, serde_json::to_vec(&note).unwrap()).await;
    assert_eq!((status, answer), (204, None));
    // A generate notification would make a key nobody receives: refused.
    let note = json!({"jsonrpc": "2.0", "method": "generate", "params": []});
    let (status, answer) = json_post(&url, serde_json::to_vec(&note).unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(json_error_code(&answer.unwrap()), Some(-32600));
    let batch: Vec<Value> = (0..64).map(|_| note.clone()).collect();
    let (_, answer) = json_post(&url, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(json_error_code(&answer.unwrap()), Some(-32600));
    assert_eq!(server.len(), 0, "no key was made");
    // A batch of 64 is answered call by call, in order; 65 is refused whole.
    let call = |id: usize| json!({"jsonrpc": "2.0", "method": "status", "id": id});
    let batch: Vec<Value> = (0..64).map(call).collect();
    let (status, answer) = json_post(&url, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(status, 200);
    let ids: Vec<u64> = answer
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..64).collect::<Vec<u64>>());
    let batch: Vec<Value> = (0..65).map(call).collect();
    let (_, answer) = json_post(&url, serde_json::to_vec(&batch).unwrap()).await;
    assert_eq!(json_error_code(&answer.unwrap()), Some(-32600));
    // At most 8 expensive calls in a batch: 9 get_key calls are refused
    // whole before any runs; 8 and many cheap ones are answered.
    let kek = server.generate().await.unwrap();
    let get = |id: usize| json!({"jsonrpc": "2.0", "method": "get_key", "params": [kek.to_pem().as_str()], "id": id});
    let batch: Vec<Value> = (0..9).map(get).collect();
    let (_, answer) = json_post(&url, serde_json::to_vec(&batch).unwrap()).await;
    let answer = answer.unwrap();
    assert_eq!(json_error_code(&answer), Some(-32600));
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 8"),
        "{answer}"
    );
    let batch: Vec<Value> = (0..8).map(get).chain((8..40).map(call)).collect();
    let (_, answer) = json_post(&url, serde_json::to_vec(&batch).unwrap()).await;
    let answers = answer.unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 40);
    assert!(
        answers.iter().all(|a| a.get("result").is_some()),
        "{answers:?}"
    );
    http.shutdown().await;
}

/// A service that holds each call until released, and counts calls.
struct Held {
    release: tokio::sync::Semaphore,
    started: tokio::sync::Notify,
    calls: std::sync::atomic::AtomicUsize,
}

#[keyserver::async_trait]
impl keyserver::KeyService for Held {
    async fn generate(&self, _: Option<keyserver::Strength>) -> keyserver::Result<keyserver::Kek> {
        Err(Error::Internal("unused".into()))
    }
    async fn get_key(&self, _: &keyserver::Kek) -> keyserver::Result<keyserver::Dek> {
        Err(Error::Internal("unused".into()))
    }
    async fn get_wrapped(
        &self,
        key_id: &keyserver::KeyId,
    ) -> keyserver::Result<keyserver::WrappedDek> {
        Err(Error::NotFound { key_id: *key_id })
    }
    async fn contains(&self, _: &keyserver::KeyId) -> keyserver::Result<bool> {
        Ok(false)
    }
    async fn status(&self) -> keyserver::Result<keyserver::Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.started.notify_one();
        let _permit = self.release.acquire().await;
        Ok(keyserver::Status {
            keys: 0,
            version: "held".into(),
            suite: "-".into(),
            storage: "-".into(),
            strength: 128,
            kek_alg: "rsa".into(),
            fips: false,
        })
    }
}

/// Past the request time limit the answer is code 7, and the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_time_limit_is_answered_with_code_7() {
    let held = std::sync::Arc::new(Held {
        release: tokio::sync::Semaphore::new(0),
        started: tokio::sync::Notify::new(),
        calls: std::sync::atomic::AtomicUsize::new(0),
    });
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        request_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let http = HttpServer::start(held.clone(), config).await.unwrap();
    for t in [
        Box::new(XmlRpc::new(&http.url()).unwrap()) as Box<dyn Transport>,
        Box::new(JsonRpc::new(&http.url()).unwrap()),
    ] {
        let err = t.status().await.unwrap_err();
        assert_eq!(err.code(), 7, "{err:?}");
        assert_eq!(err.to_string(), "internal error: the request timed out");
        assert!(!t
            .contains(&keyserver::KeyId::from_bytes([1; 32]))
            .await
            .unwrap());
    }
    // The limit is the request's, not each call's: in a batch or multicall
    // of three, the first call runs into it and the others are answered
    // with code 7 without running.
    let url = http.url();
    let before = held.calls.load(std::sync::atomic::Ordering::SeqCst);
    let call = |id: usize| json!({"jsonrpc": "2.0", "method": "status", "id": id});
    let batch: Vec<Value> = (0..3).map(call).collect();
    let (_, answer) = json_post(&url, serde_json::to_vec(&batch).unwrap()).await;
    let answers = answer.unwrap();
    let codes: Vec<i64> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"]["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [7, 7, 7]);
    let (code, text) = xml_post(&url, multicall(&vec![multicall_entry("status", ""); 3])).await;
    assert_eq!(code, 0, "{text}");
    let response = dxr::MethodResponse::from_xml(&text).unwrap();
    let dxr::Value::Array(answers) = response.value else {
        panic!("an array: {text}")
    };
    let codes: Vec<i32> = answers
        .iter()
        .map(|a| match a {
            dxr::Value::Struct(m) => match m.get("faultCode") {
                Some(dxr::Value::Integer(c)) => *c,
                _ => 0,
            },
            _ => 0,
        })
        .collect();
    assert_eq!(codes, [7, 7, 7], "{text}");
    assert_eq!(
        held.calls.load(std::sync::atomic::Ordering::SeqCst) - before,
        2,
        "one call ran per request"
    );
    http.shutdown().await;
}

/// Shutdown lets a request in flight finish, and refuses new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let held = std::sync::Arc::new(Held {
        release: tokio::sync::Semaphore::new(0),
        started: tokio::sync::Notify::new(),
        calls: std::sync::atomic::AtomicUsize::new(0),
    });
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let http = HttpServer::start(held.clone(), config).await.unwrap();
    let url = http.url();
    let in_flight = tokio::spawn({
        let url = url.clone();
        async move { XmlRpc::new(&url).unwrap().status().await }
    });
    held.started.notified().await;
    let shutdown = tokio::spawn(http.shutdown());
    // The listener closes: a new connection is refused.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "new connections are refused once shutdown starts");
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the request in flight"
    );
    held.release.add_permits(1);
    let status = in_flight.await.unwrap().unwrap();
    assert_eq!(status.version, "held", "the request in flight was answered");
    shutdown.await.unwrap();
}

/// Certificates that must not pass: a client certificate from another CA,
/// one with the wrong key usage, an expired one; a server certificate for
/// clients only; and CA files that are missing or empty, on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_the_wrong_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    if crate::common::make_pki(dir.path()).is_none()
        || crate::common::make_pki(other.path()).is_none()
    {
        crate::common::unavailable(
            "the TLS refusal test",
            "no openssl command to make certificates",
        );
        return;
    }
    let p = |name: &str| dir.path().join(name);
    crate::common::issue(
        dir.path(),
        "server-usage",
        "extendedKeyUsage=serverAuth\n",
        "2",
    );
    crate::common::issue(dir.path(), "expired", "extendedKeyUsage=clientAuth\n", "0");
    crate::common::issue(
        dir.path(),
        "client-only",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=clientAuth\n",
        "2",
    );
    // The expired certificate's validity ends the second it was made.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let server = new_server();
    let mtls = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: p("server.pem"),
            key: p("server.key"),
            client_ca: Some(p("ca.pem")),
        }),
        ..Default::default()
    };
    let http = HttpServer::start(server.clone(), mtls.clone())
        .await
        .unwrap();
    let url = http.url();
    let client = |cert: std::path::PathBuf, key: std::path::PathBuf| ClientOptions {
        tls: ClientTls {
            ca_cert: Some(p("ca.pem")),
            client_cert: Some(cert),
            client_key: Some(key),
        },
        ..Default::default()
    };
    for (what, options) in [
        (
            "a client certificate from another CA",
            client(
                other.path().join("client.pem"),
                other.path().join("client.key"),
            ),
        ),
        (
            "a client certificate for servers only",
            client(p("server-usage.pem"), p("server-usage.key")),
        ),
        (
            "an expired client certificate",
            client(p("expired.pem"), p("expired.key")),
        ),
    ] {
        for t in [
            Box::new(XmlRpc::with_options(&url, options.clone()).unwrap()) as Box<dyn Transport>,
            Box::new(JsonRpc::with_options(&url, options.clone()).unwrap()),
        ] {
            let err = t.status().await.unwrap_err();
            assert_eq!(err.code(), 11, "{what}: {err:?}");
        }
    }
    // The right certificate still works.
    let good = client(p("client.pem"), p("client.key"));
    assert_eq!(
        XmlRpc::with_options(&url, good)
            .unwrap()
            .status()
            .await
            .unwrap()
            .keys,
        0
    );
    http.shutdown().await;

    // A server presenting a certificate meant for clients is refused by
    // the client.
    let wrong_server = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: p("client-only.pem"),
            key: p("client-only.key"),
            client_ca: None,
        }),
        ..Default::default()
    };
    let http = HttpServer::start(server.clone(), wrong_server)
        .await
        .unwrap();
    let trusting = ClientOptions {
        tls: ClientTls {
            ca_cert: Some(p("ca.pem")),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = XmlRpc::with_options(&http.url(), trusting.clone())
        .unwrap()
        .status()
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        11,
        "a server certificate for clients only: {err:?}"
    );
    http.shutdown().await;

    // CA files that are missing or empty: clear errors naming them, at
    // start-up on the server and at construction on the client.
    std::fs::write(p("empty.pem"), "").unwrap();
    for ca in ["missing.pem", "empty.pem"] {
        let mut config = mtls.clone();
        if let Some(tls) = config.tls.as_mut() {
            tls.client_ca = Some(p(ca));
        }
        let err = HttpServer::start(server.clone(), config)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains(ca), "server, {ca}: {err}");
        let options = ClientOptions {
            tls: ClientTls {
                ca_cert: Some(p(ca)),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = XmlRpc::with_options("https://127.0.0.1:1", options.clone()).unwrap_err();
        assert!(err.to_string().contains(ca), "xmlrpc client, {ca}: {err}");
        let err = JsonRpc::with_options("https://127.0.0.1:1", options).unwrap_err();
        assert!(err.to_string().contains(ca), "jsonrpc client, {ca}: {err}");
    }
}
