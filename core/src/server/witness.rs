//! A witness of new keys: whoever runs a call (the audit layer) may ask to
//! hear of a key the moment its id is known and before it is stored, so
//! that its own durable record is written while the storage writes the
//! key: two syncs at once instead of one after the other. The storage step
//! ends only once both have: a key is answered only once the witness has
//! it on disk too.
//!
//! The witness travels with the call's task ([`tokio::task_local!`]), so
//! nothing in between (authorization, lifecycle, a custom layer) has to
//! pass it on; a call run elsewhere (another task) simply has none.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{KeyId, Result};

/// A boxed future of the witness's record.
pub type Noted = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Told of each key a call is about to store.
pub trait Witness: Send + Sync {
    /// `key_id` is about to be stored: returns once that is recorded
    /// durably (an error fails the call, whatever the storage did: its key
    /// is then answered to nobody).
    fn storing(&self, key_id: KeyId) -> Noted;
}

tokio::task_local! {
    static WITNESS: Arc<dyn Witness>;
}

/// Runs `call` with `witness` told of every key it stores.
#[cfg(feature = "policy")]
pub async fn witnessed<F: Future>(witness: Arc<dyn Witness>, call: F) -> F::Output {
    WITNESS.scope(witness, call).await
}

/// The witness's record of `key_id`, if this task has a witness.
pub(crate) fn storing(key_id: KeyId) -> Option<Noted> {
    WITNESS.try_with(|w| w.storing(key_id)).ok()
}
