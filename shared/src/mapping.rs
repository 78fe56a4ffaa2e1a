//! Field mapping and logsource routing per source, as data (in the style of pySigma processing
//! pipelines).
//!
//! An event is *classified* once, when it is parsed, into an [`EventClass`]: the Sigma
//! `product`, the `service`s and the `category`s it belongs to (a Windows event's service comes
//! from its channel, a Sysmon event's category from its event id, Security 4688 is also
//! `process_creation`). Rules are indexed by class, so an event is only tested against the rules
//! of its logsource. Field names in rules are vendor names; [`lookup`] finds them in each shape a
//! source arrives in (evtx_dump JSON, collector-flattened JSON, raw Azure diagnostic exports,
//! Log Analytics / Sentinel tables).

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

use crate::json::get_field;
use crate::source::SourceKind;

/// The Sigma logsource an event belongs to.
#[derive(Debug, Clone)]
pub struct EventClass {
    /// Sigma `product`.
    pub product: &'static str,
    /// Sigma `service`s the event belongs to.
    pub services: Vec<&'static str>,
    /// Sigma `category`s the event belongs to.
    pub categories: Vec<&'static str>,
    /// Field renames that apply, first match wins.
    pub renames: &'static [Rename],
    /// Whether fields may live under Windows `Event.EventData` / `Event.System`.
    pub windows: bool,
}

impl EventClass {
    /// Whether a rule with this logsource applies to events of this class.
    pub fn accepts(
        &self,
        product: Option<&str>,
        service: Option<&str>,
        category: Option<&str>,
    ) -> bool {
        let ok = |want: Option<&str>, have: &[&str]| {
            want.is_none_or(|w| have.iter().any(|h| h.eq_ignore_ascii_case(w)))
        };
        product.is_none_or(|p| p.eq_ignore_ascii_case(self.product))
            && ok(service, &self.services)
            && ok(category, &self.categories)
    }
}

/// Windows event log channels and the Sigma service of each.
pub const WINDOWS_CHANNELS: &[(&str, &str)] = &[
    ("Security", "security"),
    ("System", "system"),
    ("Application", "application"),
    ("Microsoft-Windows-Sysmon/Operational", "sysmon"),
    ("Microsoft-Windows-PowerShell/Operational", "powershell"),
    ("PowerShellCore/Operational", "powershell"),
    ("Windows PowerShell", "powershell-classic"),
    (
        "Microsoft-Windows-TaskScheduler/Operational",
        "taskscheduler",
    ),
    ("Microsoft-Windows-WMI-Activity/Operational", "wmi"),
    (
        "Microsoft-Windows-Windows Defender/Operational",
        "windefend",
    ),
    ("DNS Server", "dns-server"),
    (
        "Microsoft-Windows-DNS-Server/Analytical",
        "dns-server-analytic",
    ),
    (
        "Microsoft-Windows-DNS Client Events/Operational",
        "dns-client",
    ),
    (
        "Microsoft-Windows-DriverFrameworks-UserMode/Operational",
        "driver-framework",
    ),
    ("Microsoft-Windows-NTLM/Operational", "ntlm"),
    ("Microsoft-Windows-Bits-Client/Operational", "bits-client"),
    (
        "Microsoft-Windows-CodeIntegrity/Operational",
        "codeintegrity-operational",
    ),
    (
        "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
        "firewall-as",
    ),
    ("Microsoft-Windows-AppLocker/MSI and Script", "applocker"),
    ("Microsoft-Windows-AppLocker/EXE and DLL", "applocker"),
    (
        "Microsoft-Windows-AppLocker/Packaged app-Deployment",
        "applocker",
    ),
    (
        "Microsoft-Windows-AppLocker/Packaged app-Execution",
        "applocker",
    ),
    ("MSExchange Management", "msexchange-management"),
    (
        "Microsoft-Windows-Security-Mitigations/Kernel Mode",
        "security-mitigations",
    ),
    (
        "Microsoft-Windows-Security-Mitigations/User Mode",
        "security-mitigations",
    ),
    (
        "Microsoft-Windows-AppXDeploymentServer/Operational",
        "appxdeployment-server",
    ),
    (
        "Microsoft-Windows-AppxPackaging/Operational",
        "appxpackaging-om",
    ),
    (
        "Microsoft-Windows-AppModel-Runtime/Admin",
        "appmodel-runtime",
    ),
    (
        "Microsoft-Windows-Diagnosis-Scripted/Operational",
        "diagnosis-scripted",
    ),
    ("Microsoft-Windows-Shell-Core/Operational", "shell-core"),
    ("Microsoft-Windows-SmbClient/Security", "smbclient-security"),
    (
        "Microsoft-Windows-SmbClient/Connectivity",
        "smbclient-connectivity",
    ),
    (
        "Microsoft-Windows-SMBServer/Connectivity",
        "smbserver-connectivity",
    ),
    (
        "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
        "terminalservices-localsessionmanager",
    ),
    ("Microsoft-Windows-PrintService/Admin", "printservice-admin"),
    (
        "Microsoft-Windows-PrintService/Operational",
        "printservice-operational",
    ),
    ("OpenSSH/Operational", "openssh"),
    ("Microsoft-Windows-LDAP-Client/Debug", "ldap"),
    ("Microsoft-Windows-LSA/Operational", "lsa-server"),
    ("Microsoft-Windows-CAPI2/Operational", "capi2"),
    (
        "Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational",
        "certificateservicesclient-lifecycle-system",
    ),
    (
        "Microsoft-IIS-Configuration/Operational",
        "iis-configuration",
    ),
    ("Microsoft-ServiceBus-Client", "microsoft-servicebus-client"),
];

