//! Synthetic cloud telemetry for the demo, tests and the load generator: Entra ID sign-ins in
//! the raw diagnostic-settings shape, Microsoft 365 unified audit records in the Office 365
//! Management Activity API shape and AWS CloudTrail records. Deterministic for a given seed.
//!
//! Normal traffic is many users signing in from their usual UK addresses with rare typos; the
//! attacks are a password spray (one address, many accounts, few tries each), a brute force (one
//! account, many tries, then a success) and legacy-protocol sign-ins. Microsoft 365 and
//! CloudTrail traffic is ordinary work with one suspicious operation in [`SUSPICIOUS_ONE_IN`]
//! (disabled MFA, a new domain, mail forwarding, trail tampering, a key for another user, console
//! sign-ins without MFA or failing, bucket enumeration), enough for a few SigmaHQ rules to fire.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use nmc_shared::time::format_ms;
use nmc_shared::{ForceId, SourceKind};
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
    untimed(entra_timed(s, seed, start_ms))
}

fn untimed(recs: Vec<(i64, Value)>) -> Vec<Value> {
    recs.into_iter().map(|(_, v)| v).collect()
}

/// [`generate`] with each event's time (ms).
fn entra_timed(s: &Scenario, seed: u64, start_ms: i64) -> Vec<(i64, Value)> {
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
        let ip = home_ip(u);
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
    out
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The usual UK address of user `i`.
fn home_ip(i: usize) -> String {
    format!("81.{}.{}.{}", 100 + i % 50, (i / 50) % 250, 10 + i % 200)
}

/// Where the suspicious Microsoft 365 and CloudTrail operations come from.
const ATTACKER_IP: &str = "45.155.205.99";

/// One Microsoft 365 or CloudTrail record in this many is a suspicious operation (0.2%).
pub const SUSPICIOUS_ONE_IN: u64 = 500;

/// The sources [`mixed`] generates.
pub const MIXABLE: [SourceKind; 3] = [
    SourceKind::EntraSignin,
    SourceKind::M365Audit,
    SourceKind::AwsCloudtrail,
];

/// Shares of a force's events by source in percent, summing to 100; parsed from
/// `entra_signin=50,m365_audit=30,aws_cloudtrail=20`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(Vec<(SourceKind, usize)>);

impl Mix {
    /// The sources and their percentages, in the order given.
    pub fn shares(&self) -> &[(SourceKind, usize)] {
        &self.0
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut shares: Vec<(SourceKind, usize)> = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (name, pct) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not SOURCE=PERCENT"))?;
            let known = MIXABLE.map(SourceKind::as_str).join(", ");
            let kind = SourceKind::from_str(name.trim())
                .ok()
                .filter(|k| MIXABLE.contains(k))
                .ok_or_else(|| format!("unknown source `{name}`: the mix takes {known}"))?;
            let pct: usize = pct
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("`{pct}` in `{part}` is not a percentage (0 to 100)"))?;
            if shares.iter().any(|(k, _)| *k == kind) {
                return Err(format!("`{name}` is given twice"));
            }
            shares.push((kind, pct));
        }
        let sum: usize = shares.iter().map(|(_, p)| p).sum();
        if sum != 100 {
            return Err(format!("the shares sum to {sum}, not 100"));
        }
        Ok(Mix(shares))
    }
}

