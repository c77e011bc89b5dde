//! Decoder tests over the committed envelope fixtures
//! (`fixtures/envelopes/`, see its README for where each shape comes from).

use std::path::{Path, PathBuf};

use super::*;
use crate::detect::Detector;
use crate::event::Stage;

/// Everything a decoder told its sink, copied out.
struct Collect {
    events: Vec<Seen>,
    problems: Vec<(ProblemKind, u64, String, Option<String>)>,
    skipped: Vec<&'static str>,
    detections: usize,
    detector: Detector,
}

#[derive(Debug, Clone)]
struct Seen {
    audit_id: String,
    cluster: Option<String>,
    envelope: Envelope,
    line: u64,
    verb: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    user: String,
    command: Vec<String>,
    source_ips: Vec<String>,
    user_agent: Option<String>,
    code: Option<i64>,
    stage: Option<Stage>,
}

/// The built-in rule set, compiled once for all tests.
fn builtin_rules() -> std::sync::Arc<crate::detect::RuleSet> {
    static RULES: std::sync::OnceLock<std::sync::Arc<crate::detect::RuleSet>> =
        std::sync::OnceLock::new();
    RULES
        .get_or_init(|| {
            std::sync::Arc::new(crate::detect::RuleSet::load(&[]).expect("built-in rules compile"))
        })
        .clone()
}

impl Default for Collect {
    fn default() -> Self {
        Collect {
            events: Vec::new(),
            problems: Vec::new(),
            skipped: Vec::new(),
            detections: 0,
            detector: Detector::new(builtin_rules()),
        }
    }
}

