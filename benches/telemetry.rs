//! What telemetry costs per change with tracing off (no OTLP endpoint), and
//! what one scrape costs (pure CPU).
//!
//! In: the call sites' work per event (three pipeline spans, the event trace
//! of a work item, the received and routed counters); a registry with 100
//! branch workers. Out: criterion timings.

use criterion::{Criterion, criterion_group, criterion_main};
use gitops_reverser::route::TargetKey;
use gitops_reverser::telemetry::trace::{EventTrace, TARGET};
use gitops_reverser::telemetry::{EventMetrics, Metrics, TargetLabels, to_text};
use std::hint::black_box;
use std::time::Duration;

fn bench_telemetry(c: &mut Criterion) {
    let metrics = Metrics::new();
    let target = TargetKey::new("team-a", "audit");
    let mut group = c.benchmark_group("telemetry per change, tracing off");
    group.bench_function("spans and event trace", |b| {
        b.iter(|| {
            let event = tracing::info_span!(target: TARGET, parent: None, "watch.event", name = "cm");
            event.in_scope(|| {
                let sanitize = tracing::info_span!(target: TARGET, "sanitize");
                let route = tracing::info_span!(target: TARGET, "route");
                black_box((sanitize, route, EventTrace::current(black_box(&target), true)))
            })
        })
    });
    group.bench_function("received and routed counters", |b| {
        b.iter(|| {
            let resource = EventMetrics::resource(black_box(""), black_box("configmaps"));
            metrics.events.received.get_or_create(&resource).inc();
            let labels = TargetLabels { namespace: target.namespace.clone(), name: target.name.clone() };
            metrics.events.routed.get_or_create(&labels).inc();
        })
    });
    group.finish();

    let branches: Vec<_> =
        (0..100).map(|i| metrics.branch(&format!("ssh://git.example.com/team-{i}.git"), "main")).collect();
    for branch in &branches {
        branch.commit(Duration::from_millis(3), true, Some("0af7651916cd43dd8448eb211c80319c".into()));
        branch.push(Duration::from_millis(300), "pushed", "", None);
        branch.pushed_change(Duration::from_secs(2), Some("0af7651916cd43dd8448eb211c80319c".into()));
    }
    let mut group = c.benchmark_group("one scrape, 100 branch workers");
    group.bench_function("OpenMetrics", |b| b.iter(|| black_box(metrics.encode())));
    group.bench_function("text format", |b| b.iter(|| black_box(to_text(&metrics.encode()))));
    group.finish();
}

criterion_group!(benches, bench_telemetry);
criterion_main!(benches);
