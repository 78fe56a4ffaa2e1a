//! The console's JSON API. Every handler takes the signed-in [`Principal`] from the session
//! cookie (401 without a valid one) and asks the index with the principal's scope, so another
//! force's alert is not found (404) rather than forbidden; every state change also needs the
//! session's CSRF token in `X-CSRF-Token` (403 without it).

use std::sync::Arc;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use nmc_shared::ForceId;
use nmc_shared::alert::Level;
use nmc_shared::lifecycle::{Action, State};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::access::{Principal, RoleMapping};
use super::index::{AlertIndex, Query};
use super::session::{COOKIE, CSRF_HEADER, Session, Sessions, csrf_ok};
use super::users::Users;
use crate::alert_state::AlertStates;
use crate::clock::now_ms;

/// What the handlers share.
pub struct Shared {
    /// The index.
    pub index: AlertIndex,
    /// Lifecycle records and audit trail.
    pub states: AlertStates,
    /// Session signing.
    pub sessions: Sessions,
    /// Local users (if configured).
    pub users: Option<Users>,
    /// Groups to roles.
    pub roles: RoleMapping,
    /// JetStream, where evidence is read from (the alert's force's events stream).
    pub js: async_nats::jetstream::Context,
    /// The coordination buckets (onboarded forces, leases with their holders' reports).
    pub buckets: crate::cluster::Buckets,
    /// OpenID Connect sign-in, when configured.
    pub oidc: Option<super::oidc::Oidc>,
    /// The contact directory (administration).
    pub contacts: crate::contacts::Directory,
    /// The rule pack in force and its history.
    pub catalog: super::catalog::Catalog,
    /// The console's metrics.
    pub metrics: Arc<super::metrics::ConsoleMetrics>,
}

/// Cookie of an OpenID Connect sign-in in progress (state, nonce, PKCE verifier).
const OIDC_COOKIE: &str = "nmc_oidc";

/// The session cookie of a new session for `who`, and the session.
pub(super) fn session_cookie(shared: &Shared, who: Principal) -> (Cookie<'static>, Session) {
    let session = shared.sessions.start(who, now_ms());
    let cookie = Cookie::build(COOKIE, shared.sessions.seal(&session))
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::milliseconds(
            shared.sessions.ttl_ms,
        ))
        .finish();
    (cookie, session)
}

/// `GET /auth/login`: to the identity provider.
pub async fn oidc_login(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    let Some(oidc) = &shared.oidc else {
        return error(
            StatusCode::NOT_FOUND,
            "OpenID Connect sign-in is not configured (console.oidc)",
        );
    };
    match oidc.start(now_ms()).await {
        Ok((url, pending)) => {
            // Lax, not Strict: the provider's redirect back is a cross-site navigation.
            let cookie = Cookie::build(OIDC_COOKIE, shared.sessions.seal_value(&pending))
                .path("/auth")
                .http_only(true)
                .secure(true)
                .same_site(SameSite::Lax)
                .max_age(actix_web::cookie::time::Duration::minutes(10))
                .finish();
            HttpResponse::SeeOther()
                .cookie(cookie)
                .insert_header(("Location", url))
                .finish()
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "OpenID Connect sign-in could not start"
            );
            error(
                StatusCode::BAD_GATEWAY,
                "the identity provider cannot be reached: try again shortly",
            )
        }
    }
}

/// `GET /auth/callback` query.
#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /auth/callback`: back from the identity provider.
pub async fn oidc_callback(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    q: web::Query<Callback>,
) -> HttpResponse {
    let Some(oidc) = &shared.oidc else {
        return error(
            StatusCode::NOT_FOUND,
            "OpenID Connect sign-in is not configured",
        );
    };
    if let Some(e) = &q.error {
        return error(
            StatusCode::UNAUTHORIZED,
            &format!("the identity provider refused: {e}"),
        );
    }
    let pending: Option<super::oidc::Pending> = req
        .cookie(OIDC_COOKIE)
        .and_then(|c| shared.sessions.open_value(c.value()))
        .filter(|p: &super::oidc::Pending| p.exp_ms > now_ms());
    let (Some(pending), Some(code), Some(state)) = (pending, &q.code, &q.state) else {
        return error(
            StatusCode::BAD_REQUEST,
            "no sign-in in progress from this browser: start again at /auth/login",
        );
    };
    if !crate::secret::Secret::new(pending.state.clone()).matches(state.as_bytes()) {
        return error(
            StatusCode::BAD_REQUEST,
            "the state does not match this browser's sign-in: start again at /auth/login",
        );
    }
    let identity = match oidc.finish(&pending, code).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "OpenID Connect sign-in refused");
            shared.metrics.sign_in("oidc", false);
            return error(
                StatusCode::UNAUTHORIZED,
                "the sign-in could not be verified",
            );
        }
    };
    let who = shared.roles.principal(&identity.user, &identity.groups);
    shared.metrics.sign_in("oidc", who.is_some());
    let Some(who) = who else {
        return error(
            StatusCode::FORBIDDEN,
            "signed in, but no console role: ask for an nmc group",
        );
    };
    let (cookie, _) = session_cookie(&shared, who);
    let mut gone = Cookie::build(OIDC_COOKIE, "").path("/auth").finish();
    gone.make_removal();
    HttpResponse::SeeOther()
        .cookie(cookie)
        .cookie(gone)
        .insert_header(("Location", "/"))
        .finish()
}