/// Sysmon event ids and the Sigma categories they provide.
pub const SYSMON_CATEGORIES: &[(u32, &[&str])] = &[
    (1, &["process_creation"]),
    (2, &["file_change"]),
    (3, &["network_connection"]),
    (4, &["sysmon_status"]),
    (5, &["process_termination"]),
    (6, &["driver_load"]),
    (7, &["image_load"]),
    (8, &["create_remote_thread"]),
    (9, &["raw_access_thread"]),
    (10, &["process_access"]),
    (11, &["file_event"]),
    (12, &["registry_add", "registry_delete", "registry_event"]),
    (13, &["registry_set", "registry_event"]),
    (14, &["registry_rename", "registry_event"]),
    (15, &["create_stream_hash"]),
    (16, &["sysmon_status"]),
    (17, &["pipe_created"]),
    (18, &["pipe_created"]),
    (19, &["wmi_event"]),
    (20, &["wmi_event"]),
    (21, &["wmi_event"]),
    (22, &["dns_query"]),
    (23, &["file_delete"]),
    (24, &["clipboard_capture"]),
    (25, &["process_tampering"]),
    (26, &["file_delete_detected"]),
    (27, &["file_block_executable"]),
    (28, &["file_block_shredding"]),
    (29, &["file_executable_detected"]),
    (255, &["sysmon_error"]),
];

/// A Sigma field that a class's events hold under another name: rules name `sigma`, events have
/// `event`, and `value` reads the event's value as the Sigma field's value.
#[derive(Debug, Clone, Copy)]
pub struct Rename {
    /// The field name rules use (Sysmon's, or a Sentinel column).
    pub sigma: &'static str,
    /// The field name in the event.
    pub event: &'static str,
    /// The Sigma field's value given the event's (the same value for most renames).
    pub value: for<'a> fn(&'a Value) -> &'a Value,
}

impl Rename {
    /// A rename that keeps the value.
    const fn plain(sigma: &'static str, event: &'static str) -> Rename {
        Rename {
            sigma,
            event,
            value: same_value,
        }
    }
}

/// The value of a [`Rename::plain`]: the event's own.
fn same_value(v: &Value) -> &Value {
    v
}

/// Security 4688 as `process_creation`: Sysmon's process-creation fields under their 4688 names,
/// as pySigma's Windows-audit pipeline maps them. Sysmon 1 fields without a 4688 counterpart
/// (`ParentCommandLine`, `Hashes`, `OriginalFileName`, `CurrentDirectory`, ...) stay absent, so
/// rules that need them do not match 4688 events. `ProcessId` and `ParentProcessId` are mapped
/// by name only: 4688 writes them in hexadecimal (`0x1a2c`), Sysmon in decimal.
const SECURITY_4688: &[Rename] = &[
    Rename::plain("Image", "NewProcessName"),
    Rename::plain("ParentImage", "ParentProcessName"),
    Rename::plain("ProcessId", "NewProcessId"),
    Rename::plain("ParentProcessId", "ProcessId"),
    Rename::plain("User", "SubjectUserName"),
    Rename::plain("LogonId", "SubjectLogonId"),
    Rename {
        sigma: "IntegrityLevel",
        event: "MandatoryLabel",
        value: integrity_level,
    },
];