/// One force's traffic across sources: `s.normal` events split by `mix` (the first source takes
/// the rounding remainder; the Entra attacks of `s` come on top), merged in event-time order as
/// (event time ms, source, record).
pub fn mixed(s: &Scenario, mix: &Mix, seed: u64, start_ms: i64) -> Vec<(i64, SourceKind, Value)> {
    let counts: Vec<usize> = mix.0.iter().map(|(_, p)| s.normal * p / 100).collect();
    let mut rest = s.normal - counts.iter().sum::<usize>();
    let mut out = Vec::with_capacity(s.normal);
    for (&(kind, _), n) in mix.0.iter().zip(counts) {
        let part = Scenario {
            normal: n + std::mem::take(&mut rest),
            ..s.clone()
        };
        let recs = match kind {
            SourceKind::M365Audit => m365_timed(&part, seed, start_ms),
            SourceKind::AwsCloudtrail => cloudtrail_timed(&part, seed, start_ms),
            _ => entra_timed(&part, seed, start_ms),
        };
        out.extend(recs.into_iter().map(|(t, v)| (t, kind, v)));
    }
    out.sort_by_key(|r| r.0);
    out
}

/// Formats `t` (ms) in UTC with a chrono format.
fn utc(t: i64, fmt: &str) -> String {
    Utc.timestamp_millis_opt(t)
        .single()
        .map(|d| d.format(fmt).to_string())
        .unwrap_or_default()
}

/// A random version-4 UUID.
fn uuid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// Picks from a table weighted by its first column.
fn pick<'a, T>(rng: &mut Rng, table: &'a [(u64, T)]) -> &'a T {
    let mut r = rng.below(table.iter().map(|e| e.0).sum());
    for (w, item) in table {
        if r < *w {
            return item;
        }
        r -= w;
    }
    &table[table.len() - 1].1
}

/// Uniform whole-second times in the scenario's span, one per record.
fn second_in(rng: &mut Rng, s: &Scenario, start_ms: i64) -> i64 {
    start_ms + rng.below((s.span_ms / 1000) as u64) as i64 * 1000
}

/// Ordinary Microsoft 365 operations, weighted per mille.
const M365_OPS: &[(u64, &str)] = &[
    (360, "FileAccessed"),
    (120, "FileModified"),
    (50, "FileDownloaded"),
    (230, "MailItemsAccessed"),
    (110, "Send"),
    (110, "UserLoggedIn"),
    (12, "New-InboxRule"),
    (8, "Set-Mailbox"),
];
/// Suspicious Microsoft 365 operations (a forwarding inbox rule, MFA disabled, a new domain).
const M365_SUSPICIOUS: &[(u64, &str)] = &[
    (2, "New-InboxRule"),
    (1, "Disable Strong Authentication."),
    (1, "Add domain to company."),
];
const SITES: &[&str] = &[
    "Operations",
    "CID",
    "Intelligence",
    "HR",
    "Training",
    "Estates",
];
const DOCS: &[&str] = &[
    "Duty rota.xlsx",
    "Case file review.docx",
    "Briefing.pptx",
    "Custody log.xlsx",
    "Training plan.docx",
    "Minutes.docx",
    "Incident summary.pdf",
];
const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0";

/// Generates `s.normal` Microsoft 365 unified audit records (Office 365 Management Activity
/// API shape) of the scenario's users, sorted by `CreationTime`; the Entra attacks of `s` do not
/// apply.
pub fn m365_audit(s: &Scenario, seed: u64, start_ms: i64) -> Vec<Value> {
    untimed(m365_timed(s, seed, start_ms))
}

fn m365_timed(s: &Scenario, seed: u64, start_ms: i64) -> Vec<(i64, Value)> {
    let mut rng = Rng::new(seed ^ fxhash(s.force.as_str()) ^ 0x6d33_3635);
    let mut out: Vec<(i64, Value)> = (0..s.normal)
        .map(|_| {
            let t = second_in(&mut rng, s, start_ms);
            let suspicious = rng.below(SUSPICIOUS_ONE_IN) == 0;
            let table = if suspicious {
                M365_SUSPICIOUS
            } else {
                M365_OPS
            };
            let op = *pick(&mut rng, table);
            let admin = matches!(
                op,
                "Set-Mailbox" | "Disable Strong Authentication." | "Add domain to company."
            );
            let pool = if admin { ADMINS.min(s.users) } else { s.users };
            let u = rng.below(pool.max(1) as u64) as usize;
            (t, m365_record(&mut rng, s, t, u, op, suspicious))
        })
        .collect();
    out.sort_by_key(|(t, _)| *t);
    out
}

