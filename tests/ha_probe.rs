mod support;
use std::time::{Duration, Instant};
use support::replicas::fleet::{Fleet, FleetSpec};
use support::replicas::load::{Load, check_record};
use support::replicas::now_ns;
use support::wait_for;
const SPEC: FleetSpec = FleetSpec { repos: 3, branches: 30, targets: 40, objects: 2 };
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probe() {
    let t = Instant::now();
    let fleet = Fleet::create("ha-probe", SPEC).await;
    eprintln!("created {:?}", t.elapsed());
    let op = support::operator::Operator::start_with(fleet.env, fleet.namespace(), &[]);
    let n = fleet.wait_converged(Duration::from_secs(120)).await;
    eprintln!("converged {n} files {:?}", t.elapsed());
    let mark = now_ns();
    let load = Load::start(fleet.client.clone(), fleet.namespace(), fleet.target_names(), fleet.initial_objects(SPEC.objects), 8.0);
    wait_for("160", Duration::from_secs(60), || async { (load.changes() >= 160).then_some(()) }).await;
    let record = load.stop().await;
    eprintln!("load done {:?} {} changes {} retries", t.elapsed(), record.changes, record.retries);
    let n = fleet.wait_converged(Duration::from_secs(120)).await;
    eprintln!("converged {n} files {:?}", t.elapsed());
    check_record(&fleet.client, fleet.namespace(), &record).await;
    let t2 = Instant::now(); let _ = fleet.actual(); eprintln!("actual() {:?}", t2.elapsed());
    let t2 = Instant::now(); let _ = fleet.expected().await; eprintln!("expected() {:?}", t2.elapsed());
    let p = fleet.pushes(mark);
    eprintln!("{} pushes {:?}; {}", p.len(), t.elapsed(), support::replicas::pushes::summary(&p).lines().take(5).collect::<Vec<_>>().join("; "));
    drop(op);
}
