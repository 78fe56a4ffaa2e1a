//! E-mail over SMTP (lettre, rustls on ring): STARTTLS or implicit TLS with authentication,
//! a text and an HTML part, and headers that let a mail rule sort nmc's messages.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::delivery::{Failure, Sent};
use crate::config::{NotifyConfig, SmtpTls};

/// A rendered e-mail.
pub struct Email {
    /// Recipient.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text part.
    pub text: String,
    /// HTML part.
    pub html: String,
    /// `Message-ID` local part (the delivery key): the same delivery always has the same id,
    /// so a mail system can recognise a resend.
    pub message_id: String,
    /// Extra `X-Nmc-*` headers (alert id, force, level).
    pub headers: Vec<(&'static str, String)>,
}

/// The SMTP side of the notifier.
#[derive(Clone)]
pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl Mailer {
    /// A mailer as `cfg` says (none when `smtp_host` is empty).
    pub fn new(cfg: &NotifyConfig) -> Result<Mailer> {
        let from: Mailbox = cfg
            .from
            .parse()
            .with_context(|| format!("notifications.from `{}` is not a mailbox", cfg.from))?;
        if cfg.smtp_host.is_empty() {
            return Ok(Mailer {
                transport: None,
                from,
            });
        }
        let tls = |host: &str| -> Result<TlsParameters> {
            let mut b = TlsParameters::builder(host.to_owned());
            if !cfg.smtp_tls_ca.as_os_str().is_empty() {
                let pem = std::fs::read(&cfg.smtp_tls_ca).with_context(|| {
                    format!(
                        "reading notifications.smtp_tls_ca {}",
                        cfg.smtp_tls_ca.display()
                    )
                })?;
                b = b.add_root_certificate(
                    Certificate::from_pem(&pem).context("notifications.smtp_tls_ca is not PEM")?,
                );
            }
            b.build_rustls().context("setting up TLS for SMTP")
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.smtp_host.clone())
                .port(cfg.smtp_port)
                .timeout(Some(Duration::from_secs(cfg.attempt_timeout_secs)));
        builder = match cfg.smtp_tls {
            SmtpTls::Starttls => builder.tls(Tls::Required(tls(&cfg.smtp_host)?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(&cfg.smtp_host)?)),
            SmtpTls::None => builder.tls(Tls::None),
        };
        if !cfg.smtp_user.is_empty() {
            builder = builder.credentials(Credentials::new(
                cfg.smtp_user.clone(),
                cfg.smtp_password.expose().to_owned(),
            ));
        }
        Ok(Mailer {
            transport: Some(builder.build()),
            from,
        })
    }

    /// Sends one e-mail: [`Sent`] with the server's answer, or why not and whether to retry.
    pub async fn send(&self, mail: &Email) -> Result<Sent, Failure> {
        let Some(transport) = &self.transport else {
            return Err(Failure::permanent(
                "no SMTP server is configured (notifications.smtp_host)",
            ));
        };
        let message = self
            .build(mail)
            .map_err(|e| Failure::permanent(format!("{e:#}")))?;
        match transport.send(message).await {
            Ok(resp) => Ok(Sent {
                response: format!(
                    "{} {}",
                    resp.code(),
                    resp.message().collect::<Vec<_>>().join(" ")
                ),
            }),
            // 5xx answers are permanent (bad address, refused); everything else (4xx,
            // connection refused, TLS, timeouts) is worth another attempt.
            Err(e) if e.is_permanent() => Err(Failure::permanent(smtp_error(&e))),
            Err(e) => Err(Failure::transient(smtp_error(&e))),
        }
    }

    fn build(&self, mail: &Email) -> Result<lettre::Message> {
        let to: Mailbox = mail
            .to
            .parse()
            .with_context(|| format!("`{}` is not a mailbox", mail.to))?;
        let domain = self.from.email.domain().to_owned();
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.trim())
            .message_id(Some(format!("<{}@{domain}>", mail.message_id)));
        for (name, value) in &mail.headers {
            b = b.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.replace(['\r', '\n'], " "),
            ));
        }
        let body = MultiPart::alternative()
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.text.clone()),
            )
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(mail.html.clone()),
            );
        let message = b.multipart(body).context("building the e-mail")?;
        if message.formatted().len() > 10 * 1024 * 1024 {
            bail!("the e-mail is larger than 10 MiB");
        }
        Ok(message)
    }
}

/// An SMTP error as recorded: lettre's message (no credentials in it) with its cause.
fn smtp_error(e: &lettre::transport::smtp::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