/// The force's administrators are its first few users.
const ADMINS: usize = 4;

/// A user who is not an administrator.
fn someone_else(rng: &mut Rng, s: &Scenario) -> String {
    let others = s.users.saturating_sub(ADMINS).max(1);
    upn(&s.force, ADMINS + rng.below(others as u64) as usize)
}

/// One Microsoft 365 audit record of operation `op` by user `u`.
fn m365_record(rng: &mut Rng, s: &Scenario, t: i64, u: usize, op: &str, suspicious: bool) -> Value {
    let user = upn(&s.force, u);
    let ip = if suspicious {
        ATTACKER_IP.to_owned()
    } else {
        home_ip(u)
    };
    let org = uuid(&mut Rng::new(fxhash(s.force.as_str())));
    let user_oid = uuid(&mut Rng::new(fxhash(&user)));
    let puid = format!("10032001{:08X}", fxhash(&user) as u32);
    let tenant = s.force.as_str().replace('-', "");
    let mailbox = json!({
        "MailboxGuid": uuid(&mut Rng::new(fxhash(&user) ^ 1)),
        "MailboxOwnerUPN": user,
        "LogonType": 0,
        "ClientInfoString": "Client=OWA;Action=ViaProxy",
        "ResultStatus": "Succeeded",
    });
    // (RecordType, Workload, UserType, UserKey, the workload's own fields)
    let (record_type, workload, user_type, key, extra) = match op {
        "FileAccessed" | "FileModified" | "FileDownloaded" => {
            let site = SITES[rng.below(SITES.len() as u64) as usize];
            let doc = DOCS[rng.below(DOCS.len() as u64) as usize];
            let site_url = format!("https://{tenant}.sharepoint.com/sites/{site}/");
            let extra = json!({
                "ObjectId": format!("{site_url}Shared Documents/{doc}"),
                "EventSource": "SharePoint",
                "ItemType": "File",
                "ListItemUniqueId": uuid(rng),
                "Site": uuid(&mut Rng::new(fxhash(&site_url))),
                "SiteUrl": site_url,
                "SourceFileName": doc,
                "SourceFileExtension": doc.rsplit('.').next(),
                "SourceRelativeUrl": "Shared Documents",
                "UserAgent": BROWSER,
            });
            let key = format!("i:0h.f|membership|{}@live.com", puid.to_lowercase());
            (6, "SharePoint", 0, key, extra)
        }
        "MailItemsAccessed" => {
            let mut extra = mailbox;
            extra["OperationCount"] = json!(1 + rng.below(5));
            extra["OperationProperties"] = json!([
                {"Name": "MailAccessType", "Value": "Bind"},
                {"Name": "IsThrottled", "Value": "False"}
            ]);
            let message = format!("<{:016x}@police.uk>", rng.next_u64());
            extra["Folders"] = json!([{
                "Path": "\\Inbox",
                "FolderItems": [{"InternetMessageId": message}]
            }]);
            (50, "Exchange", 0, puid, extra)
        }
        "Send" => {
            let mut extra = mailbox;
            extra["Item"] = json!({
                "Id": format!("{:016X}{:016X}", rng.next_u64(), rng.next_u64()),
                "InternetMessageId": format!("<{:016x}@{}.police.uk>", rng.next_u64(), s.force),
                "ParentFolder": {"Path": "\\Sent Items"},
                "Subject": DOCS[rng.below(DOCS.len() as u64) as usize].split('.').next(),
                "SizeInBytes": 4_000 + rng.below(200_000),
            });
            (2, "Exchange", 0, puid, extra)
        }
        "UserLoggedIn" => {
            let extra = json!({
                "ObjectId": "00000002-0000-0ff1-ce00-000000000000",
                "ApplicationId": "4765445b-32c6-49b0-83e6-1d93765276ca",
                "ResultStatus": "Success",
                "AzureActiveDirectoryEventType": 1,
                "ActorIpAddress": ip,
                "Actor": [{"ID": user_oid, "Type": 0}, {"ID": user, "Type": 5}],
                "ActorContextId": org,
                "Target": [{"ID": "00000002-0000-0ff1-ce00-000000000000", "Type": 0}],
                "TargetContextId": org,
                "ErrorNumber": "0",
                "ExtendedProperties": [
                    {"Name": "ResultStatusDetail", "Value": "Redirect"},
                    {"Name": "UserAgent", "Value": BROWSER},
                    {"Name": "RequestType", "Value": "OAuth2:Authorize"}
                ],
            });
            (15, "AzureActiveDirectory", 0, user_oid.clone(), extra)
        }
        "New-InboxRule" | "Set-Mailbox" => {
            let target = someone_else(rng, s);
            let params = match (op, suspicious) {
                ("Set-Mailbox", _) => json!([
                    {"Name": "Identity", "Value": target},
                    {"Name": "LitigationHoldEnabled", "Value": "True"}
                ]),
                (_, true) => json!([
                    {"Name": "Name", "Value": "."},
                    {"Name": "ForwardTo", "Value": "records.archive@proton.me"},
                    {"Name": "DeleteMessage", "Value": "True"},
                    {"Name": "MarkAsRead", "Value": "True"}
                ]),
                _ => json!([
                    {"Name": "Name", "Value": "Newsletters"},
                    {"Name": "From", "Value": "news@college.police.uk"},
                    {"Name": "MoveToFolder", "Value": "Newsletters"},
                    {"Name": "StopProcessingRules", "Value": "True"}
                ]),
            };
            let object = match op {
                "Set-Mailbox" => target,
                _ => format!(
                    "{user}\\{}",
                    params[0]["Value"].as_str().unwrap_or_default()
                ),
            };
            let extra = json!({
                "ObjectId": object,
                "Parameters": params,
                "ResultStatus": "True",
                "ExternalAccess": false,
                "OrganizationName": format!("{tenant}.onmicrosoft.com"),
                "OriginatingServer": "LO2P265MB5071 (15.20.7472.000)",
            });
            let user_type = if op == "Set-Mailbox" { 2 } else { 0 };
            (1, "Exchange", user_type, puid, extra)
        }
        _ => {
            // "Disable Strong Authentication." on a user, "Add domain to company.".
            let target = if op.contains("domain") {
                format!("{}-police-login.com", s.force)
            } else {
                someone_else(rng, s)
            };
            let extra = json!({
                "ObjectId": target,
                "ResultStatus": "Success",
                "AzureActiveDirectoryEventType": 1,
                "Actor": [{"ID": user_oid, "Type": 0}, {"ID": user, "Type": 5}],
                "ActorContextId": org,
                "Target": [{"ID": target, "Type": 5}],
                "TargetContextId": org,
                "ModifiedProperties": [],
                "ExtendedProperties": [{"Name": "extendedAuditEventCategory", "Value": "User"}],
            });
            (8, "AzureActiveDirectory", 2, user_oid.clone(), extra)
        }
    };
    let mut v = json!({
        "CreationTime": utc(t, "%Y-%m-%dT%H:%M:%S"),
        "Id": uuid(rng),
        "Operation": op,
        "OrganizationId": org,
        "RecordType": record_type,
        "UserKey": key,
        "UserType": user_type,
        "Version": 1,
        "Workload": workload,
        "ClientIP": ip,
        "UserId": user,
    });
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v
}

