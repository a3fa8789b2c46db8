//! Request bodies: read with a size limit into memory that is wiped on drop.

use crate::{Error, Result};

/// Reads a request body of at most `max` bytes into memory that is wiped on
/// drop. A larger body is read on and thrown away up to a cap (so the client,
/// still sending, gets the "too large" answer rather than a reset
/// connection), then refused with [`Error::TooLarge`].
pub(crate) async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    max: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use http_body_util::BodyExt;
    use zeroize::Zeroize;
    let limit = max as u64;
    let cap = limit.saturating_mul(4).max(16 << 20);
    let too_large = |size| Error::TooLarge { size, limit };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|&n| n > cap) {
        return Err(too_large(size));
    }
    let mut body = body;
    let mut buf =
        zeroize::Zeroizing::new(Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize));
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(Error::Transport {
                message: "the request body could not be read".into(),
                source: None,
            });
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total <= limit {
            buf.extend_from_slice(&data);
        } else {
            buf.zeroize();
            if total > cap {
                break;
            }
        }
        if let Ok(mut owned) = data.try_into_mut() {
            owned.as_mut().zeroize();
        }
    }
    if total > limit {
        return Err(too_large(total));
    }
    Ok(buf)
}
