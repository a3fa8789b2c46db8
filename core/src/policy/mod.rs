//! The server's policy, as layers around the key service.
//!
//! Each layer is a [`KeyService`] around a [`KeyService`], in the way tower
//! wraps one `Service` in another, and the [`Caller`](crate::api::Caller) travels with each call
//! ([`KeyService::call_as`]). A request takes one road, whoever makes it:
//!
//! ```text
//!  HTTP request ─► codec (XML-RPC | JSON-RPC) ─► credentials ─► Caller ─┐
//!  in-process code ─────────────────────────────► Caller::local() ──────┤
//!  the server's sweeps ─────────────────────────► Caller::server() ─────┤
//!                                                                       ▼
//!   Metrics              calls (refused ones too), latencies, gauges
//!     └ Audit              one MACed line per call, refused ones too; state
//!         │                changes run to the end and are recorded even if
//!         │                the client goes away
//!         └ Authorize      principal, methods, strengths, rate, quota table
//!             └ LifecyclePermission  full right, restrict-only (a KEK's
//!                 │                  holder), or refused
//!                 └ KeyServer<C, S>  the state table, quotas and the
//!                                    restrict-only rule, under its locks
//!                     └ KeyStorage
//! ```
//!
//! The listener (`keyserver::transports::HttpServer`) knows none of these
//! modules: it asks the service it serves to
//! [`authenticate`](KeyService::authenticate) a request's credentials,
//! hands the resulting caller to [`call_as`](KeyService::call_as), and
//! reads `/metrics` and `/readyz` through the same trait.
//!
//! [`Policy`] builds the standard stack:
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use keyserver::api::Caller;
//! use keyserver::backends::{MemoryStorage, RustCrypto};
//! use keyserver::policy::Policy;
//! use keyserver::{KeyServer, KeyService};
//!
//! let keys = Arc::new(KeyServer::new(RustCrypto::new(), MemoryStorage::new()));
//! let service = Policy::new().wrap(keys);
//! let status = service.status().await?;
//! assert_eq!(status.keys, 0);
//! # Ok::<(), keyserver::Error>(())
//! # }).unwrap();
//! ```

use std::sync::Arc;

use crate::api::KeyService;

mod audit;
mod audit_log;
mod authorize;
mod lifecycle;
mod metrics;

pub use audit::Audit;
pub use audit_log::{
    verify_audit, AuditConfig, AuditKey, AuditLog, AuditReport, VerifyOptions,
    DEFAULT_AUDIT_ROTATE, MIN_AUDIT_KEY,
};
pub use authorize::{
    Auth, AuthFile, AuthPolicy, Authorize, Principal, PrincipalSpec, METRICS_GRANT,
};
pub use lifecycle::LifecyclePermission;
pub use metrics::Metrics;

/// The standard policy stack's settings: who may do what, and where calls
/// are recorded.
///
/// ```
/// let policy = keyserver::policy::Policy::new();
/// assert!(policy.auth().is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Policy {
    auth: Option<Arc<Auth>>,
    audit: Option<Arc<AuditLog>>,
}

impl Policy {
    /// No access control, no audit log (metrics are always kept).
    pub fn new() -> Self {
        Policy::default()
    }

    /// Calls admitted by `auth`.
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Every call recorded in `log`.
    pub fn with_audit(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// The access policy, if any.
    pub fn auth(&self) -> Option<&Arc<Auth>> {
        self.auth.as_ref()
    }

    /// The audit log, if any.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// `service` inside the layers: metrics, audit, authorization,
    /// lifecycle permission (outermost first). Metrics and audit sit
    /// outside the decisions so that a refused call is counted and
    /// recorded like any other.
    pub fn wrap(&self, service: Arc<dyn KeyService>) -> Arc<dyn KeyService> {
        let lifecycle: Arc<dyn KeyService> =
            Arc::new(LifecyclePermission::new(service, self.auth.clone()));
        let authorized: Arc<dyn KeyService> =
            Arc::new(Authorize::new(lifecycle, self.auth.clone()));
        let audited: Arc<dyn KeyService> = Arc::new(Audit::new(authorized, self.audit.clone()));
        Arc::new(Metrics::new(audited))
    }
}

/// What a policy layer changes of the service it wraps besides its calls:
/// each hook forwards to the inner service unless the layer's `impl Layer`
/// says otherwise, so a layer writes only what it changes. [`layer!`]
/// makes the `KeyService` methods of the same names call these.
#[async_trait::async_trait]
pub(crate) trait Layer: Send + Sync {
    /// The service this layer wraps.
    fn inner(&self) -> &dyn KeyService;

    /// As [`KeyService::authenticate`].
    fn authenticate(
        &self,
        credentials: &crate::api::Credentials<'_>,
    ) -> Option<crate::api::Identity> {
        self.inner().authenticate(credentials)
    }

    /// As [`KeyService::may_read_metrics`].
    fn may_read_metrics(&self, caller: &crate::api::Caller) -> bool {
        self.inner().may_read_metrics(caller)
    }

