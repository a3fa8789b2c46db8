//! `keyserver serve`.

use std::sync::Arc;

use std::path::Path;

use keyserver::api::Caller;
use keyserver::policy::{AuditConfig, AuditKey, AuditLog, Auth, AuthFile, AuthPolicy, Policy};
use keyserver::seal::Seal;
use keyserver::transports::HttpServer;
use keyserver::{KeyServer, KeyService};

use super::args::{LogFormat, ServeArgs};
use super::config::{AuditKeySource, ServeConfig};
use super::exit::{io_failure, usage, Failure};
use super::output::print_stdout;
use super::{choice, init_logging};

/// The policy of the auth file at `path`.
fn load_policy(path: &Path) -> Result<AuthPolicy, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io_failure(format!("cannot read the auth file {}", path.display()), e))?;
    let file: AuthFile =
        toml::from_str(&text).map_err(|e| usage(format!("{}: {}", path.display(), e.message())))?;
    AuthPolicy::new(&file).map_err(|e| usage(format!("{}: {e}", path.display())))
}

/// Re-reads the auth file on every SIGHUP: a file that does not load keeps
/// the policy in force, and the log says why.
fn reload_on_sighup(path: std::path::PathBuf, auth: Arc<Auth>) -> Result<(), Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| io_failure("cannot handle signals".into(), e))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match load_policy(&path) {
                Ok(policy) => {
                    auth.replace(policy);
                    tracing::info!(target: "keyserver::server", "auth file {} reloaded", path.display());
                }
                Err(failure) => tracing::warn!(
                    target: "keyserver::server",
                    "auth file not reloaded, the previous policy stays in force: {}",
                    failure.message
                ),
            }
        }
    });
    Ok(())
}

