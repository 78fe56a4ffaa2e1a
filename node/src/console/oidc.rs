//! Sign-in with OpenID Connect (authorization code with PKCE, `openidconnect`): how police
//! identity providers work. `GET /auth/login` sends the browser to the provider with a fresh
//! state, nonce and PKCE challenge, kept in a short-lived signed cookie; `GET /auth/callback`
//! checks the state, exchanges the code with the PKCE verifier, verifies the ID token
//! (signature by the provider's keys, issuer, audience, expiry, nonce), maps its `groups`
//! claim to roles and starts a session. HTTP goes through the tree's reqwest client.

use anyhow::{Context, Result, anyhow};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::config::console::OidcConfig;

/// The `groups` claim (absent: no groups).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Groups {
    /// Group names, mapped to roles by `console.roles`.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl AdditionalClaims for Groups {}

type Fields = IdTokenFields<
    Groups,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponse = StandardTokenResponse<Fields, CoreTokenType>;
type OidcClient = Client<
    Groups,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A sign-in under way: what the callback must match (kept in a signed cookie).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier of the challenge sent.
    pub verifier: String,
    /// Expiry, Unix ms.
    pub exp_ms: i64,
}

/// Who signed in, as the provider says.
#[derive(Debug, Clone)]
pub struct Identity {
    /// E-mail if given, else the subject.
    pub user: String,
    /// The `groups` claim.
    pub groups: Vec<String>,
}

/// An HTTP failure talking to the provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The provider side of sign-in; discovery happens at the first sign-in (and is retried on
/// the next one if the provider was unreachable), so the console starts without it.
pub struct Oidc {
    settings: OidcConfig,
    http: reqwest::Client,
    client: tokio::sync::OnceCell<OidcClient>,
}

impl Oidc {
    /// For `settings` (an issuer URL is set).
    pub fn new(settings: OidcConfig) -> Result<Oidc> {
        let http = reqwest::Client::builder()
            // The protocol forbids following redirects from these endpoints.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the OpenID Connect HTTP client")?;
        Ok(Oidc {
            settings,
            http,
            client: tokio::sync::OnceCell::new(),
        })
    }

    fn caller(
        &self,
    ) -> impl Fn(HttpRequest) -> futures::future::BoxFuture<'static, Result<HttpResponse, HttpError>>
    {
        let http = self.http.clone();
        move |req: HttpRequest| {
            let http = http.clone();
            Box::pin(async move {
                let (parts, body) = req.into_parts();
                let resp = http
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| HttpError(format!("reaching the identity provider: {e}")))?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| HttpError(format!("reading the identity provider: {e}")))?
                    .to_vec();
                let mut out = openidconnect::http::Response::new(body);
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                Ok(out)
            })
        }
    }

    async fn client(&self) -> Result<&OidcClient> {
        self.client
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(self.settings.issuer_url.clone())
                    .context("console.oidc.issuer_url is not a URL")?;
                let call = self.caller();
                let meta = CoreProviderMetadata::discover_async(issuer, &call)
                    .await
                    .map_err(|e| anyhow!("OpenID Connect discovery failed: {e}"))?;
                let client: OidcClient = Client::from_provider_metadata(
                    meta,
                    ClientId::new(self.settings.client_id.clone()),
                    Some(ClientSecret::new(
                        self.settings.client_secret.expose().to_owned(),
                    )),
                )
                .set_redirect_uri(
                    RedirectUrl::new(self.settings.redirect_url.clone())
                        .context("console.oidc.redirect_url is not a URL")?,
                );
                anyhow::Ok(client)
            })
            .await
    }

    /// Where to send the browser, and what its callback must match.
    pub async fn start(&self, now_ms: i64) -> Result<(String, Pending)> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in &self.settings.scopes {
            if s != "openid" {
                req = req.add_scope(Scope::new(s.clone()));
            }
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok((
            url.to_string(),
            Pending {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                exp_ms: now_ms + 10 * 60_000,
            },
        ))
    }

    /// Finishes a sign-in: `code` exchanged with the pending PKCE verifier, the ID token
    /// verified with the pending nonce.
    pub async fn finish(&self, pending: &Pending, code: &str) -> Result<Identity> {
        let client = self.client().await?;
        let call = self.caller();
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| anyhow!("the provider has no token endpoint: {e}"))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&call)
            .await
            .map_err(|e| anyhow!("the code was refused: {e}"))?;
        let id_token = token
            .extra_fields()
            .id_token()
            .context("the provider returned no ID token")?;
        let claims = id_token
            .claims(
                &client.id_token_verifier(),
                &Nonce::new(pending.nonce.clone()),
            )
            .map_err(|e| anyhow!("the ID token does not verify: {e}"))?;
        let user = claims
            .email()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_else(|| claims.subject().as_str().to_owned());
        Ok(Identity {
            user,
            groups: claims.additional_claims().groups.clone(),
        })
    }
}
