//! The baseline of the cheap request path (BENCHMARKS.md, issue 18): a bare
//! axum handler on the HTTP stack `keyserver serve` is built on (axum,
//! hyper, tokio's multi-threaded runtime), which reads the request body and
//! answers a fixed reply: the bytes of a real `get_wrapped` answer, so the
//! two servers send the same response. Whatever `serve` spends beyond this
//! is keyserver's own (parsing, key id decoding, the lookup, serialisation,
//! logging, limits).
//!
//! ```sh
//! cargo run --release --example bare_axum --features transport-jsonrpc-server -- 127.0.0.1:8732 reply.json
//! ```

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;

fn usage() -> ! {
    eprintln!("usage: bare_axum ADDRESS REPLY-FILE");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(reply)) = (args.next(), args.next()) else {
        usage()
    };
    let address: SocketAddr = address.parse().unwrap_or_else(|_| usage());
    let reply = Bytes::from(std::fs::read(&reply).unwrap_or_else(|e| {
        eprintln!("bare_axum: cannot read {reply}: {e}");
        std::process::exit(1)
    }));
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
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| {
        eprintln!("bare_axum: no runtime: {e}");
        std::process::exit(1)
    });
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .unwrap_or_else(|e| {
                eprintln!("bare_axum: cannot listen on {address}: {e}");
                std::process::exit(1)
            });
        println!("bare_axum listening on http://{address}/jsonrpc");
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bare_axum: {e}");
            std::process::exit(1)
        }
    });
}
