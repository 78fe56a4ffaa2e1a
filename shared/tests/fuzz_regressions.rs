//! Every saved fuzz input, run through its target's body as an ordinary test: the seed corpora
//! (`shared/fuzz/seeds/<target>/`) and the inputs that once crashed, hung or failed an assertion
//! (`shared/fuzz/regressions/<target>/`, each fixed since). See docs/security.md, "Fuzzing".
//!
//! `NMC_WRITE_FUZZ_SEEDS=1 cargo test -p nmc-shared --test fuzz_regressions -- --ignored`
//! rewrites the seeds from the repository's own samples (tests/data, deploy/rules) and state the
//! code writes.

use std::fs;
use std::path::{Path, PathBuf};

use nmc_shared::SourceKind;
use nmc_shared::fuzzing;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The saved inputs of `target`: seeds and regressions, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() && path.extension().is_none_or(|x| x != "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs every saved input of `target`, naming the one that fails.
fn run(target: &str, body: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no saved inputs for fuzz target {target}"
    );
    for path in files {
        let data = fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target {target} fails on {}",
            path.display()
        );
    }
}

#[test]
fn event_inputs() {
    run("event", fuzzing::event);
}

#[test]
fn rules_inputs() {
    run("rules", fuzzing::rules);
}

#[test]
fn state_inputs() {
    run("state", fuzzing::state);
}

/// The first byte of an `event` input for `source`.
fn source_byte(source: SourceKind) -> u8 {
    SourceKind::ALL.iter().position(|&s| s == source).unwrap() as u8
}

/// Rewrites the seed corpora (see the module's documentation).
#[test]
#[ignore]
fn write_seeds() {
    if std::env::var_os("NMC_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let seeds = fuzz_dir().join("seeds");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = seeds.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };
    // Events: SigmaHQ regression samples (Sysmon, Security), a Stratus Red Team CloudTrail
    // record, and the fuzzing module's samples of the other sources.
    let regression = root.join("tests/data/sigma/regression_data/rules/windows");
    for (i, rule) in [
        "process_creation/proc_creation_win_findstr_lsass",
        "builtin/security/win_security_explicit_credential_local_logon",
    ]
    .iter()
    .enumerate()
    {
        let dir = regression.join(rule);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let body: serde_json::Value =
            serde_json::from_slice(&fs::read(&files[0]).unwrap()).unwrap();
        let source = nmc_shared::mapping::detect_source(&body).unwrap();
        let mut data = vec![source_byte(source)];
        data.extend(serde_json::to_vec(&body).unwrap());
        write("event", &format!("sigmahq_{i}.json"), &data);
    }
    let trail: Vec<serde_json::Value> = serde_json::from_slice(
        &fs::read(root.join("tests/data/stratus/aws.defense-evasion.cloudtrail-stop.json"))
            .unwrap(),
    )
    .unwrap();
    let mut data = vec![source_byte(SourceKind::AwsCloudtrail)];
    data.extend(serde_json::to_vec(&trail[0]).unwrap());
    write("event", "stratus_cloudtrail_stop.json", &data);
    for ev in fuzzing::SAMPLES.iter() {
        if matches!(
            ev.source,
            SourceKind::Sysmon | SourceKind::WindowsSecurity | SourceKind::AwsCloudtrail
        ) {
            continue;
        }
        let mut body = ev.body.clone();
        let time = nmc_shared::time::format_ms(ev.time_ms);
        body[ev.source.time_fields()[0]] = serde_json::Value::String(time);
        let mut data = vec![source_byte(ev.source)];
        data.extend(serde_json::to_vec(&body).unwrap());
        write("event", &format!("sample_{}.json", ev.source), &data);
    }
    // Rules: SigmaHQ rules with modifiers and filters, a specification correlation, nmc's own
    // correlation rules, and the fuzzing module's rule sets.
    for (name, path) in [
        (
            "sigmahq_findstr_lsass.yml",
            "tests/data/sigma/rules/windows/process_creation/proc_creation_win_findstr_lsass.yml",
        ),
        (
            "sigmahq_curl_ntlm_hash_leak.yml",
            "tests/data/sigma/rules/windows/process_creation/proc_creation_win_curl_ntlm_hash_leak_attempt.yml",
        ),
        (
            "spec_example_15.yml",
            "tests/data/sigma-specification/spec_example_15.yml",
        ),
        (
            "nmc_brute_force_then_success.yml",
            "deploy/rules/identity/entra_brute_force_then_success.yml",
        ),
        (
            "nmc_aws_logging_disabled_then_activity.yml",
            "deploy/rules/cloud/aws_logging_disabled_then_activity.yml",
        ),
    ] {
        write("rules", name, &fs::read(root.join(path)).unwrap());
    }
    write(
        "rules",
        "fuzz_detection.yml",
        fuzzing::DETECTION_RULES.as_bytes(),
    );
    write(
        "rules",
        "fuzz_correlation.yml",
        fuzzing::CORRELATION_RULES.as_bytes(),
    );
    // State: what the code persists.
    for (i, seed) in fuzzing::state_seeds().iter().enumerate() {
        write("state", &format!("written_{i}.bin"), seed);
    }
}
