//! The chart's configuration, run for real: `helm template` renders `helm/nmc` with
//! `tests/helm/values/loopback.yaml`; the test takes the node configuration (the ConfigMap's
//! `nmc.toml`), the StatefulSet container's arguments and environment (field references,
//! secret references, mounted secret files) and the apply Job's containers exactly as rendered,
//! rewrites only what must differ on loopback, and runs them against a real nats-server whose
//! authorization `nmc auth nats-config` generated from the forces file the chart renders:
//!
//! - rewritten: `nats_url` (a free loopback port), `data_dir` (a temp dir per pod), `http_listen`
//!   (a free loopback port), `stream_replicas` (1: one server here, 3 in the chart), the
//!   `--config` path, paths of mounted Secrets and ConfigMaps (files in the temp dir laid out as
//!   Kubernetes lays out a volume, `..data` included), and the image's `/usr/share/nmc/rules`
//!   (the repository's `deploy/rules/identity` and `cloud`, which the Dockerfile copies there);
//! - as rendered: every other configuration key, the pod-name node id, every `NMC_*` and
//!   `OTEL_*` variable, the Job's commands and arguments.
//!
//! The console Deployment's container runs the same way (as the admin identity, with the users
//! file of its Secret) and shows the chart's forces and the alert.
//!
//! Both nodes become ready, the Job's `nmc forces apply` (twice, as two upgrades would: the
//! second changes nothing) and `nmc rules push` succeed as the admin identity, every force of
//! the chart's `forces` value is owned by a pod-named node, the API wants the token from its
//! Secret, and an event published by the force's collector raises an alert of the bundled rules
//! and one of the chart's inline rule.
//!
//! Needs `helm` (`HELM`, `.ci/tools/bin/helm` or `PATH`; `.ci/install-tools` installs it). Without
//! it the test is skipped with a message, except under CI (`CI` set), where it fails.

mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use harness::*;
use serde::Deserialize;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The helm binary, or None (then the caller skips, or fails under CI).
fn helm() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HELM") {
        return Some(PathBuf::from(h));
    }
    let local = repo().join(".ci/tools/bin/helm");
    if local.is_file() {
        return Some(local);
    }
    let on_path = Command::new("helm")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(|| PathBuf::from("helm"))
}

/// Every document `helm template` renders for `values`.
fn render(helm: &Path, values: &Path) -> Vec<Value> {
    let out = Command::new(helm)
        .args(["template", "nmc"])
        .arg(repo().join("helm/nmc"))
        .args(["--namespace", "nmc", "-f"])
        .arg(values)
        .output()
        .expect("running helm template");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart rendered no {kind} {name}"))
}

/// Secrets as the cluster would hold them: name -> key -> content.
type Secrets = BTreeMap<String, BTreeMap<String, String>>;

/// Writes `files` as Kubernetes lays out a ConfigMap or Secret volume: the files in a
/// timestamped folder, `..data` pointing at it, and one symlink per key through `..data`.
fn volume(dir: &Path, files: &BTreeMap<String, String>) -> PathBuf {
    let stamp = dir.join("..2026_11_30_12_00_00.000000001");
    std::fs::create_dir_all(&stamp).unwrap();
    for (k, v) in files {
        std::fs::write(stamp.join(k), v).unwrap();
        std::os::unix::fs::symlink(format!("..data/{k}"), dir.join(k)).unwrap();
    }
    std::os::unix::fs::symlink(stamp.file_name().unwrap(), dir.join("..data")).unwrap();
    dir.to_owned()
}