/// Integrity levels: the mandatory-label SID 4688 writes in `MandatoryLabel` and the name Sysmon
/// writes in `IntegrityLevel` (the table of pySigma's Windows-audit pipeline).
const INTEGRITY_LEVELS: [(&str, &str); 5] = [
    ("S-1-16-0", "Untrusted"),
    ("S-1-16-4096", "Low"),
    ("S-1-16-8192", "Medium"),
    ("S-1-16-12288", "High"),
    ("S-1-16-16384", "System"),
];

/// Each integrity level as both its name and its SID, e.g. `["High", "S-1-16-12288"]`.
static INTEGRITY_LEVEL_VALUES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    INTEGRITY_LEVELS
        .iter()
        .map(|(sid, name)| Value::from(vec![*name, *sid]))
        .collect()
});

/// A 4688 event's `MandatoryLabel` read as Sigma's `IntegrityLevel`: a known SID becomes the
/// array of its name and SID, so that rules written for Sysmon (`IntegrityLevel: High`) and rules
/// written for 4688 (`IntegrityLevel: S-1-16-12288`) both match, and a negation (`not
/// IntegrityLevel: System`) excludes both forms (a value test holds if any element matches).
/// Other values are read unchanged.
fn integrity_level(v: &Value) -> &Value {
    let Some(sid) = v.as_str().map(str::trim) else {
        return v;
    };
    INTEGRITY_LEVELS
        .iter()
        .position(|(s, _)| s.eq_ignore_ascii_case(sid))
        .map_or(v, |i| &INTEGRITY_LEVEL_VALUES[i])
}

/// Entra ID sign-in: Sentinel column names in rules, raw diagnostic fields in events.
const ENTRA_SIGNIN: &[Rename] = &[
    Rename::plain("ResultType", "resultType"),
    Rename::plain("ResultType", "properties.status.errorCode"),
    Rename::plain("ResultDescription", "resultDescription"),
    Rename::plain("ResultDescription", "properties.status.failureReason"),
    Rename::plain("UserPrincipalName", "properties.userPrincipalName"),
    Rename::plain("IPAddress", "properties.ipAddress"),
    Rename::plain("Location", "properties.location.countryOrRegion"),
];

/// Entra ID audit and Azure activity: Sentinel names to raw diagnostic fields.
const AZURE_COMMON: &[Rename] = &[
    Rename::plain("ResultType", "resultType"),
    Rename::plain("ResultDescription", "resultDescription"),
    Rename::plain("OperationName", "operationName"),
    Rename::plain("OperationNameValue", "operationName"),
    Rename::plain("Category", "category"),
    Rename::plain("ActivityDisplayName", "properties.activityDisplayName"),
    Rename::plain("LoggedByService", "properties.loggedByService"),
    Rename::plain("Result", "properties.result"),
];

fn windows_class(
    service: &'static str,
    categories: Vec<&'static str>,
    renames: &'static [Rename],
) -> EventClass {
    EventClass {
        product: "windows",
        services: vec![service],
        categories,
        renames,
        windows: true,
    }
}