/// An API error: status and a message that says what to do.
pub(super) fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message}))
}

/// The signed-in session of a request.
pub struct Authed(pub Session);

impl FromRequest for Authed {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Authed, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let shared = req
            .app_data::<web::Data<Arc<Shared>>>()
            .expect("shared state");
        let session = req
            .cookie(COOKIE)
            .and_then(|c| shared.sessions.open(c.value(), now_ms()));
        std::future::ready(match session {
            Some(s) => Ok(Authed(s)),
            None => Err(actix_web::error::InternalError::from_response(
                "no session",
                error(StatusCode::UNAUTHORIZED, "sign in first (POST /api/login)"),
            )
            .into()),
        })
    }
}

/// The refusal of a state change without the session's CSRF token (`None`: it has it).
pub(super) fn check_csrf(req: &HttpRequest, s: &Session) -> Option<HttpResponse> {
    let presented = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    (!csrf_ok(s, presented)).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "missing or wrong X-CSRF-Token: send the token of GET /api/session",
        )
    })
}

/// Alert `id` if the session's principal may see it; otherwise 404, the same as an id that
/// does not exist.
pub(super) fn visible(
    shared: &Shared,
    s: &Session,
    id: Uuid,
) -> Result<super::index::Entry, Box<HttpResponse>> {
    match shared.index.get(id, &s.who.scope()) {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(Box::new(error(StatusCode::NOT_FOUND, "no such alert"))),
        Err(e) => Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{e:#}"),
        ))),
    }
}

/// `POST /api/login` body.
#[derive(Deserialize)]
pub struct Login {
    user: String,
    password: String,
}

/// The principal of a local user whose password is right (`None`: wrong name or password,
/// or no role; the same answer for each).
pub(super) async fn check_local(shared: &Shared, user: &str, password: &str) -> Option<Principal> {
    let users = shared.users.clone()?;
    let (name, password) = (user.to_owned(), password.to_owned());
    // argon2 is deliberately slow: off the async threads.
    let found = web::block(move || users.check(&name, &password).cloned())
        .await
        .ok()
        .flatten();
    let who = found.and_then(|u| shared.roles.principal(&u.name, &u.groups));
    shared.metrics.sign_in("local", who.is_some());
    who
}

/// Signs in with the local users file.
pub async fn login(shared: web::Data<Arc<Shared>>, body: web::Json<Login>) -> HttpResponse {
    if shared.users.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "local sign-in is not configured (console.users_file)",
        );
    }
    let Some(who) = check_local(&shared, &body.user, &body.password).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "wrong user name or password, or no role in the console",
        );
    };
    let (cookie, session) = session_cookie(&shared, who);
    HttpResponse::Ok()
        .cookie(cookie)
        .json(json!({"who": session.who, "csrf": session.csrf}))
}

/// Signs out (the cookie is removed).
pub async fn logout(req: HttpRequest, Authed(s): Authed) -> HttpResponse {
    if let Some(refused) = check_csrf(&req, &s) {
        return refused;
    }
    let mut gone = Cookie::build(COOKIE, "").path("/").finish();
    gone.make_removal();
    HttpResponse::Ok()
        .cookie(gone)
        .json(json!({"signed_out": true}))
}

/// Who is signed in, and the CSRF token.
pub async fn session(Authed(s): Authed) -> HttpResponse {
    HttpResponse::Ok().json(json!({"who": s.who, "csrf": s.csrf, "expires_ms": s.exp_ms}))
}