    /// As [`KeyService::encode_metrics`].
    fn encode_metrics(&self, out: &mut String) {
        self.inner().encode_metrics(out);
    }

    /// As [`KeyService::refused`].
    fn refused(&self, caller: &crate::api::Caller, method: &str, error: &crate::Error) {
        self.inner().refused(caller, method, error);
    }

    /// As [`KeyService::ready`].
    async fn ready(&self) -> crate::Result<()> {
        self.inner().ready().await
    }

    /// As [`KeyService::sweep`].
    async fn sweep(&self, caller: &crate::api::Caller) -> crate::Result<Vec<crate::KeyId>> {
        self.inner().sweep(caller).await
    }

    /// As [`KeyService::gauges`].
    fn gauges(&self) -> crate::api::Gauges {
        self.inner().gauges()
    }
}

/// A layer's `impl KeyService`: the items given (`call_as`), the hooks of
/// its [`Layer`] impl, and the typed methods, each made a call of
/// [`Caller::local`] through the layer's own `call_as`: in-process code that calls a typed
/// method passes every layer, as a request does.
///
/// [`Caller::local`]: crate::api::Caller::local
macro_rules! layer {
    ($ty:ty, $($body:tt)*) => {
        #[async_trait::async_trait]
        impl $crate::api::KeyService for $ty {
        async fn generate(
            &self,
            strength: Option<$crate::Strength>,
        ) -> $crate::Result<$crate::Kek> {
            self.generate_with_alg(strength, None).await
        }

        async fn generate_with_alg(
            &self,
            strength: Option<$crate::Strength>,
            alg: Option<$crate::KekAlg>,
        ) -> $crate::Result<$crate::Kek> {
            self.call($crate::api::Call::Generate(strength, alg))
                .await?
                .into_kek()
        }

        async fn get_key(&self, kek: &$crate::Kek) -> $crate::Result<$crate::Dek> {
            self.call($crate::api::Call::GetKey(kek.clone()))
                .await?
                .into_dek()
        }

        async fn get_wrapped(
            &self,
            key_id: &$crate::KeyId,
        ) -> $crate::Result<$crate::WrappedDek> {
            self.call($crate::api::Call::GetWrapped(*key_id))
                .await?
                .into_wrapped()
        }

        async fn contains(&self, key_id: &$crate::KeyId) -> $crate::Result<bool> {
            self.call($crate::api::Call::Contains(*key_id))
                .await?
                .into_bool()
        }

        async fn status(&self) -> $crate::Result<$crate::Status> {
            self.call($crate::api::Call::Status).await?.into_status()
        }

        async fn describe(&self, key_id: &$crate::KeyId) -> $crate::Result<$crate::KeyInfo> {
            self.call($crate::api::Call::Describe(*key_id))
                .await?
                .into_info()
        }

        async fn rotate(
            &self,
            kek: &$crate::Kek,
            strength: Option<$crate::Strength>,
        ) -> $crate::Result<$crate::Kek> {
            self.call($crate::api::Call::Rotate(kek.clone(), strength))
                .await?
                .into_kek()
        }

        async fn change(
            &self,
            change: $crate::Change,
            target: &$crate::Target,
        ) -> $crate::Result<$crate::KeyInfo> {
            self.call($crate::api::Call::Change(change, target.clone()))
                .await?
                .into_info()
        }

        async fn list_keys(
            &self,
            filter: &$crate::KeyFilter,
        ) -> $crate::Result<$crate::KeyPage> {
            self.call($crate::api::Call::ListKeys(filter.clone()))
                .await?
                .into_keys()
        }

        async fn call(&self, call: $crate::api::Call) -> $crate::Result<$crate::api::Reply> {
            self.call_as(&$crate::api::Caller::local(), call).await
        }

        fn authenticate(
            &self,
            credentials: &$crate::api::Credentials<'_>,
        ) -> Option<$crate::api::Identity> {
            <$ty as $crate::policy::Layer>::authenticate(self, credentials)
        }

        fn may_read_metrics(&self, caller: &$crate::api::Caller) -> bool {
            <$ty as $crate::policy::Layer>::may_read_metrics(self, caller)
        }

        fn encode_metrics(&self, out: &mut String) {
            <$ty as $crate::policy::Layer>::encode_metrics(self, out);
        }

        fn refused(&self, caller: &$crate::api::Caller, method: &str, error: &$crate::Error) {
            <$ty as $crate::policy::Layer>::refused(self, caller, method, error);
        }

        async fn ready(&self) -> $crate::Result<()> {
            <$ty as $crate::policy::Layer>::ready(self).await
        }

        async fn sweep(&self, caller: &$crate::api::Caller) -> $crate::Result<Vec<$crate::KeyId>> {
            <$ty as $crate::policy::Layer>::sweep(self, caller).await
        }

        fn gauges(&self) -> $crate::api::Gauges {
            <$ty as $crate::policy::Layer>::gauges(self)
        }

        $($body)*
        }
    };
}
pub(crate) use layer;