/// Where each of a pod's volume mounts is on this machine: mount path -> local folder.
fn mounts(
    pod: &Value,
    container: &Value,
    docs: &[Value],
    secrets: &Secrets,
    base: &Path,
) -> Vec<(String, PathBuf)> {
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for m in container["volumeMounts"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let mount = m["mountPath"].as_str().unwrap().to_owned();
        if name == "data" {
            continue; // the PVC: data_dir, rewritten in the TOML
        }
        let v = volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("mount {name} names no volume"));
        if v["emptyDir"].is_object() {
            continue; // scratch space (the console's index): data_dir, rewritten in the TOML
        }
        let files: BTreeMap<String, String> = if let Some(s) = v["secret"]["secretName"].as_str() {
            let all = secrets
                .get(s)
                .unwrap_or_else(|| panic!("the chart mounts Secret {s}, which the test lacks"));
            match v["secret"]["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let key = i["key"].as_str().unwrap();
                        (i["path"].as_str().unwrap().to_owned(), all[key].clone())
                    })
                    .collect(),
                None => all.clone(),
            }
        } else if let Some(c) = v["configMap"]["name"].as_str() {
            find(docs, "ConfigMap", c)["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect()
        } else {
            panic!("volume {name}: neither a Secret nor a ConfigMap: {v}");
        };
        let dir = base.join(format!("vol-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        out.push((mount, volume(&dir, &files)));
    }
    out
}

/// A rendered path inside the container, as a path on this machine.
fn local_path(p: &str, mounts: &[(String, PathBuf)], bundled: &Path) -> String {
    if p == "/usr/share/nmc/rules" {
        return bundled.display().to_string();
    }
    for (mount, dir) in mounts {
        if let Some(rest) = p.strip_prefix(mount.as_str())
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", dir.display());
        }
    }
    p.to_owned()
}

/// The container's environment as the kubelet would set it for pod `pod_name`: values with
/// `$(VAR)` expanded, field references, secret references; file paths made local.
fn environment(
    container: &Value,
    pod_name: &str,
    secrets: &Secrets,
    mounts: &[(String, PathBuf)],
    bundled: &Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_owned();
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            local_path(&v, mounts, bundled)
        } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match f {
                "metadata.name" => pod_name.to_owned(),
                "metadata.namespace" => "nmc".to_owned(),
                other => panic!("field reference {other} not emulated"),
            }
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let s = r["name"].as_str().unwrap();
            let k = r["key"].as_str().unwrap();
            secrets
                .get(s)
                .and_then(|m| m.get(k))
                .unwrap_or_else(|| panic!("{name} refers to Secret {s} key {k}, which is missing"))
                .clone()
        } else {
            panic!("env {name}: {e}");
        };
        env.push((name, value));
    }
    env
}

/// A process started from a rendered container, killed on drop; its log shown on failure.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(args: &[String], env: &[(String, String)], log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(nmc_bin())
            .args(args)
            .env_clear()
            .env("NMC_LOG_FORMAT", "text")
            .envs(env.iter().cloned())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting nmc");
        Proc { child, log }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- {} ----", self.log.display());
            for l in log.lines().rev().take(60).collect::<Vec<_>>().iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

async fn nkey_client(url: &str, seed_file: &Path, inbox: Option<String>) -> async_nats::Client {
    let seed = std::fs::read_to_string(seed_file).unwrap();
    let mut opts = async_nats::ConnectOptions::new().nkey(seed.trim().to_owned());
    if let Some(p) = inbox {
        opts = opts.custom_inbox_prefix(p);
    }
    opts.connect(url).await.expect("connecting with an nkey")
}