pub(crate) async fn serve(args: ServeArgs, log_format: Option<LogFormat>) -> Result<(), Failure> {
    let config = ServeConfig::resolve(args, log_format)?;
    // Before anything is opened, created or connected to.
    let suite = choice::suite(config.suite)?;
    if config.require_fips && !suite.fips_validated() {
        return Err(usage(format!(
            "--require-fips: the {} cipher suite does not run on a FIPS 140-3 validated module \
             (only --suite awslc built with the cipher-awslc-fips feature does)",
            suite.name()
        )));
    }
    init_logging(config.log_format);
    let mut policy = Policy::new();
    let mut shared_limits = None;
    if let Some(path) = &config.auth {
        let auth = Auth::new(load_policy(path)?);
        reload_on_sighup(path.clone(), Arc::clone(&auth))?;
        shared_limits = Some(Arc::clone(&auth));
        policy = policy.with_auth(auth);
    }
    // A file-size limit (RLIMIT_FSIZE) reached must be a failed write,
    // which the storage and the audit log report, not the death of the
    // process by SIGXFSZ: handling the signal turns its default action off.
    let _xfsz =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
            .map_err(|e| io_failure("cannot handle signals".into(), e))?;
    let audit = match &config.audit {
        Some(settings) => Some(open_audit(settings)?),
        None => None,
    };
    if let Some(audit) = &audit {
        policy = policy.with_audit(Arc::clone(audit));
    }
    // The token before the storage: without it the server does not start.
    let seal = match &config.seal {
        Some(uri) => Some(choice::seal("--seal", uri).await?),
        None => None,
    };
    let stores = choice::stores(&config.storage, config.cache_records, seal.clone()).await?;
    if let (Some(seal), true) = (&seal, config.reseal) {
        reseal_in_background(Arc::clone(&stores.raw), Arc::clone(seal));
    }
    let leader = Arc::clone(&stores.raw);
    let keys = KeyServer::new(suite, stores.serving)
        .with_min_strength(config.strength)
        .with_allowed_strengths(&config.allow_strengths)
        .with_kek_alg(config.kek_alg)
        .with_allowed_kek_algs(&config.allow_kek_algs)
        .with_generate_limit(config.generate_workers, config.generate_queue)
        .with_cryptoperiod(config.cryptoperiod)
        .with_destroy_window(config.destroy_window);
    // Refuse to start with an algorithm the suite cannot make, in one line.
    for alg in keys.allowed_kek_algs() {
        keys.check_kek_alg_support(alg).map_err(|e| {
            usage(format!(
                "--kek-alg {alg} with --suite {}: {e}",
                keys.suite().name()
            ))
        })?;
    }
    let keys = Arc::new(keys.with_kek_pool(config.kek_pool, config.kek_workers));
    let status = keys.status();
    let count_owners = shared_limits.is_some().then(|| {
        let keys = Arc::clone(&keys);
        Box::pin(async move { keys.count_owners().await }) as CountOwners
    });
    if let Some(auth) = shared_limits {
        // The first check-in before serving: a server that cannot check in
        // (its role lacks the rights, say) would admit the whole rate on
        // its own, so it does not start.
        let servers = stores.raw.check_in().await.map_err(|e| {
            usage(format!(
                "cannot check in with the other servers of this storage, which share the rate \
                 limits: {e}"
            ))
        })?;
        auth.share_limits(servers);
        share_limits(auth, Arc::clone(&stores.raw));
    }
    // Everything that acts on keys goes through the policy layers: the
    // listener's calls and the server's own sweeps alike.
    let service = policy.wrap(keys);
    destroy_when_due(Arc::clone(&service), leader, count_owners);
    // Listen for SIGTERM and SIGINT before saying we listen: a signal sent
    // as soon as the line below appears must stop the server gracefully,
    // not kill it with the default action.
    let stop = shutdown_signal()?;
    let server = HttpServer::start(service, config.server).await?;
    // Best effort: a closed stdout must not stop the server.
    let _ = print_stdout(&format!(
        "keyserver listening on {} (XML-RPC at /RPC2, JSON-RPC at /jsonrpc); suite {}, \
         storage {} ({} keys), strength {}, KEK {} ({})\n",
        server.url(),
        if status.fips {
            format!("{} (FIPS 140-3 module)", status.suite)
        } else {
            status.suite.clone()
        },
        choice::redacted(&config.storage),
        status.keys,
        config.strength,
        config.kek_alg,
        config.kek_alg.describe(config.strength),
    ));
    server.run_until(stop).await;
    if let Some(audit) = audit {
        // The writer syncs the lines it holds before the process exits.
        let _ = tokio::task::spawn_blocking(move || audit.close()).await;
    }
    let _ = print_stdout("keyserver stopped\n");
    Ok(())
}

/// The count of the owners' keys, to run before the first sweep
/// ([`KeyServer::count_owners`]).
type CountOwners =
    std::pin::Pin<Box<dyn std::future::Future<Output = keyserver::Result<()>> + Send>>;

/// How often a server checks in with the others sharing its storage.
const CHECK_IN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Shares the principals' rate limits among the servers sharing the
/// storage: every 5 s this server checks in and learns how many servers
/// checked in within 15 s ([`keyserver::KeyStorage::check_in`]); each
/// admits its share. While the storage cannot be reached, the last share
/// holds.
fn share_limits(auth: Arc<Auth>, storage: Arc<dyn keyserver::KeyStorage>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_IN_EVERY);
        loop {
            tick.tick().await;
            match storage.check_in().await {
                Ok(servers) => {
                    if servers != auth.servers() {
                        tracing::info!(target: "keyserver::policy", "{servers} servers share the rate limits");
                    }
                    auth.share_limits(servers);
                }
                Err(e) => {
                    tracing::warn!(target: "keyserver::policy", "cannot check in with the other servers (the rate limits stay shared by {}): {e}", auth.servers());
                }
            }
        }
    });
}

