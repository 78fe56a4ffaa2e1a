//! Synthetic alerts published as a node publishes them, for the tests of what happens after an
//! alert is raised (notifications, the console).

use std::collections::BTreeMap;

use async_nats::jetstream;
use nmc_shared::alert::{Alert, Level, RuleRef};

/// A synthetic alert of kent at `level` (what a node publishes), number `n`.
pub fn alert(level: Level, n: u64) -> Alert {
    alert_of("kent", level, n)
}

/// A synthetic alert of `force` at `level`, number `n`.
pub fn alert_of(force: &str, level: Level, n: u64) -> Alert {
    let prefix = if force == "kent" {
        String::new()
    } else {
        format!("{force}-")
    };
    let id = uuid::Uuid::new_v5(
        &nmc_shared::alert::ALERT_NAMESPACE,
        format!("test-{prefix}{level}-{n}").as_bytes(),
    );
    Alert {
        id,
        force: nmc_shared::ForceId::new(force).unwrap(),
        rule: RuleRef {
            id: "test-rule".into(),
            title: format!("Test rule {level}"),
            level,
            tags: vec!["attack.t1110.003".into()],
            kind: "detection".into(),
            description: "A test alert.".into(),
            mitigation: "Reset the password.".into(),
            falsepositives: vec![],
            references: vec![],
        },
        group: BTreeMap::new(),
        window_start: "2026-11-30T10:00:00Z".into(),
        window_end: "2026-11-30T10:00:00Z".into(),
        count: 1,
        first_seen: "2026-11-30T10:00:00Z".into(),
        last_seen: "2026-11-30T10:00:00Z".into(),
        distinct: None,
        measured: None,
        suppressed: 0,
        evidence: vec![],
        node: "test".into(),
        epoch: 1,
        rule_pack: "test".into(),
    }
}

/// Alert `n` of the console benchmarks' 100,000: over the first 43 forces of the registry, a
/// mix of levels, a distinct source address in its group.
pub fn spread(n: u64) -> Alert {
    let levels = [
        Level::Low,
        Level::Medium,
        Level::Medium,
        Level::High,
        Level::Critical,
    ];
    let force = nmc_shared::force::FORCES[(n % 43) as usize].id;
    let mut a = alert_of(force, levels[(n % 5) as usize], n);
    a.group.insert(
        "IPAddress".into(),
        format!("198.51.{}.{}", n / 256 % 256, n % 256),
    );
    a
}

/// Publishes alerts as a node does (subject of force and level, message id = alert id).
pub async fn publish_alerts(js: &jetstream::Context, alerts: &[Alert]) {
    let mut acks = Vec::new();
    for a in alerts {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", a.id.to_string().as_str());
        acks.push(
            js.publish_with_headers(
                nmc_shared::subject::alerts(&a.force, a.rule.level),
                h,
                serde_json::to_vec(a).unwrap().into(),
            )
            .await
            .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
}