#[tokio::test]
async fn nodes_run_the_configuration_the_chart_renders() {
    let Some(helm) = helm() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "helm is missing under CI: .ci/install-tools installs it into .ci/tools/bin"
        );
        eprintln!(
            "SKIPPED: helm not found (HELM, .ci/tools/bin/helm or PATH): run .ci/install-tools"
        );
        return;
    };
    let docs = render(&helm, &repo().join("tests/helm/values/loopback.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();

    // The forces file the chart renders, and the identities generated from it.
    let forces_yaml = find(&docs, "ConfigMap", "nmc-forces")["data"]["forces.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    let forces: Vec<String> = serde_norway::from_str::<Value>(&forces_yaml).unwrap()["forces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(forces, ["kent", "essex", "cumbria"]);
    std::fs::write(base.join("forces.yaml"), &forces_yaml).unwrap();
    let auth = base.join("auth");
    let out = Command::new(nmc_bin())
        .args(["auth", "nats-config", "--out"])
        .arg(&auth)
        .arg("--forces-file")
        .arg(base.join("forces.yaml"))
        // The chart's values give each pod its own identity.
        .args(["--nodes", "nmc-0,nmc-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nats = Nats::start_with_config(base, "include \"auth/nats-auth.conf\"\n").await;
    let seed = |id: &str| std::fs::read_to_string(auth.join(format!("{id}.nk"))).unwrap();
    let api_token = "chart-test-api-token-5f1c";
    let secrets: Secrets = [
        ("nmc-nats-node", "node-nmc-0.nk", seed("node-nmc-0")),
        ("nmc-nats-node", "node-nmc-1.nk", seed("node-nmc-1")),
        ("nmc-nats-admin", "admin.nk", seed("admin")),
        ("nmc-http-api", "token", api_token.to_owned()),
        (
            "nmc-console-session",
            "session-key",
            "chart-test-console-session-key-of-32-bytes-or-more".to_owned(),
        ),
        (
            "nmc-console-users",
            "users.yaml",
            format!(
                "users:\n  - name: analyst@ncsoc.example\n    password_hash: \"{}\"\n    groups: [nmc-analyst]\n",
                nmc_node::console::users::hash_password("chart-analyst-pass").unwrap()
            ),
        ),
    ]
    .into_iter()
    .fold(Secrets::new(), |mut all, (s, k, v)| {
        all.entry(s.to_owned()).or_default().insert(k.to_owned(), v);
        all
    });
    // The image's /usr/share/nmc/rules: what the Dockerfile copies there.
    let bundled = base.join("bundled-rules");
    std::fs::create_dir_all(&bundled).unwrap();
    for d in ["identity", "cloud"] {
        std::os::unix::fs::symlink(rules_dir(d), bundled.join(d)).unwrap();
    }

    // The nodes: the StatefulSet's pod template, two replicas as rendered.
    let sts = find(&docs, "StatefulSet", "nmc");
    assert_eq!(sts["spec"]["replicas"], 2);
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let toml_text = find(&docs, "ConfigMap", "nmc-config")["data"]["nmc.toml"]
        .as_str()
        .unwrap();
    let rendered: toml::Table = toml_text.parse().expect("the rendered nmc.toml is TOML");
    assert_eq!(rendered["stream_replicas"].as_integer(), Some(3));
    assert_eq!(rendered["workers"].as_integer(), Some(2));
    let mut nodes = Vec::new();
    let mut https = Vec::new();
    for ordinal in 0..2 {
        let pod_name = format!("nmc-{ordinal}");
        let pdir = base.join(&pod_name);
        std::fs::create_dir_all(&pdir).unwrap();
        let http_port = free_port();
        let mut cfg = rendered.clone();
        cfg.insert("nats_url".into(), nats.url.clone().into());
        cfg.insert(
            "data_dir".into(),
            pdir.join("data").display().to_string().into(),
        );
        cfg.insert(
            "http_listen".into(),
            format!("127.0.0.1:{http_port}").into(),
        );
        cfg.insert("stream_replicas".into(), 1.into());
        let mounted = mounts(pod, container, &docs, &secrets, &pdir);
        let (config_mount, config_dir) = mounted
            .iter()
            .find(|(m, _)| m == "/etc/nmc")
            .expect("the config ConfigMap is mounted at /etc/nmc");
        assert_eq!(config_mount, "/etc/nmc");
        // The file the pod reads, rewritten in place (behind the volume's symlinks).
        std::fs::write(
            config_dir.join("..data/nmc.toml"),
            toml::to_string(&cfg).unwrap(),
        )
        .unwrap();
        let args: Vec<String> = strings(&container["args"])
            .iter()
            .map(|a| local_path(a, &mounted, &bundled))
            .collect();
        assert_eq!(args[..2], ["node", "--config"]);
        let env = environment(container, &pod_name, &secrets, &mounted, &bundled);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("NMC_NODE_ID"), Some(pod_name.as_str()));
        assert_eq!(get("NMC_HTTP_API_TOKEN"), Some(api_token));
        assert!(
            get("NMC_NATS_NKEY").is_some_and(|p| Path::new(p).is_file()),
            "the node's seed is mounted where NMC_NATS_NKEY points: {env:?}"
        );
        assert_eq!(
            get("OTEL_RESOURCE_ATTRIBUTES"),
            Some(format!("k8s.pod.name={pod_name},k8s.namespace.name=nmc").as_str())
        );
        nodes.push(Proc::start(&args, &env, pdir.join("node.log")));
        https.push(format!("http://127.0.0.1:{http_port}"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for h in &https {
        loop {
            if let Ok((200, _)) = http_get(&format!("{h}/readyz")).await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{h} did not become ready in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (code, _) = http_get(&format!("{h}/api/v1/status")).await.unwrap();
        assert_eq!(code, 401, "/api/v1 wants the token of the chart's Secret");
    }

    // The apply Job, container by container in order, run twice (install, then an upgrade).
    let job = find(&docs, "Job", "nmc-apply");
    let jpod = &job["spec"]["template"]["spec"];
    let steps: Vec<Value> = jpod["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(jpod["containers"].as_array().unwrap())
        .cloned()
        .collect();
    assert_eq!(
        steps
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["forces-apply", "rules-push"]
    );
    let jdir = base.join("job");
    std::fs::create_dir_all(&jdir).unwrap();
    let mut outputs = Vec::new();
    for run in 0..2 {
        for (i, c) in steps.iter().enumerate() {
            let cdir = jdir.join(format!("{run}-{i}"));
            std::fs::create_dir_all(&cdir).unwrap();
            let mounted = mounts(jpod, c, &docs, &secrets, &cdir);
            let args: Vec<String> = strings(&c["args"])
                .iter()
                .map(|a| local_path(a, &mounted, &bundled))
                .collect();
            let mut env = environment(c, "nmc-apply-x", &secrets, &mounted, &bundled);
            for (k, v) in &mut env {
                if k == "NMC_NATS_URL" {
                    *v = nats.url.clone();
                }
            }
            let out = tokio::time::timeout(
                Duration::from_secs(60),
                tokio::process::Command::new(nmc_bin())
                    .args(&args)
                    .env_clear()
                    .envs(env)
                    .output(),
            )
            .await
            .expect("a Job step finishes within 60 s")
            .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "Job step {} {args:?} failed: {}{stdout}",
                c["name"],
                String::from_utf8_lossy(&out.stderr)
            );
            outputs.push(stdout);
        }
    }
    for f in &forces {
        assert!(outputs[0].contains(&format!("+ {f} ")), "{}", outputs[0]);
    }
    assert!(
        !outputs[2].contains("+ "),
        "the second apply changes nothing: {}",
        outputs[2]
    );
    assert!(outputs[1].starts_with("rule pack pack-"), "{}", outputs[1]);

    // Every force owned by a pod-named node and running the last pushed pack (a force takes a
    // new pack at its next batch or idle tick; its lease says which pack it runs).
    let pushed = outputs[3]
        .strip_prefix("rule pack ")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("{}", outputs[3]))
        .to_owned();
    let admin = jetstream::new(nkey_client(&nats.url, &auth.join("admin.nk"), None).await);
    let leases = admin.get_key_value("NMC_LEASES").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = nmc_node::cluster::lease::holders(&leases)
            .await
            .unwrap_or_default();
        let settled = forces.iter().all(|f| {
            held.get(f).is_some_and(|h| {
                (h.node_id == "nmc-0" || h.node_id == "nmc-1") && h.status.rule_pack == pushed
            })
        });
        if settled {
            break;
        }
        let seen: Vec<_> = held
            .iter()
            .map(|(f, h)| (f, &h.node_id, &h.status.rule_pack))
            .collect();
        assert!(
            Instant::now() < deadline,
            "forces not all owned by nmc-0/nmc-1 running {pushed}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The pack holds the bundled rules and the chart's inline rule (one file).
    let bundled_files = ["identity", "cloud"]
        .iter()
        .flat_map(|d| std::fs::read_dir(rules_dir(d)).unwrap())
        .filter(|e| {
            let p = e.as_ref().unwrap().path();
            p.extension().is_some_and(|x| x == "yml" || x == "yaml")
        })
        .count();
    assert!(
        outputs[3].contains(&format!(": {} files,", bundled_files + 1)),
        "{}",
        outputs[3]
    );

    // kent's collector publishes a wrong-password sign-in: the chart's inline rule raises an
    // alert (the bundled wrong-password rule only feeds correlations).
    let collector = nkey_client(
        &nats.url,
        &auth.join("collector-kent.nk"),
        Some("_INBOX_collector-kent".into()),
    )
    .await;
    jetstream::new(collector)
        .publish("nmc.events.kent.entra_signin", Bytes::from(failure(1)))
        .await
        .unwrap()
        .await
        .expect("publish ack");
    let reads = wait_for(
        &admin,
        "NMC_ALERTS",
        "nmc.alerts.kent.>",
        1,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )
    .await;
    let raised: Vec<(String, String)> = reads
        .iter()
        .map(|r| {
            let a = r.json();
            (
                a["rule"]["title"].as_str().unwrap_or_default().to_owned(),
                a["rule_pack"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    if raised.is_empty() {
        let dlq = read_all(&admin, "NMC_DLQ", ">").await;
        let dead: Vec<_> = dlq
            .iter()
            .map(|r| (r.subject.clone(), r.headers.clone()))
            .collect();
        let mut kent = Vec::new();
        for h in &https {
            let (_, m) = http_get(&format!("{h}/metrics")).await.unwrap();
            kent.extend(
                m.lines()
                    .filter(|l| l.contains("kent") && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        let info = admin
            .get_stream("NMC_ALERTS")
            .await
            .map(|_| "ok")
            .map_err(|e| e.to_string());
        panic!("alerts {raised:?}; dead letters {dead:?}; stream {info:?}; metrics {kent:#?}");
    }
    assert_eq!(
        raised,
        [("Wrong password (chart inline rule)".to_owned(), pushed)],
        "exactly the inline rule's alert, from the pushed pack"
    );

    // The console: the Deployment's container as rendered (its configuration rewritten only
    // for loopback), as the admin identity, signing in with the users file of its Secret.
    let dep = find(&docs, "Deployment", "nmc-console");
    let cpod = &dep["spec"]["template"]["spec"];
    let ccontainer = &cpod["containers"][0];
    let cdir = base.join("console");
    std::fs::create_dir_all(&cdir).unwrap();
    let mounted = mounts(cpod, ccontainer, &docs, &secrets, &cdir);
    let (_, config_dir) = mounted
        .iter()
        .find(|(m, _)| m == "/etc/nmc-console")
        .expect("the console's ConfigMap is mounted at /etc/nmc-console");
    let mut ccfg: toml::Table = std::fs::read_to_string(config_dir.join("console.toml"))
        .unwrap()
        .parse()
        .expect("the rendered console.toml is TOML");
    let console_port = free_port();
    ccfg.insert("nats_url".into(), nats.url.clone().into());
    let section = ccfg["console"].as_table().unwrap().clone();
    let mut section = section;
    section.insert("listen".into(), format!("127.0.0.1:{console_port}").into());
    section.insert(
        "data_dir".into(),
        cdir.join("index").display().to_string().into(),
    );
    if let Some(u) = section.get("users_file").and_then(|u| u.as_str()) {
        let local = local_path(u, &mounted, &bundled);
        section.insert("users_file".into(), local.into());
    }
    ccfg.insert("console".into(), section.into());
    std::fs::write(
        config_dir.join("..data/console.toml"),
        toml::to_string(&ccfg).unwrap(),
    )
    .unwrap();
    let cargs: Vec<String> = strings(&ccontainer["args"])
        .iter()
        .map(|a| local_path(a, &mounted, &bundled))
        .collect();
    assert_eq!(cargs[..2], ["console", "serve"]);
    let cenv = environment(ccontainer, "nmc-console-x", &secrets, &mounted, &bundled);
    let _console = Proc::start(&cargs, &cenv, cdir.join("console.log"));
    let curl = format!("http://127.0.0.1:{console_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http_get(&format!("{curl}/readyz")).await, Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "the console did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let web = reqwest::Client::new();
    let login = web
        .post(format!("{curl}/api/login"))
        .header("Content-Type", "application/json")
        .body(r#"{"user": "analyst@ncsoc.example", "password": "chart-analyst-pass"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let get = |path: &str| {
        let req = web
            .get(format!("{curl}{path}"))
            .header("Cookie", cookie.clone());
        async move {
            let text = req.send().await.unwrap().text().await.unwrap();
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))
        }
    };
    let overview = get("/api/overview").await;
    let mut shown: Vec<&str> = overview["forces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["force"].as_str().unwrap())
        .collect();
    shown.sort();
    assert_eq!(shown, ["cumbria", "essex", "kent"], "{overview}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = get("/api/alerts").await;
        if page["entries"][0]["alert"]["rule"]["title"] == "Wrong password (chart inline rule)" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the console never showed the alert: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(nodes);
}