fn cloud(
    product: &'static str,
    services: &[&'static str],
    renames: &'static [Rename],
) -> EventClass {
    EventClass {
        product,
        services: services.to_vec(),
        categories: Vec::new(),
        renames,
        windows: false,
    }
}

/// Every class an event can be given, and where to find each.
pub struct Classes {
    /// All classes; an event's class is an index into this list.
    pub all: Vec<EventClass>,
    channel: HashMap<&'static str, usize>,
    sysmon: HashMap<u32, usize>,
    security_4688: usize,
    powershell: HashMap<(&'static str, u32), usize>,
    source: HashMap<SourceKind, usize>,
}

/// The class table, built once.
pub static CLASSES: LazyLock<Classes> = LazyLock::new(|| {
    let mut all = Vec::new();
    let mut channel = HashMap::new();
    let mut service_class: HashMap<&str, usize> = HashMap::new();
    for &(ch, svc) in WINDOWS_CHANNELS {
        let idx = *service_class.entry(svc).or_insert_with(|| {
            all.push(windows_class(svc, Vec::new(), &[]));
            all.len() - 1
        });
        channel.insert(ch, idx);
    }
    let mut sysmon = HashMap::new();
    for &(eid, cats) in SYSMON_CATEGORIES {
        all.push(windows_class("sysmon", cats.to_vec(), &[]));
        sysmon.insert(eid, all.len() - 1);
    }
    all.push(windows_class(
        "security",
        vec!["process_creation"],
        SECURITY_4688,
    ));
    let security_4688 = all.len() - 1;
    let mut powershell = HashMap::new();
    for (svc, eid, cat) in [
        ("powershell", 4104, "ps_script"),
        ("powershell", 4103, "ps_module"),
        ("powershell-classic", 400, "ps_classic_start"),
        ("powershell-classic", 600, "ps_classic_provider_start"),
        ("powershell-classic", 800, "ps_classic_script"),
    ] {
        all.push(windows_class(svc, vec![cat], &[]));
        powershell.insert((svc, eid), all.len() - 1);
    }
    let mut source = HashMap::new();
    for kind in SourceKind::ALL {
        let class = match kind {
            SourceKind::EntraSignin => cloud("azure", &["signinlogs"], ENTRA_SIGNIN),
            SourceKind::EntraAudit => cloud("azure", &["auditlogs"], AZURE_COMMON),
            SourceKind::AzureActivity => cloud("azure", &["activitylogs"], AZURE_COMMON),
            SourceKind::M365Audit => cloud(
                "m365",
                &[
                    "audit",
                    "exchange",
                    "threat_management",
                    "threat_detection",
                    "sharepoint",
                    "onedrive",
                    "teams",
                ],
                &[],
            ),
            SourceKind::AwsCloudtrail => cloud("aws", &["cloudtrail"], &[]),
            SourceKind::WindowsSecurity => {
                source.insert(kind, channel["Security"]);
                continue;
            }
            SourceKind::Sysmon => {
                source.insert(kind, service_class["sysmon"]);
                continue;
            }
            SourceKind::LinuxAuditd => cloud("linux", &["auditd"], &[]),
            SourceKind::Syslog => cloud("linux", &["syslog"], &[]),
            SourceKind::Firewall => EventClass {
                product: "",
                services: Vec::new(),
                categories: vec!["firewall"],
                renames: &[],
                windows: false,
            },
        };
        all.push(class);
        source.insert(kind, all.len() - 1);
    }
    Classes {
        all,
        channel,
        sysmon,
        security_4688,
        powershell,
        source,
    }
});

/// Unwraps evtx_dump's `{"#text": v, "#attributes": ...}` values.
fn text_value(v: &Value) -> &Value {
    match v {
        Value::Object(o) => o.get("#text").unwrap_or(v),
        _ => v,
    }
}

/// The object at `Event.<part>` of an evtx_dump-shaped event.
fn event_part<'a>(body: &'a Value, part: &str) -> Option<&'a Value> {
    body.get("Event")?.get(part)
}

fn windows_system<'a>(body: &'a Value, field: &str) -> Option<&'a Value> {
    get_field(body, field)
        .or_else(|| event_part(body, "System").and_then(|s| get_field(s, field)))
        .map(text_value)
}

