//! The console's pages: rendered by the server from minijinja templates (`pages/*.html`), with
//! one small script (`pages/console.js`) that refreshes the live parts over server-sent
//! events. No build step, no external resources, a strict Content-Security-Policy (scripts
//! and styles from the console itself only). Every page asks the same functions as the API,
//! with the signed-in principal's scope; forms carry the session's CSRF token in a hidden
//! field, checked like the API's header.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use actix_web::cookie::Cookie;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use minijinja::{Environment, Value, context};
use nmc_shared::ForceId;
use nmc_shared::alert::Level;
use nmc_shared::lifecycle::{Action, AuditEntry, State};
use serde::Deserialize;
use uuid::Uuid;

use super::api::{self, Shared};
use super::session::{COOKIE, Session, csrf_ok};
use crate::clock::now_ms;

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const TEMPLATES: [(&str, &str); 11] = [
    ("base.html", include_str!("pages/base.html")),
    ("login.html", include_str!("pages/login.html")),
    ("error.html", include_str!("pages/error.html")),
    ("overview.html", include_str!("pages/overview.html")),
    (
        "overview_table.html",
        include_str!("pages/overview_table.html"),
    ),
    ("queue.html", include_str!("pages/queue.html")),
    ("queue_rows.html", include_str!("pages/queue_rows.html")),
    ("alert.html", include_str!("pages/alert.html")),
    ("lifecycle.html", include_str!("pages/lifecycle.html")),
    ("rules.html", include_str!("pages/rules.html")),
    ("admin.html", include_str!("pages/admin.html")),
];

const LEVELS: [&str; 5] = ["critical", "high", "medium", "low", "informational"];
const STATES: [(&str, &str); 4] = [
    ("new", "New"),
    ("acknowledged", "Acknowledged"),
    ("investigating", "Investigating"),
    ("closed", "Closed"),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, text) in TEMPLATES {
        env.add_template(name, text)
            .unwrap_or_else(|e| panic!("console template {name}: {e:#}"));
    }
    env.add_filter("ts", |ms: i64| time_text(ms, "%Y-%m-%d %H:%M:%S"));
    env.add_filter("iso", |ms: i64| time_text(ms, "%Y-%m-%dT%H:%M:%SZ"));
    env.add_filter("ago", |ms: i64, now: i64| ago(ms, now));
    env.add_filter("phase", |p: String| match p.as_str() {
        "cloud" => "cloud".to_owned(),
        "cloud_and_onprem" => "cloud and on-premise".to_owned(),
        other => other.to_owned(),
    });
    env.add_filter("statename", |s: String| s.replace('_', " "));
    env.add_filter("attack_url", |t: String| attack_url(&t).unwrap_or_default());
    env.add_filter("urlencode", |s: String| encode(&s));
    env
});

/// A serde value for a template.
fn sv<T: serde::Serialize>(v: T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

fn time_text(ms: i64, fmt: &str) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format(fmt).to_string())
        .unwrap_or_default()
}

/// "12 s ago", "3 min ago", "2 h ago", or the date.
fn ago(ms: i64, now: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let secs = (now - ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => time_text(ms, "%Y-%m-%d %H:%M UTC"),
    }
}

/// The MITRE ATT&CK page of a Sigma tag (`attack.t1110.003`, `attack.ta0006`, `attack.g0016`,
/// `attack.s0002`); `None` for tactic names and other tags.
pub fn attack_url(tag: &str) -> Option<String> {
    let id = tag.strip_prefix("attack.")?.to_ascii_uppercase();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (kind, rest) = if let Some(r) = id.strip_prefix("TA") {
        ("tactics", r)
    } else if let Some(r) = id.strip_prefix('T') {
        ("techniques", r)
    } else if let Some(r) = id.strip_prefix('G') {
        ("groups", r)
    } else if let Some(r) = id.strip_prefix('S') {
        ("software", r)
    } else {
        return None;
    };
    let (main, sub) = rest.split_once('.').unwrap_or((rest, ""));
    if !digits(main) || !(sub.is_empty() || digits(sub)) {
        return None;
    }
    let path = if sub.is_empty() {
        id.clone()
    } else {
        id.replace('.', "/")
    };
    Some(format!("https://attack.mitre.org/{kind}/{path}/"))
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(body)
}

