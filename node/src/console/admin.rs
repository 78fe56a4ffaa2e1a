//! Administration from the console (administrators only, checked here for the API and the
//! pages alike): onboard a force, change its phase, manage a force's contacts and the national
//! duty contacts. The same buckets and checks as `nmc forces` and `nmc contacts`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use nmc_shared::ForceId;
use nmc_shared::contact::Contact;
use nmc_shared::onboarding::OnboardingPhase;
use serde::Deserialize;
use serde_json::json;

use super::access::Principal;
use super::api::{Authed, Shared, check_csrf, error};
use crate::contacts::Scope;

/// Why an administrative change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Not an administrator.
    #[error("only an administrator may do this")]
    Forbidden,
    /// Bad input, said how.
    #[error("{0}")]
    Invalid(String),
    /// Already so.
    #[error("{0}")]
    Conflict(String),
    /// NATS did not answer.
    #[error("the cluster's registry cannot be reached: {0}")]
    Unavailable(String),
}

impl AdminError {
    /// Its HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Forbidden => StatusCode::FORBIDDEN,
            AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn admin(who: &Principal) -> Result<(), AdminError> {
    if who.admin {
        Ok(())
    } else {
        Err(AdminError::Forbidden)
    }
}

fn force(id: &str) -> Result<ForceId, AdminError> {
    let f = ForceId::new(id.trim()).map_err(|e| AdminError::Invalid(e.to_string()))?;
    if nmc_shared::force::lookup(f.as_str()).is_none() {
        return Err(AdminError::Invalid(format!(
            "`{f}` is not a force of England and Wales (see `nmc forces known`)"
        )));
    }
    Ok(f)
}

fn phase(p: &str) -> Result<OnboardingPhase, AdminError> {
    serde_json::from_value(json!(p.trim()))
        .map_err(|_| AdminError::Invalid(format!("unknown phase `{p}`: cloud or cloud_and_onprem")))
}

/// The contact list `scope` names: a force id or `_national`.
pub fn contact_scope(scope: &str) -> Result<Scope, AdminError> {
    if scope == crate::contacts::NATIONAL {
        Ok(Scope::National)
    } else {
        force(scope).map(Scope::Force)
    }
}

fn unavailable(e: anyhow::Error) -> AdminError {
    AdminError::Unavailable(format!("{e:#}"))
}

/// Onboards `id` in `phase` with `weight`.
pub async fn onboard(
    shared: &Shared,
    who: &Principal,
    id: &str,
    phase_name: &str,
    weight: u32,
) -> Result<ForceId, AdminError> {
    admin(who)?;
    let (f, p) = (force(id)?, phase(phase_name)?);
    if !(1..=1000).contains(&weight) {
        return Err(AdminError::Invalid(format!(
            "weight {weight} is out of range: 1 to 1000"
        )));
    }
    let added = crate::cluster::onboarding::add(&shared.buckets.forces, &f, p, weight)
        .await
        .map_err(unavailable)?;
    if !added {
        return Err(AdminError::Conflict(format!("{f} is already onboarded")));
    }
    tracing::info!(force = %f, phase = p.as_str(), weight, by = %who.user, "force onboarded from the console");
    Ok(f)
}

/// Moves onboarded force `id` to `phase`.
pub async fn set_phase(
    shared: &Shared,
    who: &Principal,
    id: &str,
    phase_name: &str,
) -> Result<(), AdminError> {
    admin(who)?;
    let (f, p) = (force(id)?, phase(phase_name)?);
    let kv = &shared.buckets.forces;
    if crate::cluster::onboarding::get(kv, &f)
        .await
        .map_err(unavailable)?
        .is_none()
    {
        return Err(AdminError::Invalid(format!(
            "{f} is not onboarded: onboard it first"
        )));
    }
    crate::cluster::onboarding::set_phase(kv, &f, p)
        .await
        .map_err(unavailable)?;
    tracing::info!(force = %f, phase = p.as_str(), by = %who.user, "force phase changed from the console");
    Ok(())
}

/// The contacts of `scope`, webhook URLs reduced to scheme and host.
pub async fn contacts(
    shared: &Shared,
    who: &Principal,
    scope: &str,
) -> Result<Vec<Contact>, AdminError> {
    admin(who)?;
    let scope = contact_scope(scope)?;
    let (list, _) = shared.contacts.get(&scope).await.map_err(unavailable)?;
    Ok(list.iter().map(Contact::redacted).collect())
}

/// Adds `contact` to `scope` (or replaces the contact of the same name).
pub async fn put_contact(
    shared: &Shared,
    who: &Principal,
    scope: &str,
    contact: Contact,
) -> Result<(), AdminError> {
    admin(who)?;
    let scope = contact_scope(scope)?;
    contact
        .validate()
        .map_err(|e| AdminError::Invalid(format!("contact `{}`: {e}", contact.name)))?;
    let name = contact.name.clone();
    shared
        .contacts
        .update(&scope, |list| {
            list.retain(|c| c.name != contact.name);
            list.push(contact.clone());
            Ok(())
        })
        .await
        .map_err(|e| AdminError::Invalid(format!("{e:#}")))?;
    tracing::info!(%scope, contact = %name, by = %who.user, "contact saved from the console");
    Ok(())
}

/// Removes contact `name` from `scope`.
pub async fn remove_contact(
    shared: &Shared,
    who: &Principal,
    scope: &str,
    name: &str,
) -> Result<(), AdminError> {
    admin(who)?;
    let scope = contact_scope(scope)?;
    let mut found = false;
    shared
        .contacts
        .update(&scope, |list| {
            let before = list.len();
            list.retain(|c| c.name != name);
            found = list.len() < before;
            Ok(())
        })
        .await
        .map_err(unavailable)?;
    if !found {
        return Err(AdminError::Invalid(format!(
            "{scope} has no contact `{name}`"
        )));
    }
    tracing::info!(%scope, contact = %name, by = %who.user, "contact removed from the console");
    Ok(())
}

fn answer(r: Result<serde_json::Value, AdminError>) -> HttpResponse {
    match r {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => error(e.status(), &e.to_string()),
    }
}

/// `POST /api/forces` body.
#[derive(Deserialize)]
pub struct Onboard {
    force: String,
    phase: String,
    weight: Option<u32>,
}

/// `POST /api/forces`: onboards a force.
pub async fn api_onboard(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    Authed(s): Authed,
    body: web::Json<Onboard>,
) -> HttpResponse {
    if let Some(refused) = check_csrf(&req, &s) {
        return refused;
    }
    answer(
        onboard(
            &shared,
            &s.who,
            &body.force,
            &body.phase,
            body.weight.unwrap_or(1),
        )
        .await
        .map(|f| json!({"onboarded": f})),
    )
}

/// `POST /api/forces/{force}/phase` body.
#[derive(Deserialize)]
pub struct Phase {
    phase: String,
}

/// `POST /api/forces/{force}/phase`: changes a force's phase.
pub async fn api_phase(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    Authed(s): Authed,
    path: web::Path<String>,
    body: web::Json<Phase>,
) -> HttpResponse {
    if let Some(refused) = check_csrf(&req, &s) {
        return refused;
    }
    answer(
        set_phase(&shared, &s.who, &path, &body.phase)
            .await
            .map(|()| json!({"force": *path, "phase": body.phase})),
    )
}

/// `GET /api/contacts/{scope}`: a force's contacts (or `_national`).
pub async fn api_contacts(
    shared: web::Data<Arc<Shared>>,
    Authed(s): Authed,
    path: web::Path<String>,
) -> HttpResponse {
    answer(
        contacts(&shared, &s.who, &path)
            .await
            .map(|c| json!({"contacts": c})),
    )
}

/// `POST /api/contacts/{scope}`: adds or replaces a contact.
pub async fn api_put_contact(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    Authed(s): Authed,
    path: web::Path<String>,
    body: web::Json<Contact>,
) -> HttpResponse {
    if let Some(refused) = check_csrf(&req, &s) {
        return refused;
    }
    answer(
        put_contact(&shared, &s.who, &path, body.into_inner())
            .await
            .map(|()| json!({"saved": true})),
    )
}

/// `DELETE /api/contacts/{scope}/{name}`: removes a contact.
pub async fn api_remove_contact(
    req: HttpRequest,
    shared: web::Data<Arc<Shared>>,
    Authed(s): Authed,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    if let Some(refused) = check_csrf(&req, &s) {
        return refused;
    }
    answer(
        remove_contact(&shared, &s.who, &path.0, &path.1)
            .await
            .map(|()| json!({"removed": path.1})),
    )
}
