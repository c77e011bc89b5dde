//! `kaudit bench kafka` for real: a tansu broker, the daemon as the bench's
//! own child process, the corpus produced at a modest rate. Every planted
//! (auditID, rule) pair must be stored and timed; nothing here asserts on
//! speed (the figures go in the notes, not in timed tests).

use super::kafka::Broker;
use super::*;

#[test]
fn bench_kafka_stores_every_planted_pair_and_times_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let broker = Broker::start_logging(Some(&dir.join("tansu.log")));
    let bench_dir = dir.join("bench");
    let out = kaudit(
        &[
            "bench",
            "kafka",
            "--brokers",
            &broker.bootstrap(),
            "--rate",
            "5000",
            "--events",
            "20000",
            "--attack-every",
            "500",
            "--dir",
            &path_str(&bench_dir),
            "--format",
            "json",
        ],
        b"",
    );
    let daemon_log =
        std::fs::read_to_string(bench_dir.join("kafka-bench-daemon.log")).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\ndaemon log:\n{daemon_log}",
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let why = || format!("{report:#}\n{}\ndaemon log:\n{daemon_log}", stderr(&out));

    assert_eq!(report["produced"]["events"], 20000, "{}", why());
    assert_eq!(report["produced"]["delivery_failures"], 0, "{}", why());
    assert_eq!(report["topic_created"], true, "{}", why());
    // Every planted pair stored: 40 attacks, each with its rule ids.
    let planted = report["recall"]["planted"].as_u64().unwrap();
    assert!(planted >= 40, "{}", why());
    assert_eq!(report["recall"]["found"], planted, "{}", why());
    assert_eq!(report["daemon"]["events_consumed"], 20000, "{}", why());
    assert!(
        report["daemon"]["caught_up_seconds"].is_number(),
        "{}",
        why()
    );
    assert!(
        report["daemon"]["findings_stored"].as_u64().unwrap() >= planted,
        "{}",
        why()
    );

    let l = &report["latency"];
    assert_eq!(l["samples"], planted, "{}", why());
    let ms = |k: &str| {
        l[k].as_f64()
            .unwrap_or_else(|| panic!("latency.{k} missing: {}", why()))
    };
    assert!(ms("p50_ms") > 0.0, "{}", why());
    assert!(ms("p90_ms") >= ms("p50_ms"), "{}", why());
    assert!(ms("p99_ms") >= ms("p90_ms"), "{}", why());
    assert!(ms("max_ms") >= ms("p99_ms"), "{}", why());
    assert!(
        report["daemon"]["peak_rss_mb"].as_f64().unwrap() > 0.0,
        "{}",
        why()
    );
    assert_eq!(report["daemon"]["exit"], "exit status: 0", "{}", why());

    // The per-pair file: one row per planted pair, each with a latency.
    let tsv = std::fs::read_to_string(report["latencies_file"].as_str().unwrap()).unwrap();
    let rows: Vec<&str> = tsv.lines().skip(1).collect();
    assert_eq!(rows.len() as u64, planted);
    assert!(
        rows.iter()
            .all(|r| r.split('\t').nth(3).is_some_and(|v| !v.is_empty())),
        "{tsv}"
    );

    // The text form of the same run reuses the corpus, on a fresh topic.
    let out = kaudit(
        &[
            "bench",
            "kafka",
            "--brokers",
            &broker.bootstrap(),
            "--rate",
            "5000",
            "--events",
            "20000",
            "--attack-every",
            "500",
            "--dir",
            &path_str(&bench_dir),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("(reused)"), "{text}");
    assert!(
        text.contains(&format!("recall    {planted}/{planted} planted")),
        "{text}"
    );
    assert!(text.contains("latency   sent → stored, ms: p50 "), "{text}");
}
