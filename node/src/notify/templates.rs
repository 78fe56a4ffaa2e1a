//! Message texts from templates (minijinja): built in, overridable for every force
//! (`<templates_dir>/<name>`) or for one (`<templates_dir>/<force>/<name>`).
//!
//! Templates: `subject.txt`, `summary.txt` (the one-line text of chat messages and webhooks),
//! `email.txt`, `email.html` (auto-escaped), `digest_subject.txt`, `digest.txt`, `digest.html`.
//! Overrides are checked at start-up by rendering them against a sample alert: a broken
//! template stops the node with its name and line instead of failing at 3 a.m. Rendering is
//! bounded (fuel), so an override cannot loop forever.

use std::path::Path;

use anyhow::{Context, Result, bail};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

/// The templates, each built in.
pub const NAMES: [(&str, &str); 7] = [
    ("subject.txt", include_str!("templates/subject.txt")),
    ("summary.txt", include_str!("templates/summary.txt")),
    ("email.txt", include_str!("templates/email.txt")),
    ("email.html", include_str!("templates/email.html")),
    (
        "digest_subject.txt",
        include_str!("templates/digest_subject.txt"),
    ),
    ("digest.txt", include_str!("templates/digest.txt")),
    ("digest.html", include_str!("templates/digest.html")),
];

/// What the single-alert templates see.
#[derive(Serialize)]
pub struct AlertContext<'a> {
    /// The alert.
    pub alert: &'a super::message::AlertView,
    /// Who it is for.
    pub contact: &'a super::sample::ContactView,
}

/// What the digest templates see.
#[derive(Serialize)]
pub struct DigestContext<'a> {
    /// The alerts, in arrival order.
    pub alerts: &'a [super::message::AlertView],
    /// Force id.
    pub force: &'a str,
    /// Force name.
    pub force_name: &'a str,
    /// Who it is for.
    pub contact: &'a super::sample::ContactView,
}

/// Largest template file read.
const MAX_TEMPLATE_BYTES: u64 = 64 * 1024;

/// The loaded templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The built-in templates with the overrides of `dir` (none when empty).
    pub fn load(dir: &Path) -> Result<Templates> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(200_000));
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        for (name, text) in NAMES {
            env.add_template_owned(format!("default/{name}"), text.to_owned())
                .with_context(|| format!("built-in template {name}"))?;
        }
        if !dir.as_os_str().is_empty() {
            load_dir(&mut env, dir, "default")?;
            for entry in std::fs::read_dir(dir)
                .with_context(|| format!("reading the templates directory {}", dir.display()))?
            {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_dir() && !name.starts_with('.') {
                    if nmc_shared::force::lookup(&name).is_none() {
                        bail!(
                            "templates directory {}: `{name}` is not a force id (per-force overrides go in <templates_dir>/<force>/)",
                            dir.display()
                        );
                    }
                    load_dir(&mut env, &entry.path(), &name)?;
                }
            }
        }
        let t = Templates { env };
        t.check()?;
        Ok(t)
    }

    /// Renders template `name` for `force` (its override, else the common one) with `ctx`.
    pub fn render<S: Serialize>(&self, force: &str, name: &str, ctx: &S) -> Result<String> {
        let own = format!("{force}/{name}");
        let tmpl = match self.env.get_template(&own) {
            Ok(t) => t,
            Err(_) => self.env.get_template(&format!("default/{name}"))?,
        };
        tmpl.render(minijinja::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|e| anyhow::anyhow!("rendering template {}: {e:#}", tmpl.name()))
    }

    /// Renders every template of every force against a sample alert.
    fn check(&self) -> Result<()> {
        let sample = super::sample::alert_view();
        let contact = super::sample::contact();
        let mut forces: Vec<String> = self
            .env
            .templates()
            .filter_map(|(n, _)| n.split_once('/').map(|(f, _)| f.to_owned()))
            .collect();
        forces.sort();
        forces.dedup();
        for force in forces {
            for (name, _) in NAMES {
                let out = if name.starts_with("digest") {
                    self.render(
                        &force,
                        name,
                        &DigestContext {
                            alerts: std::slice::from_ref(&sample),
                            force: "kent",
                            force_name: "Kent Police",
                            contact: &contact,
                        },
                    )
                } else {
                    self.render(
                        &force,
                        name,
                        &AlertContext {
                            alert: &sample,
                            contact: &contact,
                        },
                    )
                };
                out.with_context(|| format!("template {name} for {force} does not render"))?;
            }
        }
        Ok(())
    }
}

/// Adds the known template files of `dir` as `<prefix>/<name>`.
fn load_dir(env: &mut Environment<'static>, dir: &Path, prefix: &str) -> Result<()> {
    for (name, _) in NAMES {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        if std::fs::metadata(&path)?.len() > MAX_TEMPLATE_BYTES {
            bail!("template {} is larger than 64 KiB", path.display());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading template {}", path.display()))?;
        env.add_template_owned(format!("{prefix}/{name}"), text)
            .with_context(|| format!("template {} does not parse", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_render_and_html_is_escaped() {
        let t = Templates::load(Path::new("")).unwrap();
        let mut a = super::super::sample::alert_view();
        a.title = "<script>x</script>".into();
        let c = super::super::sample::contact();
        let html = t
            .render(
                "kent",
                "email.html",
                &AlertContext {
                    alert: &a,
                    contact: &c,
                },
            )
            .unwrap();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        let text = t
            .render(
                "kent",
                "email.txt",
                &AlertContext {
                    alert: &a,
                    contact: &c,
                },
            )
            .unwrap();
        assert!(text.contains("<script>"), "plain text is not escaped");
    }

    #[test]
    fn a_force_override_wins_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("kent")).unwrap();
        std::fs::write(
            dir.path().join("kent/subject.txt"),
            "KENT {{ alert.title }}",
        )
        .unwrap();
        let t = Templates::load(dir.path()).unwrap();
        let a = super::super::sample::alert_view();
        let c = super::super::sample::contact();
        let ctx = AlertContext {
            alert: &a,
            contact: &c,
        };
        assert!(
            t.render("kent", "subject.txt", &ctx)
                .unwrap()
                .starts_with("KENT ")
        );
        assert!(
            t.render("essex", "subject.txt", &ctx)
                .unwrap()
                .starts_with("[nmc ")
        );
        std::fs::write(dir.path().join("kent/subject.txt"), "{{ alert.titel }}").unwrap();
        let e = format!("{:#}", Templates::load(dir.path()).err().unwrap());
        assert!(e.contains("subject.txt for kent does not render"), "{e}");
        std::fs::create_dir(dir.path().join("atlantis")).unwrap();
        std::fs::write(dir.path().join("kent/subject.txt"), "ok").unwrap();
        let e = format!("{:#}", Templates::load(dir.path()).err().unwrap());
        assert!(e.contains("not a force id"), "{e}");
    }
}
