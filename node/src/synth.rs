//! Synthetic cloud identity telemetry: Entra ID sign-in events in the raw diagnostic-settings
//! shape, for the demo, tests and the load generator. Deterministic for a given seed.
//!
//! Normal traffic is many users signing in from their usual UK addresses with rare typos; the
//! attacks are a password spray (one address, many accounts, few tries each), a brute force (one
//! account, many tries, then a success) and legacy-protocol sign-ins.

use nmc_shared::ForceId;
use nmc_shared::time::format_ms;
use serde_json::{Value, json};

/// A small, fast, deterministic PRNG (SplitMix64): reproducible scenarios without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// What to generate for one force.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The force.
    pub force: ForceId,
    /// Distinct users with normal activity.
    pub users: usize,
    /// Normal sign-ins.
    pub normal: usize,
    /// Span of the scenario, ms.
    pub span_ms: i64,
    /// Include a password spray (25 accounts from one foreign address).
    pub spray: bool,
    /// Include a brute force on one account (30 failures then a success).
    pub brute_force: bool,
    /// Legacy-protocol successful sign-ins to include.
    pub legacy: usize,
}

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dan", "erin", "frank", "grace", "heidi", "ivan", "judy", "karl",
    "lena", "mike", "nina", "oscar", "peggy", "quinn", "rob", "sybil", "trent", "uma", "victor",
    "wendy", "xavier", "yara", "zane",
];
const LAST: &[&str] = &[
    "smith", "jones", "taylor", "brown", "williams", "wilson", "johnson", "davies", "patel",
    "wright", "evans", "thomas", "roberts", "walker", "khan", "hughes", "green", "hall",
];
const APPS: &[&str] = &[
    "Office 365 Exchange Online",
    "Microsoft Teams",
    "SharePoint Online",
    "Azure Portal",
    "My Apps",
];
const CITIES: &[(&str, f64, f64)] = &[
    ("London", 51.507, -0.128),
    ("Manchester", 53.480, -2.242),
    ("Leeds", 53.801, -1.549),
    ("Cardiff", 51.481, -3.179),
    ("Carlisle", 54.892, -2.932),
    ("Bristol", 51.455, -2.588),
];

/// The user principal name of user `i` of `force`.
pub fn upn(force: &ForceId, i: usize) -> String {
    format!(
        "{}.{}{}@{}.police.uk",
        FIRST[i % FIRST.len()],
        LAST[(i / FIRST.len()) % LAST.len()],
        i / (FIRST.len() * LAST.len()),
        force
    )
}

/// One Entra ID sign-in event.
#[allow(clippy::too_many_arguments)]
pub fn signin(
    t: i64,
    id: u64,
    user: &str,
    ip: &str,
    app: &str,
    client: &str,
    error_code: u32,
    city: (&str, f64, f64),
    country: &str,
) -> Value {
    let (result, reason) = match error_code {
        0 => ("0", "Other."),
        50126 => (
            "50126",
            "Error validating credentials due to invalid username or password.",
        ),
        50053 => (
            "50053",
            "Account is locked because user tried to sign in too many times.",
        ),
        _ => ("50140", "Keep me signed in interrupt."),
    };
    let ts = format_ms(t);
    json!({
        "time": ts,
        "resourceId": "/tenants/00000000-0000-0000-0000-000000000000/providers/Microsoft.aadiam",
        "operationName": "Sign-in activity",
        "operationVersion": "1.0",
        "category": "SignInLogs",
        "resultType": result,
        "resultDescription": reason,
        "callerIpAddress": ip,
        "correlationId": format!("{id:032x}"),
        "identity": user,
        "location": country,
        "properties": {
            "id": format!("{:032x}", id.wrapping_mul(0x9E37_79B9)),
            "createdDateTime": ts,
            "userPrincipalName": user,
            "userDisplayName": user.split('@').next().unwrap_or(user),
            "appDisplayName": app,
            "ipAddress": ip,
            "clientAppUsed": client,
            "isInteractive": true,
            "status": {"errorCode": error_code, "failureReason": reason},
            "location": {
                "city": city.0,
                "countryOrRegion": country,
                "geoCoordinates": {"latitude": city.1, "longitude": city.2}
            },
            "riskLevelDuringSignIn": "none",
            "conditionalAccessStatus": "success"
        }
    })
}