/// Renders template `name` (a failure is logged and answered 500 without its detail).
fn render(status: StatusCode, name: &str, ctx: Value) -> HttpResponse {
    match ENV.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(
                template = name,
                error = format!("{e:#}"),
                "console page failed to render"
            );
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><html lang=\"en\"><title>Error</title><p>This page failed: see the console's log.</p></html>".into(),
            )
        }
    }
}

/// The signed-in session of a page request.
fn session_of(req: &HttpRequest, shared: &Shared) -> Option<Session> {
    req.cookie(COOKIE)
        .and_then(|c| shared.sessions.open(c.value(), now_ms()))
}

fn to(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .finish()
}

fn role(s: &Session) -> String {
    let w = &s.who;
    if w.admin {
        "administrator".into()
    } else if w.analyst {
        "analyst".into()
    } else {
        let f: Vec<&str> = w.forces.iter().map(ForceId::as_str).collect();
        format!("contact for {}", f.join(", "))
    }
}

/// What every page of a signed-in user sees.
fn base(s: &Session, page: &str, title: &str) -> Value {
    context! {
        who => sv(&s.who),
        csrf => &s.csrf,
        role => role(s),
        page => page,
        title => title,
        levels => LEVELS,
        states => STATES,
        now => now_ms(),
    }
}

fn failure(s: Option<&Session>, status: StatusCode, title: &str, message: &str) -> HttpResponse {
    let ctx = match s {
        Some(s) => context! { message => message, ..base(s, "error", title) },
        None => context! { page => "error", title => title, message => message },
    };
    render(status, "error.html", ctx)
}

macro_rules! signed_in {
    ($req:expr, $shared:expr) => {
        match session_of(&$req, &$shared) {
            Some(s) => s,
            None => return to("/login"),
        }
    };
}

/// A form post's session: signed in and carrying its CSRF token (else refused).
fn form_session(
    req: &HttpRequest,
    shared: &Shared,
    csrf: &str,
) -> Result<Session, Box<HttpResponse>> {
    let Some(s) = session_of(req, shared) else {
        return Err(Box::new(to("/login")));
    };
    if !csrf_ok(&s, Some(csrf)) {
        return Err(Box::new(failure(
            Some(&s),
            StatusCode::FORBIDDEN,
            "Refused",
            "This form is out of date or did not come from this console: reload the page and try again.",
        )));
    }
    Ok(s)
}

/// The session of a form post, or the answer that refuses it.
macro_rules! form_signed_in {
    ($req:expr, $shared:expr, $csrf:expr) => {
        match form_session(&$req, &$shared, &$csrf) {
            Ok(s) => s,
            Err(refused) => return *refused,
        }
    };
}

/// `GET /login` query.
#[derive(Deserialize)]
pub struct LoginQuery {
    error: Option<String>,
}

/// `GET /login`.
pub async fn login_page(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    q: web::Query<LoginQuery>,
) -> HttpResponse {
    if session_of(&req, &shared).is_some() {
        return to("/");
    }
    let flash = q.error.as_ref().map(|_| "Sign-in failed: try again.");
    render(
        StatusCode::OK,
        "login.html",
        context! {
            page => "login", title => "Sign in",
            oidc => shared.oidc.is_some(), local => shared.users.is_some(),
            flash => flash, flash_kind => "error",
        },
    )
}

/// `POST /login` form.
#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
}

/// `POST /login`: local sign-in from the form.
pub async fn login_form(
    shared: web::Data<Arc<Shared>>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    match api::check_local(&shared, &form.user, &form.password).await {
        Some(who) => {
            let (cookie, _) = api::session_cookie(&shared, who);
            HttpResponse::SeeOther()
                .cookie(cookie)
                .insert_header(("Location", "/"))
                .finish()
        }
        None => render(
            StatusCode::UNAUTHORIZED,
            "login.html",
            context! {
                page => "login", title => "Sign in",
                oidc => shared.oidc.is_some(), local => shared.users.is_some(),
                flash => "Wrong user name or password, or no role in the console.", flash_kind => "error",
            },
        ),
    }
}

/// A form with only the CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`.
pub async fn logout_form(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    form_signed_in!(req, shared, form.csrf);
    let mut gone = Cookie::build(COOKIE, "").path("/").finish();
    gone.make_removal();
    HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header(("Location", "/login"))
        .finish()
}

