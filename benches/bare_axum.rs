//! The baseline of the request path (BENCHMARKS.md): a bare axum handler on
//! the HTTP stack `keyserver serve` is built on (axum, hyper, axum-server,
//! tokio's multi-threaded runtime), which reads the request body and answers
//! a fixed reply: the bytes of a real `get_wrapped` answer, so the two
//! servers send the same response. With `--tls CERT KEY` it serves HTTPS
//! with the very rustls configuration `serve --tls-cert/--tls-key` uses
//! (`keyserver_http::server_config`: the same provider, protocol versions,
//! ALPN and certificate), so the production-configuration figures compare
//! like with like. Whatever `serve` spends beyond this is keyserver's own
//! (parsing, the token check, the lookup, the audit line, metrics,
//! serialisation, limits).
//!
//! ```sh
//! cargo run --release --example bare_axum --features transport-jsonrpc-server,cipher-awslc -- 127.0.0.1:8732 reply.json
//! cargo run --release --example bare_axum --features transport-jsonrpc-server,cipher-awslc -- 127.0.0.1:8732 reply.json --tls cert.pem key.pem
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;

fn usage() -> ! {
    eprintln!("usage: bare_axum ADDRESS REPLY-FILE [--tls CERT KEY]");
    std::process::exit(2)
}

fn fail(message: String) -> ! {
    eprintln!("bare_axum: {message}");
    std::process::exit(1)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(reply)) = (args.next(), args.next()) else {
        usage()
    };
    let tls = match args.next().as_deref() {
        None => None,
        Some("--tls") => match (args.next(), args.next()) {
            (Some(cert), Some(key)) => Some(keyserver_http::TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
                client_ca: None,
            }),
            _ => usage(),
        },
        Some(_) => usage(),
    };
    let address: SocketAddr = address.parse().unwrap_or_else(|_| usage());
    let reply = Bytes::from(
        std::fs::read(&reply).unwrap_or_else(|e| fail(format!("cannot read {reply}: {e}"))),
    );
    let app = Router::new().route(
        "/jsonrpc",
        post(move |body: Bytes| {
            let reply = reply.clone();
            async move {
                // Read, as keyserver must; answer the same bytes.
                std::hint::black_box(&body);
                ([(header::CONTENT_TYPE, "application/json")], reply).into_response()
            }
        }),
    );
    let runtime =
        tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(format!("no runtime: {e}")));
    runtime.block_on(async {
        let listener = std::net::TcpListener::bind(address)
            .unwrap_or_else(|e| fail(format!("cannot listen on {address}: {e}")));
        let service = app.into_make_service();
        let served = match tls {
            Some(files) => {
                let config = keyserver_http::server_config(&files)
                    .unwrap_or_else(|e| fail(format!("TLS: {e}")));
                let config = axum_server::tls_rustls::RustlsConfig::from_config(config);
                println!("bare_axum listening on https://{address}/jsonrpc");
                axum_server::from_tcp_rustls(listener, config)
                    .unwrap_or_else(|e| fail(format!("cannot serve: {e}")))
                    .serve(service)
                    .await
            }
            None => {
                println!("bare_axum listening on http://{address}/jsonrpc");
                axum_server::from_tcp(listener)
                    .unwrap_or_else(|e| fail(format!("cannot serve: {e}")))
                    .serve(service)
                    .await
            }
        };
        if let Err(e) = served {
            fail(e.to_string())
        }
    });
}
