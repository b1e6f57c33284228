//! The audit buffer under concurrency: every decision recorded exactly
//! once, sequence numbers dense and in buffer order, batches chained.

#![allow(clippy::unwrap_used)]

use charter_core::audit::{AuditConfig, AuditSink, Mode};
use charter_core::{Action, Engine, PolicySpec, Subject};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const POLICY: &str = r#"{
  "actions": ["doc:read", "doc:write"],
  "roles": { "reader": { "allow": ["doc:read"] } },
  "principals": { "user:r": { "roles": ["reader"] } },
  "templates": { "bot": { "roles": ["reader"] } }
}"#;

fn sink(capacity: usize, mode: Mode) -> Arc<AuditSink> {
    Arc::new(AuditSink::new(AuditConfig {
        capacity,
        mode,
        block_timeout: Duration::from_secs(5),
        stream: 7,
        first_seq: 1,
        hash_key: vec![1; 32],
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn concurrent_decisions_are_each_recorded_once_and_chained() {
    let spec: PolicySpec = serde_json::from_str(POLICY).unwrap();
    let engine = Arc::new(Engine::new(spec).unwrap());
    let audit = sink(1 << 10, Mode::Strict);
    engine.attach_audit(audit.clone());
    let bot = engine
        .provision("bot", Some(Subject::Id("user:r")), None, None)
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (audit, done) = (audit.clone(), done.clone());
        thread::spawn(move || {
            let mut prev = [0u8; 32];
            let mut out = Vec::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                match audit.take_encoded(&prev, b"", Duration::from_millis(1)) {
                    Some(b) => {
                        let body = &b.data[..b.data.len()
                            - (b.data.len()
                                - b.data[..b.data.len() - 1]
                                    .iter()
                                    .rposition(|&c| c == b'\n')
                                    .map_or(0, |i| i + 1))];
                        let mut h = Sha256::new();
                        h.update(prev);
                        h.update(body);
                        assert_eq!(<[u8; 32]>::from(h.finalize()), b.hash);
                        assert!(String::from_utf8_lossy(&b.data)
                            .ends_with(&format!("\"hash\":\"{}\"}}\n", hex(&b.hash))));
                        prev = b.hash;
                        out.extend_from_slice(body);
                    }
                    None if finished => return out,
                    None => {}
                }
            }
        })
    };
    let per_thread = 20_000u64;
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let engine = engine.clone();
            thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..per_thread {
                    let d = if t == 2 {
                        let mut allowed = [false; 8];
                        engine
                            .check_batch(
                                &[bot.handle; 8],
                                &[0, 1, 0, 1, 0, 1, 0, 1],
                                None,
                                &mut allowed,
                                None,
                            )
                            .unwrap();
                        assert_eq!(
                            allowed,
                            [true, false, true, false, true, false, true, false]
                        );
                        continue;
                    } else {
                        engine.check(
                            Subject::Handle(bot.handle),
                            Action::Id((i % 2) as u32),
                            None,
                        )
                    };
                    assert_eq!(d.allowed, i % 2 == 0);
                    seqs.push(d.audit_seq.unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut acknowledged: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    done.store(true, Ordering::Release);
    audit.request_flush();
    let log = String::from_utf8(writer.join().unwrap()).unwrap();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    // Dense and ordered: 1, 2, 3, ...
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let decisions: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["kind"] == "decision").collect();
    assert_eq!(decisions.len() as u64, per_thread * 2 + per_thread * 8);
    for r in &decisions {
        let allowed = r["action"] == "doc:read";
        assert_eq!(r["effect"], if allowed { "allow" } else { "deny" });
        assert_eq!(r["agent"], bot.id.as_str());
        assert_eq!(r["chain"], serde_json::json!(["user:r"]));
    }
    acknowledged.sort_unstable();
    let logged: std::collections::BTreeSet<u64> = decisions
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(acknowledged.iter().all(|s| logged.contains(s)));
}

#[test]
fn best_effort_drops_are_counted_and_strict_refuses_when_closed() {
    let spec: PolicySpec = serde_json::from_str(POLICY).unwrap();
    let engine = Engine::new(spec).unwrap();
    let audit = sink(4, Mode::BestEffort);
    engine.attach_audit(audit.clone());
    let before = audit.pending();
    for _ in 0..10 {
        assert!(
            engine
                .check(Subject::Id("user:r"), Action::Name("doc:read"), None)
                .allowed
        );
    }
    assert_eq!(audit.pending(), 4);
    assert_eq!(audit.dropped(), 10 - (4 - before) as u64);

    let strict = sink(16, Mode::Strict);
    let engine = Engine::new(serde_json::from_str(POLICY).unwrap()).unwrap();
    engine.attach_audit(strict.clone());
    strict.close();
    let d = engine.check(Subject::Id("user:r"), Action::Name("doc:read"), None);
    assert!(!d.allowed);
    assert_eq!(d.reason.as_str(), "audit_unavailable");
}