async fn overview_ctx(shared: &Shared, s: &Session) -> Result<Value, HttpResponse> {
    match api::overview_rows(shared, &s.who).await {
        Ok(rows) => {
            Ok(context! { forces => sv(&rows), ..base(s, "overview", "National overview") })
        }
        Err(e) => Err(failure(
            Some(s),
            StatusCode::SERVICE_UNAVAILABLE,
            "Cluster unreachable",
            &format!("The cluster's registry did not answer: {e:#}"),
        )),
    }
}

/// `GET /`: the national overview.
pub async fn overview(req: HttpRequest, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let s = signed_in!(req, shared);
    match overview_ctx(&shared, &s).await {
        Ok(ctx) => render(StatusCode::OK, "overview.html", ctx),
        Err(r) => r,
    }
}

/// `GET /overview/table`: the overview's table, for live refresh.
pub async fn overview_table(req: HttpRequest, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let Some(s) = session_of(&req, &shared) else {
        return HttpResponse::Unauthorized().finish();
    };
    match overview_ctx(&shared, &s).await {
        Ok(ctx) => render(StatusCode::OK, "overview_table.html", ctx),
        Err(r) => r,
    }
}

/// The queue's filters, as the form sends them.
#[derive(Deserialize, Default, serde::Serialize, Clone)]
pub struct QueueQuery {
    #[serde(default)]
    force: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    before: Option<u64>,
}

/// `YYYY-MM-DDTHH:MM[:SS]` (a datetime-local input, read as UTC) in Unix ms.
fn local_time(s: &str) -> Result<Option<i64>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s.trim(), f).ok())
        .map(|t| Some(t.and_utc().timestamp_millis()))
        .ok_or_else(|| format!("`{s}` is not a date and time (YYYY-MM-DDTHH:MM, UTC)"))
}

impl QueueQuery {
    fn query(&self) -> Result<super::index::Query, String> {
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        Ok(super::index::Query {
            forces: api::list(&opt(&self.force), |f| {
                ForceId::new(f).map_err(|e| e.to_string())
            })?,
            levels: api::list(&opt(&self.level), |l| l.parse::<Level>())?,
            states: api::list(&opt(&self.state), |st| {
                serde_json::from_value::<State>(serde_json::json!(st))
                    .map_err(|_| format!("unknown state `{st}`"))
            })?,
            rule: opt(&self.rule),
            from_ms: local_time(&self.from)?,
            to_ms: local_time(&self.to)?,
            text: opt(&self.q),
            before: self.before,
            limit: 50,
        })
    }