/// Ordinary CloudTrail calls (event source, event name), weighted per mille.
const AWS_OPS: &[(u64, (&str, &str))] = &[
    (300, ("s3.amazonaws.com", "GetObject")),
    (100, ("s3.amazonaws.com", "PutObject")),
    (200, ("ec2.amazonaws.com", "DescribeInstances")),
    (150, ("sts.amazonaws.com", "AssumeRole")),
    (100, ("sts.amazonaws.com", "GetCallerIdentity")),
    (100, ("iam.amazonaws.com", "GetUser")),
    (50, ("signin.amazonaws.com", "ConsoleLogin")),
];
/// Suspicious CloudTrail calls; `ConsoleLogin` here is without MFA or failing. Bucket listing is
/// here, not above: SigmaHQ flags every `ListBuckets` of an IAM user.
const AWS_SUSPICIOUS: &[(u64, (&str, &str))] = &[
    (2, ("s3.amazonaws.com", "ListBuckets")),
    (1, ("iam.amazonaws.com", "CreateAccessKey")),
    (1, ("cloudtrail.amazonaws.com", "StopLogging")),
    (1, ("cloudtrail.amazonaws.com", "DeleteTrail")),
    (2, ("signin.amazonaws.com", "ConsoleLogin")),
];
const AWS_AGENTS: &[&str] = &[
    "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.0-18-amd64 exe/x86_64.debian.12 prompt/off",
    "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#6.1.0 md/arch#x86_64 \
     lang/python#3.11.8 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.69",
    "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.1 md/GOOS#linux md/GOARCH#amd64",
    "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.660 Linux/5.10.210 \
     OpenJDK_64-Bit_Server_VM/25.402-b08 java/1.8.0_402]",
];
const BUCKETS: &[&str] = &[
    "evidence-store",
    "cctv-archive",
    "forensics-exports",
    "backups",
];
/// Users with an IAM user: the first this many of a force's users.
const IAM_USERS: usize = 200;