/// `GET /api/alerts` query.
#[derive(Deserialize, Default)]
pub struct AlertsQuery {
    force: Option<String>,
    level: Option<String>,
    state: Option<String>,
    rule: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    q: Option<String>,
    before: Option<u64>,
    limit: Option<usize>,
}

pub(super) fn list<T>(
    v: &Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    v.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse)
        .collect()
}

/// A page of the alerts the principal may see, newest first.
pub async fn alerts(
    shared: web::Data<Arc<Shared>>,
    Authed(s): Authed,
    q: web::Query<AlertsQuery>,
) -> HttpResponse {
    let parsed = (|| -> Result<Query, String> {
        Ok(Query {
            forces: list(&q.force, |f| ForceId::new(f).map_err(|e| e.to_string()))?,
            levels: list(&q.level, |l| l.parse::<Level>())?,
            states: list(&q.state, |st| {
                serde_json::from_value::<State>(json!(st)).map_err(|_| {
                    format!("unknown state `{st}`: new, acknowledged, investigating or closed")
                })
            })?,
            rule: q.rule.clone(),
            from_ms: q.from_ms,
            to_ms: q.to_ms,
            text: q.q.clone(),
            before: q.before,
            limit: q.limit.unwrap_or(50),
        })
    })();
    let query = match parsed {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match shared.index.query(&query, &s.who.scope()) {
        Ok(page) => HttpResponse::Ok().json(page),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

/// One alert with its audit trail (404 if the principal may not see it).
pub async fn alert(
    shared: web::Data<Arc<Shared>>,
    Authed(s): Authed,
    id: web::Path<Uuid>,
) -> HttpResponse {
    let entry = match visible(&shared, &s, *id) {
        Ok(e) => e,
        Err(refused) => return *refused,
    };
    let audit = shared
        .states
        .audit_trail(&entry.alert.force, entry.alert.id)
        .await
        .unwrap_or_default();
    HttpResponse::Ok().json(json!({"entry": entry, "audit": audit}))
}

/// `POST /api/alerts/{id}/actions` body: an action (`{"action": "acknowledge"}`,
/// `{"action": "close", "outcome": "benign"}`, ...) and an optional note.
#[derive(Deserialize)]
pub struct ActionBody {
    #[serde(flatten)]
    action: Action,
    note: Option<String>,
}

/// Takes `action` on `entry` as `who`: records the alert as new first if no notifier did,
/// then applies the action with compare-and-set; the error is the status and what to do.
pub(super) async fn apply_action(
    shared: &Shared,
    who: &Principal,
    entry: &super::index::Entry,
    action: &Action,
    note: Option<&str>,
) -> Result<nmc_shared::lifecycle::Lifecycle, (StatusCode, String)> {
    shared
        .states
        .record_new(&entry.alert.force, entry.alert.id, entry.published_ms)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))?;
    let (state, _) = shared
        .states
        .act(
            &entry.alert.force,
            entry.alert.id,
            action,
            &who.user,
            note,
            now_ms(),
        )
        .await
        .map_err(|e| (StatusCode::CONFLICT, format!("{e:#}")))?;
    let _ = shared.index.set_state(entry.alert.id, &state);
    Ok(state)
}

/// Takes a lifecycle action on an alert the principal may see, as them.
pub async fn act(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    Authed(s): Authed,
    id: web::Path<Uuid>,
    body: web::Json<ActionBody>,
) -> HttpResponse {
    if let Some(refused) = check_csrf(&req, &s) {
        return refused;
    }
    let entry = match visible(&shared, &s, *id) {
        Ok(e) => e,
        Err(refused) => return *refused,
    };
    match apply_action(&shared, &s.who, &entry, &body.action, body.note.as_deref()).await {
        Ok(state) => HttpResponse::Ok().json(json!({"lifecycle": state})),
        Err((status, e)) => error(status, &e),
    }
}

/// One evidence event as the console shows it.
#[derive(serde::Serialize)]
pub struct EvidenceItem {
    /// Its sequence in the force's events stream.
    pub seq: u64,
    /// Its event time.
    pub time: String,
    /// Its source, when retained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Whether the force's events stream still holds it.
    pub retained: bool,
    /// The event as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
    /// Paths of the fields the rule reads.
    pub matched: Vec<String>,
    /// Its fields flattened, the rule's marked (for the pages).
    #[serde(skip)]
    pub rows: Vec<nmc_shared::evidence_view::FieldRow>,
    /// Whether rows were left out.
    #[serde(skip)]
    pub cut: bool,
}

/// The evidence events of `entry`, read from its force's events stream by sequence while retained
/// ([`crate::bus::evidence_event`]: only events of the alert's own force with the evidence's
/// time, whatever the record says), with the fields its rule reads.
pub(super) async fn evidence_of(
    shared: &Shared,
    entry: &super::index::Entry,
) -> (Vec<String>, Vec<EvidenceItem>) {
    let fields = shared.catalog.fields_of(&entry.alert.rule.id).await;
    let mut out = Vec::new();
    for ev in &entry.alert.evidence {
        let fetched = crate::bus::evidence_event(&shared.js, &entry.alert.force, ev).await;
        let mut item = EvidenceItem {
            seq: ev.seq,
            time: ev.time.clone(),
            source: None,
            retained: false,
            event: None,
            matched: Vec::new(),
            rows: Vec::new(),
            cut: false,
        };
        if let Some((source, raw)) = fetched {
            let event = serde_json::from_slice::<serde_json::Value>(&raw.payload)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&raw.payload)));
            let (rows, cut) = nmc_shared::evidence_view::rows(source, &event, &fields);
            item.matched = rows
                .iter()
                .filter(|r| r.matched)
                .map(|r| r.path.clone())
                .collect();
            item.rows = rows;
            item.cut = cut;
            item.source = Some(source.as_str().to_owned());
            item.retained = true;
            item.event = Some(event);
        }
        out.push(item);
    }
    (fields, out)
}