    /// `?k=v&...` of the non-empty filters, with `before` as given.
    fn string(&self, before: Option<u64>) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("force", &self.force),
            ("level", &self.level),
            ("state", &self.state),
            ("rule", &self.rule),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.q),
            ("sort", &self.sort),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", encode(v)));
            }
        }
        if let Some(b) = before {
            parts.push(format!("before={b}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

fn severity(l: Level) -> u8 {
    match l {
        Level::Critical => 0,
        Level::High => 1,
        Level::Medium => 2,
        Level::Low => 3,
        Level::Informational => 4,
    }
}

/// The queue's context; `whole`: the page (with the force choices of its filter form), else
/// only its rows (the live refresh).
async fn queue_ctx(
    shared: &Shared,
    s: &Session,
    q: &QueueQuery,
    whole: bool,
) -> Result<Value, HttpResponse> {
    let query = q.query().map_err(|e| {
        failure(
            Some(s),
            StatusCode::BAD_REQUEST,
            "Filter not understood",
            &e,
        )
    })?;
    let mut page = shared.index.query(&query, &s.who.scope()).map_err(|e| {
        failure(
            Some(s),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Index unavailable",
            &format!("{e:#}"),
        )
    })?;
    if q.sort == "severity" {
        page.entries
            .sort_by_key(|e| (severity(e.alert.rule.level), std::cmp::Reverse(e.seq)));
    }
    let choices: Vec<String> = if !whole {
        Vec::new()
    } else if s.who.admin || s.who.analyst {
        crate::cluster::onboarding::list(&shared.buckets.forces)
            .await
            .map(|m| m.keys().map(|f| f.to_string()).collect())
            .unwrap_or_default()
    } else {
        s.who.forces.iter().map(|f| f.to_string()).collect()
    };
    Ok(context! {
        entries => sv(&page.entries),
        next => page.next,
        before => q.before,
        q => sv(q),
        sort => if q.sort == "severity" { "severity" } else { "newest" },
        force_choices => choices,
        query_string => q.string(q.before),
        first_page => q.string(None),
        next_page => q.string(page.next), ..base(s, "queue", "Alerts")
    })
}

/// `GET /alerts`: the queue.
pub async fn queue(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    q: web::Query<QueueQuery>,
) -> HttpResponse {
    let s = signed_in!(req, shared);
    match queue_ctx(&shared, &s, &q, true).await {
        Ok(ctx) => render(StatusCode::OK, "queue.html", ctx),
        Err(r) => r,
    }
}

/// `GET /alerts/rows`: the queue's rows, for live refresh.
pub async fn queue_rows(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    q: web::Query<QueueQuery>,
) -> HttpResponse {
    let Some(s) = session_of(&req, &shared) else {
        return HttpResponse::Unauthorized().finish();
    };
    match queue_ctx(&shared, &s, &q, false).await {
        Ok(ctx) => render(StatusCode::OK, "queue_rows.html", ctx),
        Err(r) => r,
    }
}

/// An audit entry as the page lists it.
fn audit_row(a: &AuditEntry) -> Value {
    let (action, to_user, outcome) = match &a.action {
        Action::Acknowledge => ("acknowledge", None, None),
        Action::Assign { to } => ("assign", Some(to.clone()), None),
        Action::Close { outcome } => (
            "close",
            None,
            serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned)),
        ),
        Action::Reopen => ("reopen", None, None),
    };
    context! {
        at_ms => a.at_ms, by => &a.by, action => action, to_user => to_user, outcome => outcome,
        from => sv(a.from), to => sv(a.to), note => &a.note,
    }
}

async fn lifecycle_ctx(shared: &Shared, s: &Session, entry: &super::index::Entry) -> Value {
    let audit = shared
        .states
        .audit_trail(&entry.alert.force, entry.alert.id)
        .await
        .unwrap_or_default();
    let rows: Vec<Value> = audit.iter().map(audit_row).collect();
    // The index may not have caught up with a change just made: the bucket has the truth.
    let state = shared
        .states
        .get(&entry.alert.force, entry.alert.id)
        .await
        .ok()
        .flatten()
        .map(|(l, _)| l)
        .or_else(|| entry.state.clone());
    context! {
        id => entry.alert.id.to_string(), state => sv(&state), audit => rows, ..base(s, "alert", &entry.alert.rule.title)
    }
}

fn not_found(s: &Session) -> HttpResponse {
    failure(
        Some(s),
        StatusCode::NOT_FOUND,
        "No such alert",
        "There is no alert with this id that you may see.",
    )
}

/// `GET /alerts/{id}`: an alert, its evidence and lifecycle.
pub async fn alert(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    id: web::Path<Uuid>,
) -> HttpResponse {
    let s = signed_in!(req, shared);
    let Ok(entry) = api::visible(&shared, &s, *id) else {
        return not_found(&s);
    };
    let (fields, evidence) = api::evidence_of(&shared, &entry).await;
    let evidence: Vec<Value> = evidence
        .into_iter()
        .map(|e| {
            context! {
                seq => e.seq, time => e.time, source => e.source, retained => e.retained,
                rows => sv(&e.rows), cut => e.cut,
            }
        })
        .collect();
    let ctx = context! {
        entry => sv(&entry),
        force_name => nmc_shared::force::lookup(entry.alert.force.as_str()).map(|f| f.name),
        fields => fields,
        evidence => evidence, ..lifecycle_ctx(&shared, &s, &entry).await
    };
    render(StatusCode::OK, "alert.html", ctx)
}

/// `GET /alerts/{id}/lifecycle`: the lifecycle part of the alert page, for live refresh.
pub async fn lifecycle(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    id: web::Path<Uuid>,
) -> HttpResponse {
    let Some(s) = session_of(&req, &shared) else {
        return HttpResponse::Unauthorized().finish();
    };
    let Ok(entry) = api::visible(&shared, &s, *id) else {
        return not_found(&s);
    };
    render(
        StatusCode::OK,
        "lifecycle.html",
        lifecycle_ctx(&shared, &s, &entry).await,
    )
}

/// `POST /alerts/{id}/act` form.
#[derive(Deserialize)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    action: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    note: String,
}