/// A force's AWS account id.
fn account_id(force: &ForceId) -> String {
    format!("{:012}", fxhash(force.as_str()) % 1_000_000_000_000)
}

/// An AWS identifier: `prefix` then `len` base-32 characters derived from `seed`.
fn aws_id(prefix: &str, len: usize, seed: u64) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut r = Rng::new(seed);
    let tail = (0..len).map(|_| CHARS[r.below(32) as usize] as char);
    prefix.chars().chain(tail).collect()
}

/// The IAM user name of user `i` of `force` (the local part of its UPN).
fn iam_user(force: &ForceId, i: usize) -> String {
    let u = upn(force, i);
    u.split('@').next().unwrap_or(&u).to_owned()
}

/// Generates `s.normal` AWS CloudTrail records of the scenario's IAM users (its first 200
/// users) in `eu-west-2`, sorted by `eventTime`; the Entra attacks of `s` do not
/// apply.
pub fn cloudtrail(s: &Scenario, seed: u64, start_ms: i64) -> Vec<Value> {
    untimed(cloudtrail_timed(s, seed, start_ms))
}

fn cloudtrail_timed(s: &Scenario, seed: u64, start_ms: i64) -> Vec<(i64, Value)> {
    let mut rng = Rng::new(seed ^ fxhash(s.force.as_str()) ^ 0x6177_7363);
    let users = s.users.clamp(2, IAM_USERS) as u64;
    let mut out: Vec<(i64, Value)> = (0..s.normal)
        .map(|_| {
            let t = second_in(&mut rng, s, start_ms);
            let suspicious = rng.below(SUSPICIOUS_ONE_IN) == 0;
            let table = if suspicious { AWS_SUSPICIOUS } else { AWS_OPS };
            let call = *pick(&mut rng, table);
            let u = rng.below(users) as usize;
            (t, cloudtrail_record(&mut rng, s, t, u, call, suspicious))
        })
        .collect();
    out.sort_by_key(|(t, _)| *t);
    out
}

