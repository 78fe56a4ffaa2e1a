//! `nmc contacts add|remove|list|test`: a force's nominated contacts and the national duty
//! contacts (live: the next alert uses them).

use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use nmc_shared::contact::{Channel, Contact, WorkingHours};
use nmc_shared::{ForceId, Level};

use super::NatsArgs;
use crate::contacts::{self, Scope};

/// Whose contacts.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    /// A force's contacts.
    #[arg(long)]
    pub force: Option<ForceId>,
    /// The centre's national duty contacts (told of what no force contact acknowledged).
    #[arg(long)]
    pub national: bool,
}

impl ScopeArgs {
    fn scope(&self) -> Result<Scope> {
        match &self.force {
            Some(f) if nmc_shared::force::lookup(f.as_str()).is_none() => {
                bail!("`{f}` is not in the force registry")
            }
            Some(f) => Ok(Scope::Force(f.clone())),
            None => Ok(Scope::National),
        }
    }
}

/// `nmc contacts ...`
#[derive(Debug, clap::Subcommand)]
// Parsed once per process: boxing the larger arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ContactsCmd {
    /// Add a contact (or, with --replace, change one).
    Add {
        /// Whose.
        #[command(flatten)]
        scope: ScopeArgs,
        /// Contact name: lowercase letters, digits, `-`.
        #[arg(long)]
        name: String,
        /// Their role (shown in messages).
        #[arg(long, default_value = "")]
        role: String,
        /// E-mail address (repeatable).
        #[arg(long)]
        email: Vec<String>,
        /// Signed webhook URL (with --webhook-secret).
        #[arg(long, requires = "webhook_secret")]
        webhook: Option<String>,
        /// Name of the webhook's signing secret in the notifiers' secrets_dir.
        #[arg(long, requires = "webhook")]
        webhook_secret: Option<String>,
        /// Microsoft Teams incoming-webhook URL.
        #[arg(long)]
        teams: Option<String>,
        /// Slack incoming-webhook URL.
        #[arg(long)]
        slack: Option<String>,
        /// Lowest level they are told of.
        #[arg(long, default_value = "medium")]
        min_level: Level,
        /// Escalation tier: 1 told at once, 2 when tier 1 has not acknowledged in time, ...
        #[arg(long, default_value_t = 1)]
        tier: u8,
        /// Working hours, e.g. `08:00-18:00` (with --days; always, when absent).
        #[arg(long)]
        hours: Option<String>,
        /// Working days, 1 = Monday ... 7 = Sunday, e.g. `1-5` or `1,2,3`.
        #[arg(long, default_value = "1-5")]
        days: String,
        /// Time zone of the working hours: Europe/London or UTC.
        #[arg(long, default_value = "Europe/London")]
        timezone: String,
        /// Lowest level they are told of outside working hours (critical always).
        #[arg(long, default_value = "critical")]
        out_of_hours_level: Level,
        /// Single messages a minute before the rest go into a digest (default: the notifier's).
        #[arg(long)]
        max_per_minute: Option<u32>,
        /// Replace a contact of the same name instead of refusing.
        #[arg(long)]
        replace: bool,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Remove a contact.
    Remove {
        /// Whose.
        #[command(flatten)]
        scope: ScopeArgs,
        /// Contact name.
        name: String,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// List contacts (all, or one force's / the national ones), JSON lines with --json.
    List {
        /// Only this force.
        #[arg(long)]
        force: Option<ForceId>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// NATS connection.
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Send a real test message to every channel of a contact, with the notifier's settings
    /// (the `[notifications]` table of --config).
    Test {
        /// Whose.
        #[command(flatten)]
        scope: ScopeArgs,
        /// Contact name.
        name: String,
        /// NATS connection (and, in its --config file, the notification settings).
        #[command(flatten)]
        nats: NatsArgs,
    },
}

fn parse_days(s: &str) -> Result<Vec<u8>> {
    let mut days = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let parse = |x: &str| -> Result<u8> {
            x.trim()
                .parse()
                .with_context(|| format!("`{x}` is not a day number (1 = Monday ... 7 = Sunday)"))
        };
        match part.split_once('-') {
            Some((a, b)) => days.extend(parse(a)?..=parse(b)?),
            None => days.push(parse(part)?),
        }
    }
    Ok(days)
}

async fn directory(nats: &NatsArgs) -> Result<(jetstream::Context, contacts::Directory)> {
    let js = jetstream::new(nats.connect("nmc contacts").await?);
    let d = contacts::open(&js).await?;
    Ok((js, d))
}

/// Runs `nmc contacts ...`.
pub async fn run(cmd: ContactsCmd) -> Result<()> {
    match cmd {
        ContactsCmd::Add {
            scope,
            name,
            role,
            email,
            webhook,
            webhook_secret,
            teams,
            slack,
            min_level,
            tier,
            hours,
            days,
            timezone,
            out_of_hours_level,
            max_per_minute,
            replace,
            nats,
        } => {
            let mut channels: Vec<Channel> =
                email.into_iter().map(|to| Channel::Email { to }).collect();
            if let (Some(url), Some(secret)) = (webhook, webhook_secret) {
                channels.push(Channel::Webhook { url, secret });
            }
            channels.extend(teams.map(|url| Channel::Teams { url }));
            channels.extend(slack.map(|url| Channel::Slack { url }));
            let hours = match hours {
                Some(h) => {
                    let (start, end) = h
                        .split_once('-')
                        .context("--hours is HH:MM-HH:MM, e.g. 08:00-18:00")?;
                    Some(WorkingHours {
                        days: parse_days(&days)?,
                        start: start.trim().into(),
                        end: end.trim().into(),
                        timezone,
                    })
                }
                None => None,
            };
            let contact = Contact {
                name,
                role,
                channels,
                min_level,
                tier,
                hours,
                out_of_hours_level,
                max_per_minute,
            };
            contact.validate()?;
            let scope = scope.scope()?;
            let (_, d) = directory(&nats).await?;
            d.update(&scope, |list| {
                match list.iter().position(|c| c.name == contact.name) {
                    Some(_) if !replace => bail!(
                        "{scope} already has a contact `{}`: use --replace to change it",
                        contact.name
                    ),
                    Some(i) => list[i] = contact.clone(),
                    None => list.push(contact.clone()),
                }
                Ok(())
            })
            .await?;
            println!("contact {} of {scope} saved", contact.name);
        }
        ContactsCmd::Remove { scope, name, nats } => {
            let scope = scope.scope()?;
            let (_, d) = directory(&nats).await?;
            d.update(&scope, |list| {
                let before = list.len();
                list.retain(|c| c.name != name);
                if list.len() == before {
                    bail!("{scope} has no contact `{name}`");
                }
                Ok(())
            })
            .await?;
            println!("contact {name} of {scope} removed");
        }
        ContactsCmd::List { force, json, nats } => {
            let (_, d) = directory(&nats).await?;
            let all = match force {
                Some(f) => {
                    let s = Scope::Force(f);
                    let l = d.list(&s).await?;
                    vec![(s, l)]
                }
                None => d.all().await?,
            };
            for (scope, list) in all {
                let owner = match &scope {
                    Scope::Force(f) => f.to_string(),
                    Scope::National => contacts::NATIONAL.to_owned(),
                };
                for c in list {
                    if json {
                        // Incoming-webhook URLs are credentials: scheme and host only.
                        println!(
                            "{}",
                            serde_json::json!({"scope": owner, "contact": c.redacted()})
                        );
                    } else {
                        let targets: Vec<String> = c
                            .channels
                            .iter()
                            .map(|ch| format!("{}:{}", ch.kind(), ch.display_target()))
                            .collect();
                        println!(
                            "{owner:<20} {:<20} tier {} {:<13} {}",
                            c.name,
                            c.tier,
                            format!("{}+", c.min_level),
                            targets.join(" ")
                        );
                    }
                }
            }
        }
        ContactsCmd::Test { scope, name, nats } => {
            let scope = scope.scope()?;
            let cfg = crate::config::Config::load(nats.config.as_deref())?;
            let (js, d) = directory(&nats).await?;
            let Some(contact) = d.list(&scope).await?.into_iter().find(|c| c.name == name) else {
                bail!("{scope} has no contact `{name}`");
            };
            let notifier = crate::notify::Notifier::new(
                &js,
                &cfg.notifications,
                "nmc-contacts-test",
                None,
                None,
            )
            .await?;
            let mut failed = 0;
            for (channel, result) in notifier.test_contact(&scope, &contact).await {
                match result {
                    Ok(sent) => println!("{channel}: sent ({})", sent.response),
                    Err(f) => {
                        failed += 1;
                        println!("{channel}: FAILED ({})", f.reason);
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} channel(s) of {name} could not be reached");
            }
        }
    }
    Ok(())
}
