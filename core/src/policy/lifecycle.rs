//! The lifecycle permission layer: who may change a key's state.
//!
//! One rule (docs/LIFECYCLE.md): a caller without the lifecycle grant may
//! only narrow what a key may be used for, never widen it. So:
//!
//! - a caller granted the change's method (an operator), in-process code,
//!   the server itself, and anyone on a loopback listener without access
//!   control get [`LifecycleRight::Full`]: every change the state table
//!   allows, by key id or by KEK;
//! - anyone else who presents the key's KEK (proof of possession) and asks
//!   for a restricting change (`suspend`, `compromised`, `destroy`) gets
//!   [`LifecycleRight::RestrictOnly`], which the server enforces on the
//!   state it reads under its state-change lock: the change is made only if
//!   the key is usable for nothing afterwards that it was not usable for
//!   before (so `compromised` cannot lift an operator's suspension);
//! - every other change is refused (code 13) here.

use std::fmt;
use std::sync::Arc;

use super::Auth;
use crate::api::{Call, Caller, Identity, KeyService, LifecycleRight, Reply};
use crate::{Change, Error, Result, Target};

/// The lifecycle permission layer around `inner` (see the module docs).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use keyserver::api::{Call, Caller, Identity};
/// use keyserver::backends::{MemoryStorage, RustCrypto};
/// use keyserver::policy::LifecyclePermission;
/// use keyserver::{Change, KeyServer, KeyService, Target};
///
/// let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
/// let kek = keys.generate().await?;
/// let layer = LifecyclePermission::new(keys, None);
/// // Anyone on a public listener may suspend a key whose KEK it holds...
/// let holder = Caller::with_identity(Identity::Anonymous { remote: true });
/// layer.call_as(&holder, Call::Change(Change::Suspend, Target::Kek(kek.clone()))).await?;
/// // ...but never resume it.
/// let resume = layer.call_as(&holder, Call::Change(Change::Resume, Target::Kek(kek))).await;
/// assert_eq!(resume.unwrap_err().code(), 13);
/// # Ok::<(), keyserver::Error>(())
/// # }).unwrap();
/// ```
pub struct LifecyclePermission {
    inner: Arc<dyn KeyService>,
    auth: Option<Arc<Auth>>,
}

impl fmt::Debug for LifecyclePermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LifecyclePermission")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl LifecyclePermission {
    /// `inner`, with state changes permitted by the grants of `auth`
    /// (`None`: no access control).
    pub fn new(inner: Arc<dyn KeyService>, auth: Option<Arc<Auth>>) -> Self {
        LifecyclePermission { inner, auth }
    }

    /// Whether `caller` is granted `change` (an operator, or a caller that
    /// owns the server).
    fn granted(&self, caller: &Caller, change: Change) -> bool {
        match (&caller.identity, &self.auth) {
            (Identity::Local | Identity::Server, _) => true,
            (Identity::BadCredentials, _) => false,
            (Identity::Anonymous { remote }, None) => !remote,
            (Identity::Principal(_), None) => true,
            (Identity::Anonymous { .. }, Some(auth)) => {
                auth.current().anonymous().permits_method(change.name())
            }
            (Identity::Principal(name), Some(auth)) => auth
                .current()
                .principal(name)
                .is_some_and(|p| p.permits_method(change.name())),
        }
    }

    /// The right `caller` has for `change` of `target`, or the refusal.
    pub fn right(
        &self,
        caller: &Caller,
        change: Change,
        target: &Target,
    ) -> Result<LifecycleRight> {
        if self.granted(caller, change) {
            return Ok(LifecycleRight::Full);
        }
        match target {
            Target::Kek(_) if change.restricts() => Ok(LifecycleRight::RestrictOnly),
            _ => Err(Error::NotPermitted),
        }
    }
}

super::layer! {
    LifecyclePermission,

    async fn call_as(&self, caller: &Caller, call: Call) -> Result<Reply> {
        match &call {
            Call::Change(change, target) => {
                let mut decided = caller.clone();
                decided.lifecycle = self.right(caller, *change, target)?;
                self.inner.call_as(&decided, call).await
            }
            // Rotating a key already rotated makes a new active key for the
            // same DEK: a widening (after an operator restricted the newer
            // key) that needs the widening grant, `resume`; the server
            // refuses it to anyone else.
            Call::Rotate(..) => {
                let mut decided = caller.clone();
                decided.lifecycle = if self.granted(caller, Change::Resume) {
                    LifecycleRight::Full
                } else {
                    LifecycleRight::RestrictOnly
                };
                self.inner.call_as(&decided, call).await
            }
            _ => self.inner.call_as(caller, call).await,
        }
    }
}

#[async_trait::async_trait]
impl super::Layer for LifecyclePermission {
    fn inner(&self) -> &dyn KeyService {
        &*self.inner
    }
}