/// The evidence events of an alert the principal may see, with the fields its rule reads.
pub async fn evidence(
    shared: web::Data<Arc<Shared>>,
    Authed(s): Authed,
    id: web::Path<Uuid>,
) -> HttpResponse {
    let entry = match visible(&shared, &s, *id) {
        Ok(e) => e,
        Err(refused) => return *refused,
    };
    let (fields, items) = evidence_of(&shared, &entry).await;
    HttpResponse::Ok().json(json!({"alert": entry.alert.id, "fields": fields, "evidence": items}))
}

/// Server-sent events: every new alert and lifecycle change the principal may see, as it
/// happens (`event: alert` / `event: state`, JSON data), with a comment every 15 s to keep
/// proxies from closing the stream.
pub async fn stream(shared: web::Data<Arc<Shared>>, Authed(s): Authed) -> HttpResponse {
    use futures::StreamExt;
    let who = s.who;
    let changes = shared.index.subscribe();
    let events = futures::stream::unfold(changes, move |mut rx| {
        let who = who.clone();
        async move {
            loop {
                let next =
                    tokio::time::timeout(std::time::Duration::from_secs(15), rx.recv()).await;
                let chunk = match next {
                    Err(_) => ": keep-alive\n\n".to_owned(),
                    Ok(Ok(change)) => {
                        if !who.sees(change.force()) {
                            continue;
                        }
                        let kind = match &change {
                            super::index::Change::Alert { .. } => "alert",
                            super::index::Change::State { .. } => "state",
                        };
                        let data = serde_json::to_string(&change).unwrap_or_default();
                        format!("event: {kind}\ndata: {data}\n\n")
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                        format!("event: lagged\ndata: {{\"missed\": {n}}}\n\n")
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                };
                return Some((Ok::<_, actix_web::Error>(bytes::Bytes::from(chunk)), rx));
            }
        }
    })
    .boxed_local();
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(events)
}

/// One force as the overview shows it.
#[derive(serde::Serialize)]
pub struct ForceRow {
    /// Its id.
    pub force: ForceId,
    /// Its name.
    pub name: Option<&'static str>,
    /// Onboarding phase.
    pub phase: &'static str,
    /// Placement weight.
    pub weight: u32,
    /// The node holding it.
    pub owner: Option<String>,
    /// That node's lease epoch.
    pub epoch: Option<u64>,
    /// Messages still to read.
    pub lag: Option<u64>,
    /// Events in the reorder buffer.
    pub pending: Option<u64>,
    /// Feed health per source.
    pub feeds: Vec<FeedRow>,
    /// Open alerts by level.
    pub open_alerts: std::collections::BTreeMap<Level, u64>,
}

/// One feed (a force's source) in the overview.
#[derive(serde::Serialize)]
pub struct FeedRow {
    /// The source.
    pub source: String,
    /// Event time of its newest event, Unix ms.
    pub last_event_ms: i64,
    /// When the force's events stream stored its newest event, Unix ms.
    pub last_ingest_ms: i64,
    /// Events in the last whole minute.
    pub per_minute: u64,
    /// Silent for longer than its source may be.
    pub silent: bool,
}

/// The forces `who` may see: phase, weight, owner node, lease epoch, lag and pending events
/// as the owner last reported, feed health per source, and open alerts by level.
pub(super) async fn overview_rows(
    shared: &Shared,
    who: &Principal,
) -> anyhow::Result<Vec<ForceRow>> {
    let forces = crate::cluster::onboarding::list(&shared.buckets.forces).await?;
    let holders = crate::cluster::lease::holders(&shared.buckets.leases)
        .await
        .unwrap_or_default();
    let open = shared.index.open_counts(&who.scope())?;
    let now = now_ms();
    Ok(forces
        .iter()
        .filter(|(f, _)| who.sees(f))
        .map(|(f, r)| {
            let h = holders.get(f.as_str());
            ForceRow {
                force: f.clone(),
                name: nmc_shared::force::lookup(f.as_str()).map(|i| i.name),
                phase: r.phase.as_str(),
                weight: r.weight,
                owner: h.map(|h| h.node_id.clone()),
                epoch: h.map(|h| h.status.epoch),
                lag: h.map(|h| h.status.lag),
                pending: h.map(|h| h.status.pending),
                feeds: h
                    .map(|h| {
                        h.status
                            .feeds
                            .iter()
                            .map(|(source, feed)| FeedRow {
                                source: source.clone(),
                                last_event_ms: feed.event_ms,
                                last_ingest_ms: feed.ingest_ms,
                                per_minute: feed.per_minute(now),
                                silent: feed.silent(now),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                open_alerts: open.get(f).cloned().unwrap_or_default(),
            }
        })
        .collect())
}

/// `GET /api/overview`: the forces the principal may see.
pub async fn overview(shared: web::Data<Arc<Shared>>, Authed(s): Authed) -> HttpResponse {
    match overview_rows(&shared, &s.who).await {
        Ok(rows) => HttpResponse::Ok().json(json!({"forces": rows})),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
    }
}

/// One rule of the pack in force, with how often it fired in what the principal may see.
#[derive(serde::Serialize)]
pub struct RuleRow {
    /// Rule id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Level.
    pub level: Level,
    /// `detection`, `filter` or the correlation type.
    pub kind: &'static str,
    /// Sigma status.
    pub status: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Alerts it raised.
    pub fired: u64,
    /// When it last raised one, Unix ms (0: never).
    pub last_fired_ms: i64,
}

/// The rules page's data: the pack in force, its rules with fire counts, and the history.
pub(super) async fn rules_data(
    shared: &Shared,
    who: &Principal,
) -> anyhow::Result<serde_json::Value> {
    let counts = shared.index.fire_counts(&who.scope())?;
    let current = shared.catalog.current().await?;
    let mut rules: Vec<RuleRow> = current
        .as_ref()
        .map(|v| {
            v.docs
                .iter()
                .map(|d| {
                    let (fired, last) = counts.get(&d.id).copied().unwrap_or_default();
                    RuleRow {
                        id: d.id.clone(),
                        title: d.title.clone(),
                        level: d.level,
                        kind: super::catalog::kind(d),
                        status: d.status.clone(),
                        tags: d.tags.clone(),
                        fired,
                        last_fired_ms: last,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    rules.sort_by(|a, b| b.fired.cmp(&a.fired).then_with(|| a.title.cmp(&b.title)));
    Ok(json!({
        "pack": current.map(|v| json!({
            "version": v.current.version,
            "pushed_ms": v.current.pack.pushed_ms,
            "pushed_by": v.current.pack.pushed_by,
            "files": v.current.pack.files,
            "rules": v.current.pack.rules,
        })),
        "rules": rules,
        "history": shared.catalog.history().await?,
    }))
}

/// `GET /api/rules`: the pack in force, its rules with fire counts, the pack history.
pub async fn rules(shared: web::Data<Arc<Shared>>, Authed(s): Authed) -> HttpResponse {
    match rules_data(&shared, &s.who).await {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("{e:#}")),
    }
}

/// The OpenAPI document of this API (node/src/console/openapi.json).
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("openapi.json"))
}

/// Liveness.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}