/// The Windows event id of an event in any supported shape.
pub fn windows_event_id(body: &Value) -> Option<u32> {
    let v = windows_system(body, "EventID")?;
    match v {
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn windows_channel(body: &Value) -> Option<&str> {
    windows_system(body, "Channel").and_then(Value::as_str)
}

/// Classifies an event of `source` (an index into [`CLASSES`]).
pub fn classify(source: SourceKind, body: &Value) -> usize {
    let c = &*CLASSES;
    match source {
        // Windows event logs: the channel gives the service, the event id the category.
        SourceKind::WindowsSecurity | SourceKind::Sysmon => {
            let channel = windows_channel(body);
            let base = channel
                .and_then(|ch| c.channel.get(ch).copied())
                .unwrap_or(c.source[&source]);
            let service = c.all[base].services[0];
            let eid = windows_event_id(body);
            match (service, eid) {
                ("sysmon", Some(e)) => c.sysmon.get(&e).copied().unwrap_or(base),
                ("security", Some(4688)) => c.security_4688,
                (svc, Some(e)) => c.powershell.get(&(svc, e)).copied().unwrap_or(base),
                _ => base,
            }
        }
        SourceKind::EntraSignin
        | SourceKind::EntraAudit
        | SourceKind::M365Audit
        | SourceKind::AzureActivity
        | SourceKind::AwsCloudtrail
        | SourceKind::LinuxAuditd
        | SourceKind::Syslog
        | SourceKind::Firewall => c.source[&source],
    }
}

/// The class of every event of `source`, for sources whose class does not depend on the event
/// (all but the Windows event logs, classified by channel and event id).
pub fn class_of_source(source: SourceKind) -> Option<usize> {
    let c = &*CLASSES;
    let class = c.source[&source];
    (!c.all[class].windows).then_some(class)
}

fn get_ci<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = body;
    for part in path.split('.') {
        let obj = cur.as_object()?;
        cur = match obj.get(part) {
            Some(v) => v,
            None => obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(part))?.1,
        };
    }
    Some(cur)
}

/// What one walk of a non-Windows event's top-level keys finds for a name: the key spelled
/// exactly so, and the first key (in key order) equal to it ignoring ASCII case.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TopKey<'a> {
    /// The value under the exact key.
    pub(crate) exact: Option<&'a Value>,
    /// The value under the first case-insensitively equal key.
    pub(crate) ci: Option<&'a Value>,
}

/// [`lookup`] of `field` in a non-Windows event, for a field the class does not rename, given
/// what the top-level keys hold for the whole name (`whole`), for a dotted name its first part
/// (`first`) and the other parts (`rest`), and the top-level `properties` value. Same result as
/// [`lookup`], without searching the top level again.
pub(crate) fn lookup_cloud<'a>(
    properties: Option<&'a Value>,
    field: &str,
    whole: TopKey<'a>,
    first: Option<TopKey<'a>>,
    rest: &[String],
) -> Option<&'a Value> {
    // `get_field`: the whole name as a key, then the exact path.
    if let Some(v) = whole.exact {
        return Some(text_value(v));
    }
    let found = match first {
        Some(first) => {
            let exact = |v: &'a Value| {
                rest.iter()
                    .try_fold(v, |cur, part| cur.as_object()?.get(part.as_str()))
            };
            if let Some(v) = first.exact.and_then(exact) {
                return Some(text_value(v));
            }
            // `get_ci`: each part exactly, else case-insensitively.
            first.exact.or(first.ci).and_then(|c| {
                rest.iter().try_fold(c, |cur, part| {
                    let obj = cur.as_object()?;
                    match obj.get(part.as_str()) {
                        Some(v) => Some(v),
                        None => obj
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(part))
                            .map(|x| x.1),
                    }
                })
            })
        }
        None => whole.ci,
    };
    found.or_else(|| properties.and_then(|p| get_ci(p, field)))
}

/// Finds Sigma field `field` in an event body of class `class`.
pub fn lookup<'a>(class: &EventClass, body: &'a Value, field: &str) -> Option<&'a Value> {
    for r in class.renames {
        if r.sigma == field
            && let Some(v) = renamed(class, body, r)
        {
            return Some(v);
        }
    }
    lookup_unrenamed(class, body, field)
}

/// The value of a renamed field: its event field, read as the Sigma field.
fn renamed<'a>(class: &EventClass, body: &'a Value, r: &Rename) -> Option<&'a Value> {
    lookup_unrenamed(class, body, r.event).map(r.value)
}

/// [`lookup`] without the class's renames (renamed fields are searched like any other).
fn lookup_unrenamed<'a>(class: &EventClass, body: &'a Value, field: &str) -> Option<&'a Value> {
    if let Some(v) = get_field(body, field) {
        return Some(text_value(v));
    }
    if class.windows {
        if let Some(v) = event_part(body, "EventData").and_then(|d| get_field(d, field)) {
            return Some(text_value(v));
        }
        if field == "Provider_Name" {
            return get_field(body, "Event.System.Provider.#attributes.Name")
                .or_else(|| get_field(body, "ProviderName"));
        }
        return windows_system(body, field).or_else(|| {
            // Rare shapes only: Defender's spaced names, and UserData when there is no EventData.
            let defender = class.services.first() == Some(&"windefend");
            let no_data = event_part(body, "EventData").is_none_or(Value::is_null);
            (defender || no_data)
                .then(|| windows_loose(body, field))
                .flatten()
        });
    }
    // Cloud shapes: Sentinel columns vs raw exports differ in case and in `properties.` nesting.
    get_ci(body, field).or_else(|| body.get("properties").and_then(|p| get_ci(p, field)))
}