impl Sink for Collect {
    fn event(&mut self, ev: &AuditEvent<'_>) {
        self.events.push(Seen {
            audit_id: ev.audit_id().into(),
            cluster: ev.cluster.as_deref().map(Into::into),
            envelope: ev.origin.envelope,
            line: ev.origin.line,
            verb: ev.verb().into(),
            resource: ev.resource().into(),
            subresource: ev.subresource().into(),
            namespace: ev.namespace().into(),
            name: ev.name().into(),
            user: ev.username().into(),
            command: ev.exec_command().iter().map(|c| c.to_string()).collect(),
            source_ips: ev.source_ips.iter().map(|s| s.to_string()).collect(),
            user_agent: ev.user_agent.as_deref().map(Into::into),
            code: ev.response_code(),
            stage: ev.stage,
        });
        let mut n = 0;
        self.detector.check(ev, &mut |f| {
            if ["pod-exec", "pod-attach", "pod-portforward"].contains(&f.rule_id.as_str()) {
                n += 1;
            }
        });
        self.detections += n;
    }
    fn problem(&mut self, p: &Problem<'_>) {
        self.problems.push((
            p.kind,
            p.line,
            p.error.to_string(),
            p.audit_id.map(Into::into),
        ));
    }
    fn skipped(&mut self, _line: u64, what: &'static str) {
        self.skipped.push(what);
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/envelopes")
}

fn decode_bytes(bytes: &[u8], limits: Limits) -> Collect {
    let mut c = Collect::default();
    let ctx = Context::new(limits);
    decode(bytes, &ctx, &mut c).unwrap();
    c
}

fn decode_file(rel: &str) -> Collect {
    let bytes = std::fs::read(fixtures().join(rel)).unwrap();
    decode_bytes(&bytes, Limits::default())
}

#[test]
fn events_name_their_source() {
    struct Names(Vec<String>);
    impl Sink for Names {
        fn event(&mut self, ev: &AuditEvent<'_>) {
            self.0.push(ev.source.to_owned());
        }
        fn problem(&mut self, _: &Problem<'_>) {}
        fn skipped(&mut self, _: u64, _: &'static str) {}
    }
    let bytes = std::fs::read(fixtures().join("eks/firehose.json")).unwrap();
    let mut names = Names(Vec::new());
    let ctx = Context {
        source: "firehose-in",
        ..Context::new(Limits::default())
    };
    decode(&bytes[..], &ctx, &mut names).unwrap();
    assert_eq!(names.0, ["firehose-in"; 4]);
}

#[test]
fn every_fixture_matches_expected_tsv() {
    let table = std::fs::read_to_string(fixtures().join("expected.tsv")).unwrap();
    let mut rows = 0;
    for row in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = row.split('\t').collect();
        let n = |i: usize| cols[i].parse::<usize>().unwrap();
        let c = decode_file(cols[0]);
        let count = |k: ProblemKind| c.problems.iter().filter(|p| p.0 == k).count();
        let got = (
            c.events.len(),
            c.skipped.len(),
            count(ProblemKind::Malformed) + count(ProblemKind::Oversized),
            count(ProblemKind::Truncated),
            c.detections,
        );
        assert_eq!(
            got,
            (n(1), n(2), n(3), n(4), n(5)),
            "{}: problems {:?}",
            cols[0],
            c.problems
        );
        rows += 1;
    }
    assert!(rows >= 17, "expected.tsv has {rows} rows");
}

#[test]
fn pretty_printed_event() {
    let c = decode_file("k8s/event_pretty.json");
    let e = &c.events[0];
    assert_eq!(e.envelope, Envelope::Event);
    assert_eq!((e.verb.as_str(), e.subresource.as_str()), ("get", "exec"));
    assert_eq!(
        e.command,
        [
            "sh",
            "-c",
            "cat /var/run/secrets/kubernetes.io/serviceaccount/token"
        ]
    );
    assert_eq!(e.line, 1);
}

#[test]
fn eventlist_items_and_stages() {
    let c = decode_file("k8s/eventlist.json");
    assert!(c.events.iter().all(|e| e.envelope == Envelope::EventList));
    let stages: Vec<_> = c.events.iter().map(|e| e.stage).collect();
    assert_eq!(
        stages[..3],
        [
            Some(Stage::RequestReceived),
            Some(Stage::ResponseStarted),
            Some(Stage::ResponseComplete)
        ]
    );
    assert_eq!(c.events[0].audit_id, c.events[2].audit_id);
    assert_eq!((c.events[0].code, c.events[1].code), (None, Some(101)));
    // Lines point into the pretty-printed file, one per item start.
    assert!(c.events.windows(2).all(|w| w[0].line < w[1].line));
}

#[test]
fn json_lines_and_gzip_agree() {
    let plain = decode_file("k8s/audit.log");
    let gz = decode_file("k8s/audit.log.gz");
    let ids = |c: &Collect| {
        c.events
            .iter()
            .map(|e| (e.audit_id.clone(), e.line))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&plain), ids(&gz));
    assert_eq!(plain.events.last().unwrap().line, 20);
    let pf = plain
        .events
        .iter()
        .find(|e| e.subresource == "portforward")
        .unwrap();
    assert_eq!(pf.verb, "create");
}

#[test]
fn eks_cloudwatch() {
    for f in ["eks/cloudwatch.json", "eks/cloudwatch.json.gz"] {
        let c = decode_file(f);
        assert!(
            c.events
                .iter()
                .all(|e| e.cluster.as_deref() == Some("prod-eu-1")
                    && e.envelope == Envelope::CloudWatch),
            "{f}"
        );
    }
    let c = decode_file("eks/cloudwatch_truncated.json");
    let (kind, _, msg, id) = &c.problems[0];
    assert_eq!(*kind, ProblemKind::Truncated);
    assert!(msg.contains("[Truncated...]"), "{msg}");
    assert!(
        id.as_deref().is_some_and(|id| id.len() >= 8),
        "auditID read from the cut event"
    );
    assert_eq!(
        decode_file("eks/cloudwatch_control.json").skipped,
        ["cloudwatch control message"]
    );
}

#[test]
fn eks_firehose() {
    let c = decode_file("eks/firehose.json");
    assert!(
        c.events
            .iter()
            .all(|e| e.envelope == Envelope::Firehose && e.cluster.as_deref() == Some("prod-eu-1"))
    );
    assert_eq!(c.skipped, ["cloudwatch control message"]);
}

#[test]
fn gke_log_entries() {
    let c = decode_file("gke/logentry.jsonl");
    assert!(
        c.events
            .iter()
            .all(|e| e.cluster.as_deref() == Some("gke-prod") && e.envelope == Envelope::Gke)
    );
    let exec = c.events.iter().find(|e| e.subresource == "exec").unwrap();
    assert_eq!(
        (exec.verb.as_str(), exec.resource.as_str()),
        ("create", "pods")
    );
    assert_eq!(
        (exec.namespace.as_str(), exec.name.as_str()),
        ("payments", "api-7d9f")
    );
    assert_eq!(exec.command, ["/bin/sh", "-c", "id"]);
    assert!(!exec.user.is_empty() && !exec.source_ips.is_empty() && exec.user_agent.is_some());
    assert_eq!(c.skipped.len(), 1);

    let p = decode_file("gke/pubsub_push.json");
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].envelope, Envelope::GkePubSub);
    assert_eq!(p.events[0].command, ["/bin/sh", "-c", "id"]);
    assert_eq!(p.events[0].cluster.as_deref(), Some("gke-prod"));
}

