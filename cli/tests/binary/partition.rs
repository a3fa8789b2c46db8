//! Partitions: the database and three `keyserver serve` processes each on
//! a host of its own (a network namespace the test makes, joined to the
//! others by a bridge, with an address from 198.18.0.0/15, the range kept
//! for network tests, and no route out), the client on the machine
//! itself. One server is cut off from the database, then the database
//! from every server, then the network heals: a cut-off server answers
//! code 5 within a second (then code 12, "nothing was done", to
//! everything) and `/readyz` 503, a client of all three fails over with no
//! failed call while one server is healthy, and everything serves again
//! by itself after the heal.
//!
//! Needs root (`ip netns`), iproute2 and PostgreSQL: ignored unless asked
//! for (`cargo test -- --ignored partition`, which `.ci/run` does).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyserver::transports::{Failover, JsonRpc};
use keyserver::{Kek, KeyService};

use crate::postgres::within;

const BIN: &str = env!("CARGO_BIN_EXE_keyserver");

/// The network of one test: a bridge on this machine (the client's
/// host, 198.18.N.1) and a namespace per host, each with one veth on the
/// bridge. Removed when dropped, however the test ends.
struct Net {
    n: u8,
    hosts: Vec<&'static str>,
}

impl Net {
    /// The network, or `None` if this machine cannot make one (not root,
    /// no iproute2).
    fn new(hosts: &[&'static str]) -> Option<Net> {
        // One network of this name on a machine: a run that was killed
        // left its hosts behind, and this run removes them (their
        // processes first).
        let net = Net {
            n: 77,
            hosts: Vec::new(),
        };
        net.teardown_named(hosts);
        let mut net = net;
        let bridge = net.bridge();
        let subnet_host = format!("198.18.{}.1/24", net.n);
        if !ip(&["link", "add", &bridge, "type", "bridge"]) {
            return None;
        }
        net.hosts = hosts.to_vec();
        assert!(ip(&["addr", "add", &subnet_host, "dev", &bridge]));
        assert!(ip(&["link", "set", &bridge, "up"]));
        for (i, host) in hosts.iter().enumerate() {
            let ns = net.ns(host);
            let veth = net.veth(host);
            let addr = format!("{}/24", net.addr_of(i));
            assert!(ip(&["netns", "add", &ns]));
            assert!(ip(&["-n", &ns, "link", "set", "lo", "up"]));
            assert!(ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns
            ]));
            assert!(ip(&["link", "set", &veth, "master", &bridge]));
            assert!(ip(&["link", "set", &veth, "up"]));
            assert!(ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]));
            assert!(ip(&["-n", &ns, "link", "set", "eth0", "up"]));
        }
        Some(net)
    }

    fn bridge(&self) -> String {
        format!("ksbr{}", self.n)
    }

    fn ns(&self, host: &str) -> String {
        format!("ks{}-{host}", self.n)
    }

    fn veth(&self, host: &str) -> String {
        format!("ks{}{host}", self.n)
    }

    /// The address of the `i`th host.
    fn addr_of(&self, i: usize) -> String {
        format!("198.18.{}.{}", self.n, 10 + i)
    }

    fn addr(&self, host: &str) -> String {
        let i = self.hosts.iter().position(|h| *h == host).unwrap();
        self.addr_of(i)
    }

    /// `from` no longer hears `to`: packets from `to` to `from` are
    /// dropped on `to`'s host, silently for `from` (no refusal, no reset:
    /// as a cable cut or a firewall that drops).
    fn cut(&self, from: &str, to: &str) {
        assert!(ip(&[
            "-n",
            &self.ns(to),
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.addr(from))
        ]));
    }

    fn heal(&self, from: &str, to: &str) {
        assert!(ip(&[
            "-n",
            &self.ns(to),
            "route",
            "del",
            "blackhole",
            &format!("{}/32", self.addr(from))
        ]));
    }

    /// `host` off the network altogether: its link down.
    fn isolate(&self, host: &str, off: bool) {
        let state = if off { "down" } else { "up" };
        assert!(ip(&["link", "set", &self.veth(host), state]));
    }

    fn teardown_named(&self, hosts: &[&str]) {
        for host in hosts {
            // Whatever still runs in the namespace would outlive it.
            if let Ok(out) = Command::new("ip")
                .args(["netns", "pids", &self.ns(host)])
                .output()
            {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = quiet_ip(&["netns", "del", &self.ns(host)]);
            let _ = quiet_ip(&["link", "del", &self.veth(host)]);
        }
        let _ = quiet_ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let hosts = std::mem::take(&mut self.hosts);
        self.teardown_named(&hosts);
    }
}