/// How often a server checks (or tries to take) the lead of the
/// scheduled destructions.
const LEAD_CHECK: std::time::Duration = std::time::Duration::from_secs(5);
/// How often the leader destroys the keys whose time has come.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Destroys keys whose destruction time has passed, on one server of those
/// sharing the storage at a time: the one holding its lead
/// ([`keyserver::KeyStorage::try_lead`]; a file or memory store's one
/// server always does). At taking the lead, then every minute (a pass
/// reads every key's metadata; `describe` and the data path destroy a due
/// key they meet at once, and a due key gives nothing in between). The
/// lead is checked every 5 s; when the leader dies another server takes
/// it within that, after the database has released it (at once for a
/// closed connection, within 30 s for a leader cut off).
///
/// With `count_owners`, the owners' keys are counted first (for a storage
/// that does not count them itself), before any sweep, so no request has
/// to and no destruction races the count.
fn destroy_when_due(
    service: Arc<dyn KeyService>,
    storage: Arc<dyn keyserver::KeyStorage>,
    count_owners: Option<CountOwners>,
) {
    tokio::spawn(async move {
        if let Some(count) = count_owners {
            if let Err(e) = count.await {
                tracing::warn!(target: "keyserver::lifecycle", "cannot count the owners' keys (the first generate with a quota will): {e}");
            }
        }
        let mut lease: Option<Box<dyn keyserver::plugin::Lease>> = None;
        let mut last_sweep: Option<std::time::Instant> = None;
        let mut tick = tokio::time::interval(LEAD_CHECK);
        loop {
            tick.tick().await;
            if let Some(held) = &lease {
                if !held.held().await {
                    tracing::warn!(target: "keyserver::lifecycle", "lost the lead of the scheduled destructions");
                    lease = None;
                }
            }
            if lease.is_none() {
                match storage.try_lead().await {
                    Ok(Some(taken)) => {
                        tracing::info!(target: "keyserver::lifecycle", "this server now runs the scheduled destructions");
                        lease = Some(taken);
                        last_sweep = None;
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(target: "keyserver::lifecycle", "cannot take the lead of the scheduled destructions: {e}");
                        continue;
                    }
                }
            }
            if last_sweep.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                continue;
            }
            last_sweep = Some(std::time::Instant::now());
            if let Err(e) = service.sweep(&Caller::server()).await {
                tracing::warn!(target: "keyserver::lifecycle", "scheduled destruction failed: {e}");
            }
        }
    });
}

/// The audit log of `settings`, its key checked: a file private to its
/// owner and long enough, or K custodian shares that rebuild it.
fn open_audit(settings: &super::config::AuditSettings) -> Result<Arc<AuditLog>, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let key = match &settings.key {
        AuditKeySource::Shares(paths) => super::custody::audit_key_from_shares(paths)?,
        AuditKeySource::File(path) => {
            let meta = std::fs::metadata(path).map_err(|e| {
                io_failure(format!("cannot read the audit key {}", path.display()), e)
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(usage(format!(
                    "the audit key {} is readable by others: chmod 600 {}",
                    path.display(),
                    path.display()
                )));
            }
            AuditKey::from_file(path).map_err(|e| usage(e.to_string()))?
        }
    };
    Ok(AuditLog::open(AuditConfig {
        path: settings.log.clone(),
        key,
        rotate_bytes: settings.rotate,
    })?)
}

/// `serve --reseal`: every record not under the seal's key, resealed while
/// the server serves; progress and the end in the log.
fn reseal_in_background(raw: Arc<dyn keyserver::KeyStorage>, seal: Arc<dyn Seal>) {
    tokio::spawn(async move {
        let result = keyserver::seal::reseal_all(&*raw, None, Some(&seal), |report| {
            tracing::info!(
                target: "keyserver::server",
                "reseal: {} keys examined, {} resealed, {} already under {}",
                report.examined,
                report.resealed,
                report.already,
                seal.current_key()
            );
        })
        .await;
        match result {
            Ok(report) => tracing::info!(
                target: "keyserver::server",
                "reseal done: every record is under master key {} ({} resealed, {} already, {} gone)",
                seal.current_key(),
                report.resealed,
                report.already,
                report.gone
            ),
            Err(e) => tracing::error!(
                target: "keyserver::server",
                "reseal stopped (restart with --reseal to resume): {e}"
            ),
        }
    });
}

/// A future that completes on SIGTERM or SIGINT, with both handlers
/// installed before it returns.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Failure> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind: SignalKind| {
        signal(kind).map_err(|e| super::exit::io_failure("cannot handle signals".into(), e))
    };
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