#[test]
fn aks_records() {
    let c = decode_file("aks/records.json");
    assert!(
        c.events
            .iter()
            .all(|e| e.cluster.as_deref() == Some("aks-prod-1") && e.envelope == Envelope::Aks)
    );
    assert_eq!(c.skipped.len(), 2);
}

#[test]
fn shipper_wrappers() {
    for f in ["shippers/vector.jsonl", "shippers/fluentbit.jsonl"] {
        let c = decode_file(f);
        assert!(
            c.events.iter().all(|e| e.envelope == Envelope::Wrapped),
            "{f}"
        );
        assert_eq!(
            c.events.iter().map(|e| e.line).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }
}

#[test]
fn malformed_lines_are_each_reported_and_good_ones_read() {
    let c = decode_file("malformed/mixed.jsonl");
    let lines: Vec<u64> = c.problems.iter().map(|p| p.1).collect();
    assert_eq!(lines, [2, 3, 5, 6, 7, 9]);
    let msgs: Vec<&str> = c.problems.iter().map(|p| p.2.as_str()).collect();
    assert!(msgs[0].starts_with("not JSON"), "{msgs:?}");
    assert!(
        msgs[1].starts_with("not an audit event") && msgs[1].contains("expected a string"),
        "{msgs:?}"
    );
    assert!(msgs[2].starts_with("invalid UTF-8"), "{msgs:?}");
    // 10,000 levels of nesting under an unknown key: skipped without
    // recursion, and the object is still no audit event.
    assert_eq!(msgs[3], "not an audit event: no auditID");
    assert_eq!(msgs[4], "not an audit event: no auditID");
    assert!(msgs[5].starts_with("not JSON: EOF"), "{msgs:?}");
    assert_eq!(
        c.events.iter().map(|e| e.line).collect::<Vec<_>>(),
        [1, 4, 8, 10]
    );
}

#[test]
fn deep_nesting_never_overflows_the_stack() {
    let deep = |key: &str, n: usize| {
        format!(
            r#"{{"auditID":"d","verb":"get","{key}":{}1{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    // A body kept raw is skipped without recursion, however deep: nesting
    // cannot be used to make an event disappear.
    for depth in [100, 50_000] {
        let c = decode_bytes(deep("requestObject", depth).as_bytes(), Limits::default());
        assert_eq!(c.events.len(), 1, "{depth}: {:?}", c.problems);
    }
    // Where a field must be a string, nesting is a clear type error.
    let c = decode_bytes(deep("userAgent", 50_000).as_bytes(), Limits::default());
    assert_eq!(c.events.len(), 0);
    assert!(
        c.problems[0]
            .2
            .starts_with("not an audit event: invalid type"),
        "{:?}",
        c.problems
    );
    assert_eq!(c.problems[0].3.as_deref(), Some("d"));
}

#[test]
fn oversized_event_is_reported_and_next_one_read() {
    let good = r#"{"auditID":"ok-1","verb":"get","requestURI":"/api"}"#;
    let pad = "A".repeat(5000);
    let big = format!(r#"{{"auditID":"big-1","verb":"get","requestObject":{{"pad":"{pad}"}}}}"#);
    let input = format!("{good}\n{big}\n{good}\n");
    let limits = Limits {
        max_event_bytes: 1000,
        max_document_bytes: 1_000_000,
    };
    let c = decode_bytes(input.as_bytes(), limits);
    assert_eq!(c.events.len(), 2);
    assert_eq!(c.problems.len(), 1);
    let (kind, line, msg, id) = &c.problems[0];
    assert_eq!(
        (*kind, *line, id.as_deref()),
        (ProblemKind::Oversized, 2, Some("big-1"))
    );
    assert!(msg.contains("1000-byte cap"), "{msg}");

    // The same in a pretty-printed array: the element is skipped while
    // streaming, never buffered whole.
    let input = format!("[\n{good},\n{big},\n{good}\n]");
    let c = decode_bytes(input.as_bytes(), limits);
    assert_eq!((c.events.len(), c.problems.len()), (2, 1));
    assert_eq!(c.problems[0].3.as_deref(), Some("big-1"));
}

#[test]
fn truncated_gzip_keeps_what_was_read_and_reports() {
    let gz = std::fs::read(fixtures().join("k8s/audit.log.gz")).unwrap();
    let cut = &gz[..gz.len() * 2 / 3];
    let mut c = Collect::default();
    let err = decode(cut, &Context::new(Limits::default()), &mut c).unwrap_err();
    assert!(matches!(err, Error::Read { line, .. } if line > 1), "{err}");
    assert!(!c.events.is_empty() && c.events.len() < 20);
}

#[test]
fn falco_peer_events_decode() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/falco/events");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let c = decode_bytes(&std::fs::read(&path).unwrap(), Limits::default());
        let name = path.file_name().unwrap().to_str().unwrap();
        if name == "fal_01_003.json" {
            assert_eq!(c.events.len(), 0);
            assert_eq!(c.problems.len(), 1);
            assert!(
                c.problems[0].2.starts_with("not an audit event"),
                "{:?}",
                c.problems
            );
        } else {
            assert!(c.problems.is_empty(), "{name}: {:?}", c.problems);
            assert!(!c.events.is_empty(), "{name}");
        }
        files += 1;
    }
    assert!(files >= 40);
}

#[test]
fn cluster_precedence_and_lowercasing() {
    let cw = std::fs::read(fixtures().join("eks/cloudwatch.json")).unwrap();
    let mut c = Collect::default();
    let ctx = Context {
        cluster: Some("Forced"),
        default_cluster: Some("fallback"),
        ..Context::new(Limits::default())
    };
    decode(&cw[..], &ctx, &mut c).unwrap();
    assert!(
        c.events
            .iter()
            .all(|e| e.cluster.as_deref() == Some("forced"))
    );

    let mut c = Collect::default();
    let ctx = Context {
        default_cluster: Some("Dev-1"),
        ..Context::new(Limits::default())
    };
    decode(&br#"{"auditID":"x","verb":"get"}"#[..], &ctx, &mut c).unwrap();
    assert_eq!(c.events[0].cluster.as_deref(), Some("dev-1"));
}

#[test]
fn json_line_holding_an_eventlist_or_array() {
    let input = concat!(
        r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a","verb":"get"},{"auditID":"b","verb":"get"}]}"#,
        "\n",
        r#"[{"auditID":"c","verb":"get"},{"kind":0}]"#,
        "\n"
    );
    let c = decode_bytes(input.as_bytes(), Limits::default());
    let ids: Vec<_> = c
        .events
        .iter()
        .map(|e| (e.audit_id.as_str(), e.envelope, e.line))
        .collect();
    assert_eq!(
        ids,
        [
            ("a", Envelope::EventList, 1),
            ("b", Envelope::EventList, 1),
            ("c", Envelope::Array, 2)
        ]
    );
    assert_eq!(c.problems.len(), 1);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn sample_inputs() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for f in [
            "k8s/eventlist.json",
            "k8s/audit.log",
            "eks/cloudwatch.json",
            "aks/records.json",
            "gke/pubsub_push.json",
            "eks/firehose.json",
            "k8s/array.json",
        ] {
            v.push(std::fs::read(fixtures().join(f)).unwrap());
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut c = Collect::default();
            let _ = decode(&bytes[..], &Context::new(Limits { max_event_bytes: 512, max_document_bytes: 2048 }), &mut c);
        }

        /// Real inputs cut, spliced and corrupted at random never panic,
        /// and every event the decoder yields passed validation.
        #[test]
        fn mutated_fixtures(which in 0usize..7, cut in any::<prop::sample::Index>(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8)) {
            let inputs = sample_inputs();
            let mut bytes = inputs[which].clone();
            let end = cut.index(bytes.len() + 1);
            bytes.truncate(end);
            for (at, b) in flips {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
            }
            let mut c = Collect::default();
            let _ = decode(&bytes[..], &Context::new(Limits { max_event_bytes: 4096, max_document_bytes: 1 << 20 }), &mut c);
            prop_assert!(c.events.iter().all(|e| !e.audit_id.is_empty()));
        }

        /// JSON-ish text built from structural pieces never panics the framer.
        #[test]
        fn structural_soup(pieces in proptest::collection::vec(prop::sample::select(vec!["{", "}", "[", "]", ",", ":", "\"", "\\", "\n", " ", "\"auditID\"", "\"items\"", "\"records\"", "\"logEvents\"", "\"verb\"", "1", "\"x\"", "null", "\u{1f}"]), 0..200)) {
            let text: String = pieces.concat();
            let mut c = Collect::default();
            let _ = decode(text.as_bytes(), &Context::new(Limits { max_event_bytes: 64, max_document_bytes: 256 }), &mut c);
        }
    }
}

/// Regression (review): an envelope message over the event cap but under
/// the sample size once panicked while taking its sample.
#[test]
fn small_event_cap_inside_an_envelope_does_not_panic() {
    let bytes = std::fs::read(fixtures().join("eks/cloudwatch.json")).unwrap();
    let limits = Limits {
        max_event_bytes: 1000,
        max_document_bytes: 1 << 20,
    };
    let c = decode_bytes(&bytes, limits);
    assert!(c.problems.iter().all(|p| p.0 == ProblemKind::Oversized));
    assert_eq!(c.problems.len() + c.events.len(), 4);
}

/// Regression (review): Vector's `parse_json(.message)` leaves the event as
/// an object under `message`; that is not a Pub/Sub push.
#[test]
fn shipper_message_object_is_an_event_not_pubsub() {
    let line = r#"{"host":"cp-1","message":{"auditID":"v1","verb":"get","requestURI":"/api"},"source_type":"file"}"#;
    let c = decode_bytes(line.as_bytes(), Limits::default());
    assert_eq!(c.events.len(), 1, "{:?}", c.problems);
    assert_eq!(c.events[0].envelope, Envelope::Wrapped);
}

/// Regression (review): gzip on a pipe that delivers one byte at a time.
#[test]
fn gzip_is_recognised_one_byte_at_a_time() {
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }
    let gz = std::fs::read(fixtures().join("k8s/audit.log.gz")).unwrap();
    let mut c = Collect::default();
    decode(Trickle(&gz), &Context::new(Limits::default()), &mut c).unwrap();
    assert_eq!(c.events.len(), 20);
}

/// Regression (review): a CloudWatch payload saved with sorted keys
/// (`jq -S`) and pretty-printed keeps its cluster.
#[test]
fn cloudwatch_with_sorted_keys_keeps_its_cluster() {
    let bytes = std::fs::read(fixtures().join("eks/cloudwatch.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    // serde_json's map is sorted: logEvents comes before logGroup.
    let sorted = serde_json::to_string_pretty(&v).unwrap();
    assert!(sorted.find("logEvents") < sorted.find("logGroup"));
    let c = decode_bytes(sorted.as_bytes(), Limits::default());
    assert_eq!(c.events.len(), 4);
    assert!(
        c.events
            .iter()
            .all(|e| e.cluster.as_deref() == Some("prod-eu-1")),
        "{:?}",
        c.events.iter().map(|e| &e.cluster).collect::<Vec<_>>()
    );
}

/// A gzip bomb inside a Firehose record inflates only up to the document
/// cap, and what is cut off is reported, not silently dropped.
#[test]
fn gzip_bomb_in_an_envelope_is_bounded() {
    use base64::Engine;
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(b"{\"messageType\":\"DATA_MESSAGE\",\"logGroup\":\"/aws/eks/x/cluster\",\"logEvents\":[{\"message\":\"").unwrap();
    let zeros = vec![b'a'; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap(); // 64 MiB of one letter: a few KB compressed
    }
    gz.write_all(b"\"}]}").unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let body = format!(r#"{{"requestId":"r","records":[{{"data":"{data}"}}]}}"#);
    let limits = Limits {
        max_event_bytes: 1 << 20,
        max_document_bytes: 4 << 20,
    };
    let c = decode_bytes(body.as_bytes(), limits);
    assert!(c.events.is_empty());
    assert!(!c.problems.is_empty(), "the cut-off payload is reported");
}

#[test]
fn a_source_bound_to_one_envelope_refuses_the_others() {
    let run = |rel: &str, expect: &str| {
        let bytes = std::fs::read(fixtures().join(rel)).unwrap();
        let mut c = Collect::default();
        let mut ctx = Context::new(Limits::default());
        ctx.expect = expected_envelopes(expect).unwrap();
        decode(&bytes[..], &ctx, &mut c).unwrap();
        c
    };
    let cw = run("eks/cloudwatch.json", "cloudwatch");
    assert!(!cw.events.is_empty() && cw.problems.is_empty());
    let refused = run("eks/cloudwatch.json", "raw");
    assert!(refused.events.is_empty());
    assert_eq!(refused.problems.len(), cw.events.len());
    assert!(
        refused.problems[0].2.contains("came as cloudwatch"),
        "{:?}",
        refused.problems
    );
    assert!(refused.problems[0].3.is_some(), "the auditID is kept");
    let list = run("k8s/eventlist.json", "raw");
    assert!(!list.events.is_empty() && list.problems.is_empty());
    assert!(run("gke/pubsub_push.json", "gke").problems.is_empty());
    assert!(run("aks/records.json", "gke").events.is_empty());
    assert_eq!(expected_envelopes("auto"), Some(None));
    assert_eq!(expected_envelopes("field:message"), Some(None));
    assert_eq!(expected_envelopes("soap"), None);
}