/// Calls `f(sigma field, value)` for every value [`lookup`] could return for a plain (undotted)
/// field of a Windows event: `System`, `EventData`, top-level keys, then renamed fields under
/// their Sigma name. The last value offered for a name is the one [`lookup`] returns (the offers
/// come in reverse order of its precedence), and a name never offered has none. Lets a caller
/// interested in many fields walk the event once instead of looking each one up. Returns false
/// (and calls nothing) for shapes where [`lookup`] also searches elsewhere (Defender's spaced
/// names, `UserData`): use [`lookup`] there.
pub(crate) fn windows_values<'a>(
    class: &EventClass,
    body: &'a Value,
    f: &mut impl FnMut(&str, &'a Value),
) -> bool {
    if class.services.first() == Some(&"windefend") || event_part(body, "UserData").is_some() {
        return false;
    }
    for part in [
        event_part(body, "System"),
        event_part(body, "EventData"),
        Some(body),
    ] {
        if let Some(o) = part.and_then(Value::as_object) {
            for (k, v) in o {
                f(k, text_value(v));
            }
        }
    }
    // The first rename that resolves wins in `lookup`: offer them last to first.
    for r in class.renames.iter().rev() {
        if let Some(v) = renamed(class, body, r) {
            f(r.sigma, v);
        }
    }
    true
}

/// Last resort for Windows events: `EventData` names written with spaces (Defender's
/// `Threat Name` for Sigma's `ThreatName`) and `UserData.<wrapper>.<field>` (WMI, some others).
fn windows_loose<'a>(body: &'a Value, field: &str) -> Option<&'a Value> {
    let same = |k: &str| {
        k.contains(' ')
            && k.chars()
                .filter(|c| *c != ' ')
                .map(|c| c.to_ascii_lowercase())
                .eq(field.chars().map(|c| c.to_ascii_lowercase()))
    };
    if let Some(data) = event_part(body, "EventData").and_then(Value::as_object)
        && let Some((_, v)) = data.iter().find(|(k, _)| same(k))
    {
        return Some(text_value(v));
    }
    let user = event_part(body, "UserData")?.as_object()?;
    user.values()
        .filter_map(Value::as_object)
        .find_map(|w| w.get(field))
        .map(text_value)
}