/// `POST /alerts/{id}/act`: a lifecycle action from the alert page.
pub async fn act(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    id: web::Path<Uuid>,
    form: web::Form<ActForm>,
) -> HttpResponse {
    let s = form_signed_in!(req, shared, form.csrf);
    let Ok(entry) = api::visible(&shared, &s, *id) else {
        return not_found(&s);
    };
    let mut fields = BTreeMap::from([("action", form.action.as_str())]);
    if !form.to.trim().is_empty() {
        fields.insert("to", form.to.trim());
    }
    if !form.outcome.is_empty() {
        fields.insert("outcome", form.outcome.as_str());
    }
    let Ok(action) = serde_json::from_value::<Action>(serde_json::json!(fields)) else {
        return failure(
            Some(&s),
            StatusCode::BAD_REQUEST,
            "Action not understood",
            "Choose an action (and an outcome to close, a person to assign).",
        );
    };
    let note = Some(form.note.trim()).filter(|n| !n.is_empty());
    match api::apply_action(&shared, &s.who, &entry, &action, note).await {
        Ok(_) => to(&format!("/alerts/{}#lifecycle-h", entry.alert.id)),
        Err((status, e)) => failure(Some(&s), status, "Not done", &e),
    }
}

/// `GET /rules`.
pub async fn rules(req: HttpRequest, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let s = signed_in!(req, shared);
    match api::rules_data(&shared, &s.who).await {
        Ok(data) => render(
            StatusCode::OK,
            "rules.html",
            context! { data => sv(&data), ..base(&s, "rules", "Rules") },
        ),
        Err(e) => failure(
            Some(&s),
            StatusCode::SERVICE_UNAVAILABLE,
            "Rules unavailable",
            &format!("{e:#}"),
        ),
    }
}

/// `GET /admin` query.
#[derive(Deserialize)]
pub struct AdminQuery {
    scope: Option<String>,
    done: Option<String>,
}

async fn admin_page(
    shared: &Shared,
    s: &Session,
    scope: Option<&str>,
    flash: Option<(&str, &str)>,
    status: StatusCode,
) -> HttpResponse {
    if !s.who.admin {
        return failure(
            Some(s),
            StatusCode::FORBIDDEN,
            "Administrators only",
            "Only an administrator may onboard forces and manage contacts.",
        );
    }
    let forces = api::overview_rows(shared, &s.who).await.unwrap_or_default();
    let onboarded: Vec<String> = forces.iter().map(|f| f.force.to_string()).collect();
    let known: Vec<Value> = nmc_shared::force::FORCES
        .iter()
        .map(|f| context! { id => f.id, name => f.name })
        .collect();
    let (contacts, scope_label) = match scope {
        Some(sc) => match super::admin::contacts(shared, &s.who, sc).await {
            Ok(c) => (
                c,
                super::admin::contact_scope(sc)
                    .map(|x| x.to_string())
                    .unwrap_or_default(),
            ),
            Err(e) => return failure(Some(s), e.status(), "Contacts", &e.to_string()),
        },
        None => (Vec::new(), String::new()),
    };
    render(
        status,
        "admin.html",
        context! {
            forces => sv(&forces), onboarded => onboarded, known => known,
            scope => scope, scope_label => scope_label, contacts => sv(&contacts),
            flash => flash.map(|f| f.1), flash_kind => flash.map(|f| f.0), ..base(s, "admin", "Administration")
        },
    )
}

/// What a `done` code says (never text from the URL).
fn done_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "onboarded" => "Force onboarded: a node takes it within seconds.",
        "phase" => "Phase changed: it applies from the force's next batch.",
        "contact" => "Contact saved.",
        "removed" => "Contact removed.",
        _ => return None,
    })
}

/// `GET /admin`.
pub async fn admin(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    q: web::Query<AdminQuery>,
) -> HttpResponse {
    let s = signed_in!(req, shared);
    let flash = q.done.as_deref().and_then(done_text).map(|t| ("ok", t));
    admin_page(&shared, &s, q.scope.as_deref(), flash, StatusCode::OK).await
}

/// `POST /admin/onboard` form.
#[derive(Deserialize)]
pub struct OnboardForm {
    #[serde(default)]
    csrf: String,
    force: String,
    phase: String,
    weight: Option<u32>,
}

async fn after(
    shared: &Shared,
    s: &Session,
    scope: Option<&str>,
    r: Result<(), super::admin::AdminError>,
    done: &str,
) -> HttpResponse {
    match r {
        Ok(()) => to(&match scope {
            Some(sc) => format!("/admin?scope={}&done={done}#contacts-h", encode(sc)),
            None => format!("/admin?done={done}"),
        }),
        Err(e) => {
            admin_page(
                shared,
                s,
                scope,
                Some(("error", &e.to_string())),
                e.status(),
            )
            .await
        }
    }
}