/// One CloudTrail record of `call` (event source, event name) by IAM user `u`.
fn cloudtrail_record(
    rng: &mut Rng,
    s: &Scenario,
    t: i64,
    u: usize,
    (source, name): (&str, &str),
    suspicious: bool,
) -> Value {
    let account = account_id(&s.force);
    let user = iam_user(&s.force, u);
    let user_seed = fxhash(&user);
    let bucket = BUCKETS[rng.below(BUCKETS.len() as u64) as usize];
    let bucket = format!("{}-{bucket}", s.force);
    // (readOnly, requestParameters, responseElements, other fields of the call)
    let (read_only, request, response, extra) = match name {
        "GetObject" | "PutObject" => {
            let case = 10_000 + rng.below(90_000);
            let key = format!("cases/{case}/{:08x}.bin", rng.next_u64() as u32);
            let host = format!("{bucket}.s3.eu-west-2.amazonaws.com");
            let bucket_arn = format!("arn:aws:s3:::{bucket}");
            let request = json!({"bucketName": bucket, "Host": host, "key": key});
            // S3 object calls are data events.
            let extra = json!({
                "managementEvent": false,
                "eventCategory": "Data",
                "resources": [
                    {"type": "AWS::S3::Object", "ARN": format!("{bucket_arn}/{key}")},
                    {"accountId": account, "type": "AWS::S3::Bucket", "ARN": bucket_arn}
                ],
            });
            (name == "GetObject", request, Value::Null, extra)
        }
        "ListBuckets" => {
            let request = json!({"Host": "s3.eu-west-2.amazonaws.com"});
            (true, request, Value::Null, Value::Null)
        }
        "DescribeInstances" => {
            let request = json!({"instancesSet": {}, "filterSet": {}});
            (true, request, Value::Null, Value::Null)
        }
        "AssumeRole" => {
            let role = if u.is_multiple_of(3) {
                "ops-admin"
            } else {
                "read-only"
            };
            let role_arn = format!("arn:aws:iam::{account}:role/{role}");
            let session = format!("{user}-{}", t / 1000);
            let request = json!({"roleArn": role_arn, "roleSessionName": session});
            let response = json!({
                "credentials": {
                    "accessKeyId": aws_id("ASIA", 16, rng.next_u64()),
                    "expiration": utc(t + 3_600_000, "%b %-d, %Y, %-I:%M:%S %p"),
                },
                "assumedRoleUser": {
                    "assumedRoleId": format!("{}:{session}", aws_id("AROA", 17, fxhash(role))),
                    "arn": format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
                },
            });
            let extra = json!({"resources": [
                {"ARN": role_arn, "accountId": account, "type": "AWS::IAM::Role"}
            ]});
            (true, request, response, extra)
        }
        "GetCallerIdentity" => (true, Value::Null, Value::Null, Value::Null),
        "GetUser" => (true, json!({"userName": user}), Value::Null, Value::Null),
        "CreateAccessKey" => {
            let other = iam_user(&s.force, (u + 1) % s.users.clamp(2, IAM_USERS));
            let response = json!({"accessKey": {
                "accessKeyId": aws_id("AKIA", 16, rng.next_u64()),
                "createDate": utc(t, "%b %-d, %Y %-I:%M:%S %p"),
                "status": "Active",
                "userName": other,
            }});
            (false, json!({"userName": other}), response, Value::Null)
        }
        "StopLogging" | "DeleteTrail" => {
            let trail = format!("{}-organisation-trail", s.force);
            let trail = format!("arn:aws:cloudtrail:eu-west-2:{account}:trail/{trail}");
            (false, json!({"name": trail}), Value::Null, Value::Null)
        }
        _ => {
            // ConsoleLogin: with MFA normally; a suspicious one has none, and half of them fail.
            let fail = suspicious && rng.below(2) == 0;
            let mfa = if suspicious { "No" } else { "Yes" };
            let mut extra = json!({
                "eventType": "AwsConsoleSignIn",
                "additionalEventData": {
                    "LoginTo": "https://console.aws.amazon.com/console/home",
                    "MobileVersion": "No",
                    "MFAUsed": mfa,
                },
            });
            if fail {
                extra["errorMessage"] = json!("Failed authentication");
            }
            let result = if fail { "Failure" } else { "Success" };
            (false, Value::Null, json!({"ConsoleLogin": result}), extra)
        }
    };
    let console = name == "ConsoleLogin";
    let agent = if console {
        BROWSER
    } else {
        AWS_AGENTS[rng.below(AWS_AGENTS.len() as u64) as usize]
    };
    let mut v = json!({
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": aws_id("AIDA", 17, user_seed),
            "arn": format!("arn:aws:iam::{account}:user/{user}"),
            "accountId": account,
            "accessKeyId": aws_id("AKIA", 16, user_seed ^ 1),
            "userName": user,
        },
        "eventTime": utc(t, "%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "eu-west-2",
        "sourceIPAddress": if suspicious { ATTACKER_IP.to_owned() } else { home_ip(u) },
        "userAgent": agent,
        "requestParameters": request,
        "responseElements": response,
        "requestID": uuid(rng),
        "eventID": uuid(rng),
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
    });
    let o = v.as_object_mut().expect("an object");
    if console {
        // Console sign-ins have no access key and no request id.
        o.remove("requestID");
        if let Some(identity) = o["userIdentity"].as_object_mut() {
            identity.remove("accessKeyId");
        }
    }
    if let Value::Object(extra) = extra {
        o.extend(extra);
    }
    v
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use nmc_shared::event::{Event, TimeFrom};
    use nmc_shared::mapping::detect_source;

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

    const MAX_BYTES: usize = 256 * 1024;
    const START: i64 = 1_793_606_400_000;

    fn scenario(force: &str, users: usize, normal: usize) -> Scenario {
        Scenario {
            force: ForceId::new(force).unwrap(),
            users,
            normal,
            span_ms: 8 * 3_600_000,
            spray: false,
            brute_force: false,
            legacy: 0,
        }
    }

    fn default_mix() -> Mix {
        "entra_signin=50,m365_audit=30,aws_cloudtrail=20"
            .parse()
            .unwrap()
    }

    #[test]
    fn mixed_is_deterministic_and_parses_with_its_time_in_order() {
        let s = scenario("west-midlands", 500, 6_000);
        let a = mixed(&s, &default_mix(), 7, START);
        assert_eq!(a, mixed(&s, &default_mix(), 7, START));
        assert_ne!(a, mixed(&s, &default_mix(), 8, START));
        assert_eq!(m365_audit(&s, 7, START), m365_audit(&s, 7, START));
        assert_eq!(cloudtrail(&s, 7, START), cloudtrail(&s, 7, START));
        let mut last = START;
        for (t, kind, v) in &a {
            let bytes = serde_json::to_vec(v).unwrap();
            let e = Event::parse(*kind, &bytes, MAX_BYTES).unwrap();
            assert_eq!(e.time_ms, *t, "{v}");
            let field = match kind {
                SourceKind::M365Audit => "CreationTime",
                SourceKind::AwsCloudtrail => "eventTime",
                _ => "time",
            };
            assert_eq!(e.time_from, TimeFrom::Source(field), "{v}");
            assert_eq!(detect_source(v), Some(*kind), "{v}");
            assert!(*t >= last && *t < START + s.span_ms);
            last = *t;
        }
        let time_field = |k| a.iter().find(|r| r.1 == k).map(|r| r.2.clone()).unwrap();
        let m365 = time_field(SourceKind::M365Audit);
        assert!(
            m365["CreationTime"]
                .as_str()
                .is_some_and(|t| !t.ends_with('Z'))
        );
        let aws = time_field(SourceKind::AwsCloudtrail);
        assert!(aws["eventTime"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn mix_proportions_hold() {
        for (mix, n) in [
            ("entra_signin=50,m365_audit=30,aws_cloudtrail=20", 10_000),
            ("entra_signin=50,m365_audit=30,aws_cloudtrail=20", 9_999),
            ("aws_cloudtrail=70,m365_audit=30", 9_302),
            ("entra_signin=100", 500),
        ] {
            let mix: Mix = mix.parse().unwrap();
            let recs = mixed(&scenario("kent", 5_000, n), &mix, 1, START);
            assert_eq!(recs.len(), n);
            for &(kind, pct) in mix.shares() {
                let got = recs.iter().filter(|r| r.1 == kind).count();
                // Within one percentage point of the share.
                assert!(
                    got.abs_diff(n * pct / 100) * 100 <= n,
                    "{kind}: {got} of {n}"
                );
            }
        }
    }

    #[test]
    fn mix_rejects_bad_shares() {
        for (mix, says) in [
            ("entra_signin=50,m365_audit=30", "sum to 80"),
            ("entra_signin=50,sysmon=50", "unknown source `sysmon`"),
            ("entra_signin=50,nope=50", "unknown source `nope`"),
            ("entra_signin=50,entra_signin=50", "given twice"),
            ("entra_signin", "SOURCE=PERCENT"),
            ("entra_signin=lots", "not a percentage"),
            ("entra_signin=200,m365_audit=0", "not a percentage"),
        ] {
            let e = mix.parse::<Mix>().unwrap_err();
            assert!(e.contains(says), "{mix}: {e}");
        }
    }

    /// SigmaHQ's cloud rules: `$NMC_SIGMA_DIR`, else the workplace's datasets beside the
    /// repository, else the repository's subset (CloudTrail rules only).
    fn sigma_cloud_rules() -> PathBuf {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let root = std::env::var("NMC_SIGMA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo.join("../shared/datasets/sigma"));
        let dir = root.join("rules/cloud");
        if dir.is_dir() {
            dir
        } else {
            repo.join("tests/data/sigma/rules/cloud")
        }
    }

    /// The rules `deploy/bench/node.sh` loads for these sources: the identity pack and SigmaHQ's
    /// cloud rules.
    #[test]
    fn only_the_rare_suspicious_records_fire_cloud_rules() {
        let identity = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules/identity");
        let sigma = sigma_cloud_rules();
        let (rules, _) = crate::rules::load(&[identity, sigma.clone()]).unwrap();
        let has_m365_rules = sigma.join("m365").is_dir();
        let s = scenario("kent", 5_000, 20_000);
        for (kind, recs) in [
            (SourceKind::M365Audit, m365_audit(&s, 3, START)),
            (SourceKind::AwsCloudtrail, cloudtrail(&s, 3, START)),
        ] {
            let ip = if kind == SourceKind::M365Audit {
                "ClientIP"
            } else {
                "sourceIPAddress"
            };
            let mut fired: Vec<&str> = Vec::new();
            let mut matched = 0;
            for v in &recs {
                let e = Event::parse(kind, &serde_json::to_vec(v).unwrap(), MAX_BYTES).unwrap();
                let hits: Vec<usize> = rules.matching(&e).collect();
                if !hits.is_empty() {
                    matched += 1;
                    assert_eq!(v[ip], ATTACKER_IP, "an ordinary record fired: {v}");
                }
                fired.extend(hits.iter().map(|&i| rules.rules()[i].meta.title.as_str()));
            }
            fired.sort_unstable();
            fired.dedup();
            eprintln!(
                "{kind}: {matched} of {} records matched {fired:?}",
                recs.len()
            );
            assert!(matched * 100 < recs.len(), "{kind}: a flood, {matched}");
            // Without SigmaHQ's Microsoft 365 rules only the identity pack's rule fires there.
            let least = if kind == SourceKind::M365Audit && !has_m365_rules {
                1
            } else {
                2
            };
            assert!(fired.len() >= least, "{kind}: {fired:?}");
        }
    }
}
