//! The Stratus Red Team CloudTrail detonation logs fire the SigmaHQ AWS rules that target those
//! techniques (and nothing else fires). `docs/sigma-support.md` explains the techniques that no
//! SigmaHQ rule covers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nmc_node::hunt::{Hunt, input_files};
use nmc_shared::ForceId;

fn data(p: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data")).join(p)
}

#[test]
fn stratus_techniques_fire_the_sigmahq_aws_rules() {
    let (rules, errors) = nmc_node::rules::load(&[data("sigma/rules/cloud/aws")]).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let mut hunt = Hunt::new(rules, ForceId::new("hunt").unwrap(), None);
    let mut fired: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in input_files(&[data("stratus")]).unwrap() {
        let technique = f
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches("aws.")
            .to_owned();
        hunt.file(
            &f,
            &mut |a| {
                assert_eq!(
                    a.evidence[0].file.as_deref(),
                    Some(f.display().to_string().as_str())
                );
                assert!(a.evidence[0].line.unwrap() >= 1);
                fired
                    .entry(technique.clone())
                    .or_default()
                    .insert(a.rule.title);
            },
            &mut |file, line, p| panic!("{file}:{line}: {p}"),
        )
        .unwrap();
    }
    assert_eq!(hunt.stats.files, 35);
    assert_eq!(
        hunt.stats.undetected + hunt.stats.bad,
        0,
        "every record is recognised as CloudTrail"
    );

    let assume = "AWS STS AssumeRole Misuse";
    let ssm = "Potential Malicious Usage of CloudTrail System Manager";
    let want: BTreeMap<&str, Vec<&str>> = [
        ("credential-access.ec2-get-password-data", vec![assume]),
        (
            "credential-access.ec2-steal-instance-credentials",
            vec![assume, ssm],
        ),
        (
            "defense-evasion.cloudtrail-delete",
            vec!["AWS CloudTrail Important Change"],
        ),
        (
            "defense-evasion.cloudtrail-stop",
            vec!["AWS CloudTrail Important Change"],
        ),
        ("defense-evasion.organizations-leave", vec![assume]),
        (
            "defense-evasion.vpc-remove-flow-logs",
            vec!["AWS VPC Flow Logs Deleted"],
        ),
        ("discovery.ec2-download-user-data", vec![assume]),
        ("execution.ec2-launch-unusual-instances", vec![assume]),
        ("execution.ssm-send-command", vec![ssm]),
        (
            "exfiltration.ec2-security-group-open-port-22-ingress",
            vec!["Ingress/Egress Security Group Modification"],
        ),
        (
            "exfiltration.ec2-share-ebs-snapshot",
            vec!["AWS Snapshot Backup Exfiltration"],
        ),
        ("impact.bedrock-invoke-model", vec![assume]),
        (
            "initial-access.console-login-without-mfa",
            vec!["AWS Successful Console Login Without MFA"],
        ),
        (
            "lateral-movement.ec2-serial-console-send-ssh-public-key",
            vec![assume],
        ),
        (
            "persistence.iam-backdoor-user",
            vec!["AWS IAM Backdoor Users Keys"],
        ),
        (
            "persistence.iam-create-admin-user",
            vec!["AWS IAM Backdoor Users Keys"],
        ),
        (
            "persistence.lambda-layer-extension",
            vec!["AWS New Lambda Layer Attached"],
        ),
        (
            "privilege-escalation.iam-update-user-login-profile",
            vec!["AWS User Login Profile Was Modified"],
        ),
    ]
    .into();
    let got: BTreeMap<&str, Vec<&str>> = fired
        .iter()
        .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(got, want);
}