/// `POST /admin/onboard`.
pub async fn onboard(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    form: web::Form<OnboardForm>,
) -> HttpResponse {
    let s = form_signed_in!(req, shared, form.csrf);
    let r = super::admin::onboard(
        &shared,
        &s.who,
        &form.force,
        &form.phase,
        form.weight.unwrap_or(1),
    )
    .await;
    after(&shared, &s, None, r.map(|_| ()), "onboarded").await
}

/// `POST /admin/phase` form.
#[derive(Deserialize)]
pub struct PhaseForm {
    #[serde(default)]
    csrf: String,
    force: String,
    phase: String,
}

/// `POST /admin/phase`.
pub async fn phase(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    form: web::Form<PhaseForm>,
) -> HttpResponse {
    let s = form_signed_in!(req, shared, form.csrf);
    let r = super::admin::set_phase(&shared, &s.who, &form.force, &form.phase).await;
    after(&shared, &s, None, r, "phase").await
}

/// `POST /admin/contacts` form: an e-mail contact.
#[derive(Deserialize)]
pub struct ContactForm {
    #[serde(default)]
    csrf: String,
    scope: String,
    name: String,
    #[serde(default)]
    role: String,
    email: String,
    min_level: String,
    tier: Option<u8>,
}

/// `POST /admin/contacts`.
pub async fn add_contact(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    form: web::Form<ContactForm>,
) -> HttpResponse {
    let s = form_signed_in!(req, shared, form.csrf);
    let contact = serde_json::from_value::<nmc_shared::contact::Contact>(serde_json::json!({
        "name": form.name.trim(),
        "role": form.role.trim(),
        "channels": [{"type": "email", "to": form.email.trim()}],
        "min_level": form.min_level,
        "tier": form.tier.unwrap_or(1),
    }));
    let r = match contact {
        Ok(c) => super::admin::put_contact(&shared, &s.who, &form.scope, c).await,
        Err(e) => Err(super::admin::AdminError::Invalid(format!(
            "contact not understood: {e}"
        ))),
    };
    after(&shared, &s, Some(&form.scope), r, "contact").await
}

/// `POST /admin/contacts/remove` form.
#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    scope: String,
    name: String,
}

/// `POST /admin/contacts/remove`.
pub async fn remove_contact(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    form: web::Form<RemoveForm>,
) -> HttpResponse {
    let s = form_signed_in!(req, shared, form.csrf);
    let r = super::admin::remove_contact(&shared, &s.who, &form.scope, &form.name).await;
    after(&shared, &s, Some(&form.scope), r, "removed").await
}

/// `GET /static/console.css`.
pub async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=300"))
        .body(include_str!("pages/console.css"))
}

/// `GET /static/console.js`.
pub async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=300"))
        .body(include_str!("pages/console.js"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_tags_link_to_mitre() {
        assert_eq!(
            attack_url("attack.t1110.003").as_deref(),
            Some("https://attack.mitre.org/techniques/T1110/003/")
        );
        assert_eq!(
            attack_url("attack.t1078").as_deref(),
            Some("https://attack.mitre.org/techniques/T1078/")
        );
        assert_eq!(
            attack_url("attack.ta0006").as_deref(),
            Some("https://attack.mitre.org/tactics/TA0006/")
        );
        assert_eq!(attack_url("attack.credential_access"), None);
        assert_eq!(attack_url("attack.t10x"), None);
        assert_eq!(attack_url("cve.2021-1234"), None);
    }

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            ENV.get_template(name).unwrap();
        }
    }

    #[test]
    fn queue_filters_read_utc_times_and_round_trip() {
        let q = QueueQuery {
            force: "kent".into(),
            from: "2026-11-30T10:00".into(),
            q: "a b&c".into(),
            ..Default::default()
        };
        let query = q.query().unwrap();
        assert_eq!(query.from_ms, Some(1_796_032_800_000));
        assert_eq!(
            q.string(Some(7)),
            "?force=kent&from=2026-11-30T10%3A00&q=a%20b%26c&before=7"
        );
        assert!(
            QueueQuery {
                to: "yesterday".into(),
                ..Default::default()
            }
            .query()
            .is_err()
        );
    }
}