fn ip(args: &[&str]) -> bool {
    let out = Command::new("ip").args(args).output();
    match out {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("ip: {e}");
            false
        }
    }
}

fn quiet_ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The database on host `db`, stopped when dropped (before the network
/// goes).
struct Database {
    ns: String,
    dir: tempfile::TempDir,
}

impl Database {
    fn start(net: &Net) -> Database {
        let dir = tempfile::Builder::new()
            .prefix("keyserver-pg-net-")
            .tempdir_in("/tmp")
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = Database {
            ns: net.ns("db"),
            dir,
        };
        let addr = net.addr("db");
        assert!(db.script(
            &["start", db.path(), "5432"],
            &[
                ("PG_CLUSTER_LISTEN", format!("127.0.0.1,{addr}")),
                ("PG_CLUSTER_TRUST", format!("198.18.{}.0/24", net.n)),
            ]
        ));
        db
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn script(&self, args: &[&str], env: &[(&str, String)]) -> bool {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(crate::common::root().join("scripts/pg-cluster"))
            .args(args)
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.status().is_ok_and(|s| s.success())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = self.script(&["stop", self.path()], &[]);
    }
}

/// A `keyserver serve` process on host `host`.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(net: &Net, host: &str) -> Server {
        let storage = format!(
            "postgres://keyserver@{}:5432/keyserver?sslmode=disable&connect_timeout=1",
            net.addr("db")
        );
        let listen = format!("{}:7000", net.addr(host));
        let (child, url) = crate::common::spawn_server(
            Command::new("ip")
                .args(["netns", "exec", &net.ns(host), BIN, "serve"])
                .args(["--listen", &listen, "--storage", &storage, "--insecure"])
                .env("RUST_LOG", "warn")
                .stderr(Stdio::null()),
        );
        Server { child, url }
    }

    /// A client of this server (plain HTTP on the test's own network:
    /// `insecure` said explicitly, as the server's `--insecure`).
    fn client(&self) -> JsonRpc {
        let options = keyserver::transports::ClientOptions {
            insecure: true,
            ..Default::default()
        };
        JsonRpc::with_options(&self.url, options).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn readyz(url: &str) -> u16 {
    match crate::common::raw_http(false)
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Reads every key through the client of all three servers, over and
/// over, until told to stop: how many reads failed, and how many were made.
fn reader(
    all: Arc<Failover<JsonRpc>>,
    keks: Arc<Vec<Kek>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    failed: Arc<AtomicU32>,
    made: Arc<AtomicU32>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let kek = &keks[i % keks.len()];
            i += 1;
            match all.get_key(kek).await {
                Ok(_) => {}
                Err(e) => {
                    eprintln!("a read failed: {e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            made.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (ip netns) and PostgreSQL: cargo test -- --ignored partition"]
async fn partitions_fail_fast_fail_over_and_heal() {
    let hosts = ["db", "s1", "s2", "s3"];
    let Some(net) = Net::new(&hosts) else {
        crate::common::unavailable(
            "network namespaces",
            "ip netns needs root and iproute2 (CI has both)",
        );
        return;
    };
    let db = Database::start(&net);
    let servers: Vec<Server> = ["s1", "s2", "s3"]
        .iter()
        .map(|h| Server::start(&net, h))
        .collect();
    let all = Arc::new(Failover::new(servers.iter().map(Server::client).collect()).unwrap());
    let mut keks = Vec::new();
    for _ in 0..6 {
        keks.push(all.generate(None).await.unwrap());
    }
    for s in &servers {
        for kek in &keks {
            s.client().get_key(kek).await.unwrap();
        }
        assert_eq!(readyz(&s.url).await, 200);
    }
    let keks = Arc::new(keks);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = Arc::new(AtomicU32::new(0));
    let made = Arc::new(AtomicU32::new(0));
    let reading = reader(
        Arc::clone(&all),
        Arc::clone(&keks),
        Arc::clone(&stop),
        Arc::clone(&failed),
        Arc::clone(&made),
    );

    // 1. s1 cut off from the database (nothing the database sends reaches
    // it; what s1 sends is lost in silence): it answers code 5
    // within a second, for a key it never cached, and /readyz 503.
    net.cut("s1", "db");
    let cut = Instant::now();
    let s1 = servers[0].client();
    let unknown = keyserver::KeyId::from_bytes([0x42; 32]);
    let answer = s1.contains(&unknown).await;
    let took = cut.elapsed();
    let err = answer.expect_err("a server cut off from its database cannot say");
    assert_eq!(err.code(), 5, "{err}");
    eprintln!("cut off: code 5 after {took:?} ({err})");
    assert!(
        took < Duration::from_secs(1),
        "a cut-off server answers within a second: {took:?}"
    );
    let started = Instant::now();
    assert_eq!(readyz(&servers[0].url).await, 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Knowing it is cut off, s1 does nothing and says so at once, cached
    // key or not, change or not: code 12 (busy: nothing was done).
    let started = Instant::now();
    let got = s1.get_key(&keks[0]).await;
    assert_eq!(got.map(drop).unwrap_err().code(), 12);
    let change = s1
        .change(
            keyserver::Change::Suspend,
            &keyserver::Target::Kek(keks[1].clone()),
        )
        .await;
    assert_eq!(change.map(drop).unwrap_err().code(), 12);
    assert_eq!(s1.generate(None).await.map(drop).unwrap_err().code(), 12);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // So a client of all three moves even its changes past s1: every
    // generate succeeds.
    for _ in 0..6 {
        let kek = all.generate(None).await.expect("no failed generate");
        all.get_key(&kek).await.unwrap();
    }
    // The others serve; new keys are made and read through them.
    for s in &servers[1..] {
        assert_eq!(readyz(&s.url).await, 200);
    }
    let others = Failover::new(servers[1..].iter().map(Server::client).collect()).unwrap();
    let made_during = others.generate(None).await.unwrap();
    all.get_key(&made_during).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. The database cut off from every server: every server answers
    // code 5 within a second and /readyz 503.
    stop.store(true, Ordering::Relaxed);
    reading.await.unwrap();
    let reads = made.load(Ordering::Relaxed);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no read failed while two servers were healthy ({reads} made)"
    );
    assert!(reads >= 50, "reads went on through the partition: {reads}");
    eprintln!("{reads} reads through the partition of s1, none failed");
    net.isolate("db", true);
    let cut = Instant::now();
    for s in &servers {
        let answer = s.client().contains(&unknown).await;
        let code = answer.unwrap_err().code();
        assert!(code == 5 || code == 12, "code {code}");
    }
    let took = cut.elapsed();
    eprintln!("database cut off: three servers said code 5 after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    for s in &servers {
        let started = Instant::now();
        assert_eq!(readyz(&s.url).await, 503);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 3. Healed: every server serves again by itself, every key made
    // before and during the partition readable through each.
    net.isolate("db", false);
    net.heal("s1", "db");
    let healed = Instant::now();
    for s in &servers {
        within(Duration::from_secs(30), || async {
            readyz(&s.url).await == 200
        })
        .await
        .expect("ready again after the heal");
    }
    eprintln!("healed: all three ready after {:?}", healed.elapsed());
    for s in &servers {
        let c = s.client();
        let took = within(Duration::from_secs(30), || async {
            c.get_key(&made_during).await.is_ok()
        })
        .await
        .expect("serving again after the heal");
        for kek in keks.iter() {
            c.get_key(kek).await.unwrap();
        }
        eprintln!("{} serves again {took:?} after ready", s.url);
    }
    let after = all.generate(None).await.unwrap();
    for s in &servers {
        s.client().get_key(&after).await.unwrap();
    }
    drop(servers);
    drop(db);
    drop(net);
}