/// Generates a scenario's events, sorted by event time, starting at `start_ms`.
pub fn generate(s: &Scenario, seed: u64, start_ms: i64) -> Vec<Value> {
    let mut rng = Rng::new(seed ^ fxhash(s.force.as_str()));
    let mut out: Vec<(i64, Value)> = Vec::new();
    let mut id = seed.wrapping_mul(1_000_003);
    let mut next_id = || {
        id = id.wrapping_add(1);
        id
    };
    let users = s.users.max(1);
    for _ in 0..s.normal {
        let u = rng.below(users as u64) as usize;
        let t = start_ms + rng.below(s.span_ms as u64) as i64;
        let ip = format!("81.{}.{}.{}", 100 + u % 50, (u / 50) % 250, 10 + u % 200);
        // Rare typos, never enough to look like an attack.
        let code = if rng.below(40) == 0 { 50126 } else { 0 };
        let city = CITIES[u % CITIES.len()];
        let app = APPS[rng.below(APPS.len() as u64) as usize];
        out.push((
            t,
            signin(
                t,
                next_id(),
                &upn(&s.force, u),
                &ip,
                app,
                "Browser",
                code,
                city,
                "GB",
            ),
        ));
    }
    if s.spray {
        let t0 = start_ms + s.span_ms / 3;
        for k in 0..25usize {
            let t = t0 + (k as i64) * 40_000;
            let victim = upn(&s.force, (k * 7) % users.max(25));
            out.push((
                t,
                signin(
                    t,
                    next_id(),
                    &victim,
                    "185.220.101.47",
                    "Office 365 Exchange Online",
                    "Browser",
                    50126,
                    ("Frankfurt", 50.110, 8.682),
                    "DE",
                ),
            ));
        }
    }
    if s.brute_force {
        let t0 = start_ms + s.span_ms / 2;
        let victim = upn(&s.force, 3);
        for k in 0..30i64 {
            let t = t0 + k * 7_000;
            out.push((
                t,
                signin(
                    t,
                    next_id(),
                    &victim,
                    "45.155.205.99",
                    "Azure Portal",
                    "Browser",
                    50126,
                    ("Amsterdam", 52.370, 4.895),
                    "NL",
                ),
            ));
        }
        let t = t0 + 30 * 7_000;
        out.push((
            t,
            signin(
                t,
                next_id(),
                &victim,
                "45.155.205.99",
                "Azure Portal",
                "Browser",
                0,
                ("Amsterdam", 52.370, 4.895),
                "NL",
            ),
        ));
    }
    for k in 0..s.legacy {
        let t = start_ms + (k as i64 + 1) * s.span_ms / (s.legacy as i64 + 1);
        let u = (k * 11) % users;
        out.push((
            t,
            signin(
                t,
                next_id(),
                &upn(&s.force, u),
                "81.2.69.144",
                "Office 365 Exchange Online",
                "IMAP4",
                0,
                CITIES[u % CITIES.len()],
                "GB",
            ),
        ));
    }
    out.sort_by_key(|(t, _)| *t);
    out.into_iter().map(|(_, v)| v).collect()
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nmc_shared::SourceKind;
    use nmc_shared::event::Event;

    #[test]
    fn deterministic_and_parseable() {
        let s = Scenario {
            force: ForceId::new("kent").unwrap(),
            users: 50,
            normal: 200,
            span_ms: 3_600_000,
            spray: true,
            brute_force: true,
            legacy: 2,
        };
        let a = generate(&s, 7, 1_709_287_200_000);
        assert_eq!(a, generate(&s, 7, 1_709_287_200_000));
        assert_ne!(a, generate(&s, 8, 1_709_287_200_000));
        assert_eq!(a.len(), 200 + 25 + 31 + 2);
        let mut last = 0;
        for v in &a {
            let e = Event::from_value(SourceKind::EntraSignin, v.clone()).unwrap();
            assert!(e.time_ms >= last);
            last = e.time_ms;
        }
    }
}
