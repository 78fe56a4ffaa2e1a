//! The notification receivers of `tests/notify_receivers.py` as test handles: a real SMTP
//! server (aiosmtpd) and a webhook receiver that checks nmc's signatures. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/notify_receivers.py")
}

/// Starts the receiver with `args` and waits for its `ready` line.
fn spawn(args: &[String], log: &Path) -> Child {
    super::spawn_ready(
        Command::new("python3").arg(script()).args(args),
        log,
        &format!("receiver {args:?} (python3 of .ci/install-tools' venv, with aiosmtpd)"),
    )
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A received e-mail: the raw message and what the server saw.
#[derive(Debug, Clone)]
pub struct Mail {
    /// File stem (`000001`).
    pub name: String,
    /// The raw message.
    pub raw: PathBuf,
    /// `{"mail_from", "rcpt_tos", "auth_user", "tls"}`.
    pub envelope: Value,
}

impl Mail {
    /// The message parsed by Python's `email` package: `{"headers": {name: [values]},
    /// "parts": [{"content_type", "text"}]}`.
    pub fn parsed(&self) -> Value {
        let out = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/notify/parse_mail.py"))
            .arg(&self.raw)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A real SMTP server on loopback.
pub struct Smtp {
    child: Option<Child>,
    args: Vec<String>,
    /// Its port.
    pub port: u16,
    /// Where messages land.
    pub dir: PathBuf,
    log: PathBuf,
}

impl Smtp {
    /// Starts it: with `tls` (cert, key) it offers STARTTLS; with `auth` (`user:password`) it
    /// requires STARTTLS and AUTH.
    pub fn start(dir: &Path, tls: Option<(&str, &str)>, auth: Option<&str>) -> Smtp {
        let port = super::free_port();
        let out = dir.join("smtp");
        std::fs::create_dir_all(&out).unwrap();
        let mut args = vec![
            "smtp".into(),
            "--port".into(),
            port.to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some((c, k)) = tls {
            args.extend(["--tls-cert".into(), c.into(), "--tls-key".into(), k.into()]);
        }
        if let Some(a) = auth {
            args.extend(["--auth".into(), a.into()]);
        }
        let log = dir.join("smtp.log");
        let child = spawn(&args, &log);
        Smtp {
            child: Some(child),
            args,
            port,
            dir: out,
            log,
        }
    }

    /// Stops it (connections refused from now on).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c);
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn(&self.args, &self.log));
    }

    /// The messages received so far, in arrival order.
    pub fn mails(&self) -> Vec<Mail> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.strip_suffix(".eml").map(str::to_owned)
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| Mail {
                raw: self.dir.join(format!("{n}.eml")),
                envelope: serde_json::from_slice(
                    &std::fs::read(self.dir.join(format!("{n}.json"))).unwrap(),
                )
                .unwrap(),
                name: n,
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived (or `timeout`), then returns them all.
    pub async fn wait(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.mails();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A webhook receiver on loopback that checks signatures with `secret`.
pub struct Webhook {
    child: Child,
    /// Its port.
    pub port: u16,
    /// The JSON-lines log of every request.
    pub out: PathBuf,
}

impl Webhook {
    /// Starts it; the first `fail_first` valid requests are answered 500.
    pub fn start(dir: &Path, name: &str, secret: &str, fail_first: u32) -> Webhook {
        let port = super::free_port();
        let out = dir.join(format!("{name}.jsonl"));
        let args = vec![
            "http".into(),
            "--port".into(),
            port.to_string(),
            "--out".into(),
            out.display().to_string(),
            "--secret".into(),
            secret.into(),
            "--fail-first".into(),
            fail_first.to_string(),
        ];
        let child = spawn(&args, &dir.join(format!("{name}.log")));
        Webhook { child, port, out }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        // The receiver may be writing a line as it is read: only whole lines count.
        let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until at least `n` requests answered 200 (or `timeout`), then returns all.
    pub async fn wait_ok(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.requests();
            if r.iter().filter(|x| x["status"] == 200).count() >= n || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