/// Guesses the source of an event from its shape (for `nmc hunt` without `--source`).
pub fn detect_source(body: &Value) -> Option<SourceKind> {
    let o = body.as_object()?;
    let has = |k: &str| o.contains_key(k);
    let str_of = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or_default();
    if has("eventSource") && has("eventName") && (has("awsRegion") || has("eventVersion")) {
        return Some(SourceKind::AwsCloudtrail);
    }
    if get_field(body, "Event.System").is_some() || has("EventID") || has("Channel") {
        let sysmon = windows_channel(body).is_some_and(|c| c.contains("Sysmon"))
            || windows_system(body, "Provider_Name")
                .or_else(|| get_field(body, "Event.System.Provider.#attributes.Name"))
                .and_then(Value::as_str)
                .is_some_and(|p| p.contains("Sysmon"));
        return Some(if sysmon {
            SourceKind::Sysmon
        } else {
            SourceKind::WindowsSecurity
        });
    }
    let category = str_of("category").to_ascii_lowercase();
    let table = str_of("Type");
    match (category.as_str(), table) {
        ("signinlogs" | "noninteractiveusersigninlogs" | "serviceprincipalsigninlogs", _)
        | (_, "SigninLogs" | "AADNonInteractiveUserSignInLogs") => {
            return Some(SourceKind::EntraSignin);
        }
        ("auditlogs", _) | (_, "AuditLogs") => return Some(SourceKind::EntraAudit),
        (
            "administrative" | "policy" | "security" | "servicehealth" | "alert" | "recommendation",
            _,
        )
        | (_, "AzureActivity") => return Some(SourceKind::AzureActivity),
        _ => {}
    }
    if has("Workload") && (has("Operation") || has("RecordType")) {
        return Some(SourceKind::M365Audit);
    }
    if has("ResultType") && has("UserPrincipalName") && has("AppDisplayName") {
        return Some(SourceKind::EntraSignin);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(source: SourceKind, body: &Value) -> &'static EventClass {
        &CLASSES.all[classify(source, body)]
    }

    #[test]
    fn sysmon_event_ids_route_to_categories() {
        let ev = json!({"Event": {"System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational"}}});
        let c = class(SourceKind::Sysmon, &ev);
        assert!(c.accepts(Some("windows"), None, Some("process_creation")));
        assert!(c.accepts(Some("windows"), Some("sysmon"), None));
        assert!(!c.accepts(Some("windows"), None, Some("file_event")));
        let reg = json!({"EventID": "13", "Channel": "Microsoft-Windows-Sysmon/Operational"});
        let c = class(SourceKind::WindowsSecurity, &reg);
        assert!(
            c.accepts(None, None, Some("registry_set"))
                && c.accepts(None, None, Some("registry_event"))
        );
    }

    #[test]
    fn security_4688_is_process_creation_with_renames() {
        let ev = json!({"EventID": 4688, "Channel": "Security", "NewProcessName": "C:\\x\\cmd.exe", "CommandLine": "cmd /c"});
        let c = class(SourceKind::WindowsSecurity, &ev);
        assert!(c.accepts(Some("windows"), None, Some("process_creation")));
        assert!(c.accepts(Some("windows"), Some("security"), None));
        assert_eq!(lookup(c, &ev, "Image"), Some(&json!("C:\\x\\cmd.exe")));
        assert_eq!(lookup(c, &ev, "CommandLine"), Some(&json!("cmd /c")));
        let dumped = json!({"Event": {"System": {"EventID": 4688, "Channel": "Security"},
                            "EventData": {"NewProcessName": "C:\\y.exe"}}});
        let c = class(SourceKind::WindowsSecurity, &dumped);
        assert_eq!(
            lookup(c, &dumped, "Image"),
            Some(&json!("C:\\y.exe")),
            "renames reach EventData"
        );
        let mut seen = Vec::new();
        assert!(windows_values(c, &dumped, &mut |k, v| seen
            .push((k.to_string(), v.clone()))));
        assert!(seen.contains(&("Image".to_string(), json!("C:\\y.exe"))));
        assert!(seen.contains(&("EventID".to_string(), json!(4688))));
        let logon = json!({"Event": {"System": {"EventID": {"#text": 4624}, "Channel": "Security"}, "EventData": {"LogonType": 3}}});
        let c = class(SourceKind::WindowsSecurity, &logon);
        assert!(!c.accepts(None, None, Some("process_creation")));
        assert_eq!(lookup(c, &logon, "LogonType"), Some(&json!(3)));
        assert_eq!(
            lookup(c, &logon, "EventID"),
            Some(&json!(4624)),
            "#text unwrapped"
        );
    }

    #[test]
    fn every_source_kind_has_its_logsource() {
        let expect = |kind, product, service| {
            let c = class(kind, &json!({}));
            assert!(c.accepts(Some(product), service, None), "{kind}");
        };
        for kind in SourceKind::ALL {
            match kind {
                SourceKind::EntraSignin => expect(kind, "azure", Some("signinlogs")),
                SourceKind::EntraAudit => expect(kind, "azure", Some("auditlogs")),
                SourceKind::M365Audit => {
                    expect(kind, "m365", Some("audit"));
                    expect(kind, "m365", Some("exchange"));
                }
                SourceKind::AzureActivity => expect(kind, "azure", Some("activitylogs")),
                SourceKind::AwsCloudtrail => expect(kind, "aws", Some("cloudtrail")),
                SourceKind::WindowsSecurity => expect(kind, "windows", Some("security")),
                SourceKind::Sysmon => expect(kind, "windows", Some("sysmon")),
                SourceKind::LinuxAuditd => expect(kind, "linux", Some("auditd")),
                SourceKind::Syslog => expect(kind, "linux", Some("syslog")),
                SourceKind::Firewall => {
                    assert!(class(kind, &json!({})).accepts(None, None, Some("firewall")))
                }
            }
        }
    }

    #[test]
    fn channels_give_services() {
        let ev = json!({"Event": {"System": {"EventID": 1116, "Channel": "Microsoft-Windows-Windows Defender/Operational"}}});
        assert!(class(SourceKind::WindowsSecurity, &ev).accepts(
            Some("windows"),
            Some("windefend"),
            None
        ));
        let ps = json!({"EventID": 4104, "Channel": "Microsoft-Windows-PowerShell/Operational"});
        assert!(class(SourceKind::WindowsSecurity, &ps).accepts(
            Some("windows"),
            None,
            Some("ps_script")
        ));
    }

    #[test]
    fn cloud_shapes() {
        let c = class(SourceKind::EntraSignin, &json!({}));
        let raw =
            json!({"resultType": "50126", "properties": {"deviceDetail": {"trustType": "Hybrid"}}});
        assert_eq!(lookup(c, &raw, "ResultType"), Some(&json!("50126")));
        assert_eq!(
            lookup(c, &raw, "DeviceDetail.trusttype"),
            Some(&json!("Hybrid"))
        );
        let sentinel = json!({"ResultType": "0", "DeviceDetail": {"trustType": "x"}});
        assert_eq!(lookup(c, &sentinel, "ResultType"), Some(&json!("0")));
        assert!(c.accepts(Some("azure"), Some("signinlogs"), None));
        assert!(!c.accepts(Some("azure"), Some("auditlogs"), None));
    }

    #[test]
    fn cloud_lookup_from_top_keys_is_lookup() {
        let c = class(SourceKind::AwsCloudtrail, &json!({}));
        let bodies = [
            json!({"eventName": "A", "EventName": "B", "userIdentity": {"arn": "x", "Type": "t"},
                   "requestParameters": {"a": {"b": 1}}, "user.name": "dotted key"}),
            json!({"EVENTNAME": {"#text": "C"}, "UserIdentity": {"ARN": "y"},
                   "properties": {"userAgent": "ua", "requestParameters": {"a": {"B": 2}}}}),
            json!({"properties": {"eventName": "P"}, "userIdentity": "not an object"}),
        ];
        let fields = [
            "eventName",
            "eventname",
            "userIdentity.arn",
            "useridentity.ARN",
            "userIdentity.type",
            "requestParameters.a.b",
            "requestParameters.a.B",
            "user.name",
            "userAgent",
            "missing",
            "missing.x",
        ];
        for body in &bodies {
            let obj = body.as_object().unwrap();
            let top = |name: &str| TopKey {
                exact: obj.get(name),
                ci: obj
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v),
            };
            for f in fields {
                let first = f.split_once('.').map(|(a, _)| top(a));
                let rest: Vec<String> = f.split('.').skip(1).map(String::from).collect();
                assert_eq!(
                    lookup_cloud(obj.get("properties"), f, top(f), first, &rest),
                    lookup(c, body, f),
                    "{f} in {body}"
                );
            }
        }
    }

    #[test]
    fn detects_shapes() {
        assert_eq!(
            detect_source(
                &json!({"eventSource": "s3.amazonaws.com", "eventName": "x", "awsRegion": "r"})
            ),
            Some(SourceKind::AwsCloudtrail)
        );
        assert_eq!(
            detect_source(
                &json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational"}}})
            ),
            Some(SourceKind::Sysmon)
        );
        assert_eq!(
            detect_source(&json!({"EventID": 4624, "Channel": "Security"})),
            Some(SourceKind::WindowsSecurity)
        );
        assert_eq!(
            detect_source(&json!({"category": "SignInLogs"})),
            Some(SourceKind::EntraSignin)
        );
        assert_eq!(
            detect_source(&json!({"category": "AuditLogs"})),
            Some(SourceKind::EntraAudit)
        );
        assert_eq!(
            detect_source(&json!({"category": "Administrative"})),
            Some(SourceKind::AzureActivity)
        );
        assert_eq!(
            detect_source(&json!({"Workload": "Exchange", "Operation": "New-InboxRule"})),
            Some(SourceKind::M365Audit)
        );
        assert_eq!(detect_source(&json!({"hello": 1})), None);
    }
}
