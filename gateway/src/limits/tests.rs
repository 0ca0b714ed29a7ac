//! The limiters' arithmetic on tokio's paused clock: no sleeping, no timing assertions.

use super::*;

fn rate(per_second: u32, burst: u32) -> Rate {
    Rate { per_second, burst }
}

fn inbound(per_second: u32, burst: u32, per_client: bool) -> InboundSettings {
    InboundSettings { rate: rate(per_second, burst), per_client, clients: IndexMap::new(), cluster: None }
}

#[test]
fn a_concurrency_limit_frees_a_place_when_a_request_ends() {
    let l = ConcurrencyLimit::new(2).unwrap();
    let a = l.try_acquire().unwrap();
    let _b = l.try_acquire().unwrap();
    assert!(l.try_acquire().is_none());
    drop(a);
    assert!(l.try_acquire().is_some());
    assert!(ConcurrencyLimit::new(0).is_none());
}

#[tokio::test(start_paused = true)]
async fn the_burst_passes_then_one_unit_per_interval() {
    let l = Limiter::new("t".into(), rate(2, 3), None);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        match l.check().await {
            Verdict::Allowed { remaining: r, .. } => remaining.push(r),
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(remaining, [2, 1, 0]);
    assert_eq!(l.check().await, Verdict::Limited { wait: Duration::from_millis(500) });
    tokio::time::advance(Duration::from_millis(499)).await;
    assert_eq!(l.check().await, Verdict::Limited { wait: Duration::from_millis(1) });
    tokio::time::advance(Duration::from_millis(1)).await;
    // The budget is whole again 1.5 s (three intervals) after it was emptied.
    assert_eq!(l.check().await, Verdict::Allowed { remaining: 0, reset: Duration::from_millis(1500) });
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(l.check().await, Verdict::Allowed { remaining: 2, reset: Duration::from_millis(500) });
}

#[tokio::test(start_paused = true)]
async fn per_client_budgets_do_not_share_and_named_clients_have_their_own() {
    let mut s = inbound(1, 1, true);
    s.clients.insert("partner-a".into(), rate(5, 5));
    s.clients.insert("127.0.0.2".into(), rate(3, 3));
    let l = RouteLimiter::new("r", &s);
    let (a, b) = (Some(IpAddr::from([10, 0, 0, 1])), Some(IpAddr::from([10, 0, 0, 2])));
    assert!(matches!(l.check(None, a).await.0, Verdict::Allowed { .. }));
    assert!(matches!(l.check(None, a).await.0, Verdict::Limited { .. }));
    let (v, policy) = l.check(None, b).await;
    assert!(matches!(v, Verdict::Allowed { .. }));
    assert_eq!(&*policy.name, "client");
    // The partner, from any address, has five; an authenticated client is keyed by name.
    for _ in 0..5 {
        let (v, policy) = l.check(Some("partner-a"), a).await;
        assert!(matches!(v, Verdict::Allowed { .. }), "{v:?}");
        assert_eq!((&*policy.name, policy.per_second), ("partner-a", 5));
    }
    assert!(matches!(l.check(Some("partner-a"), b).await.0, Verdict::Limited { .. }));
    assert!(matches!(l.check(Some("partner-b"), a).await.0, Verdict::Allowed { .. }), "not the IP's budget");
    // An override by address.
    for _ in 0..3 {
        assert!(matches!(l.check(None, Some(IpAddr::from([127, 0, 0, 2]))).await.0, Verdict::Allowed { .. }));
    }
    assert!(matches!(l.check(None, Some(IpAddr::from([127, 0, 0, 2]))).await.0, Verdict::Limited { .. }));
}

#[test]
fn a_shared_rate_falls_back_to_its_share() {
    let q = rate(100, 50).quota(2);
    assert_eq!(q.replenish_interval(), Duration::from_millis(20));
    assert_eq!(q.burst_size().get(), 25);
    let q = rate(1, 1).quota(3);
    assert_eq!((q.replenish_interval(), q.burst_size().get()), (Duration::from_secs(3), 1));
}

#[tokio::test(start_paused = true)]
async fn an_outbound_request_waits_its_turn_then_is_busy() {
    let s = OutboundSettings { rate: rate(10, 1), max_wait: Duration::from_millis(250), queue: 2, cluster: None };
    let l = Arc::new(OutboundLimiter::new("erp", &s));
    let start = tokio::time::Instant::now();
    assert_eq!(l.admit().await, Ok(()));
    // Two wait (100 ms and 200 ms); the third finds the queue full.
    let (x, y) = (l.clone(), l.clone());
    let first = tokio::spawn(async move { (x.admit().await, tokio::time::Instant::now()) });
    tokio::task::yield_now().await;
    let second = tokio::spawn(async move { (y.admit().await, tokio::time::Instant::now()) });
    tokio::task::yield_now().await;
    assert!(matches!(l.admit().await, Err(Busy::QueueFull { .. })));
    let (a, at) = first.await.unwrap();
    let (b, bt) = second.await.unwrap();
    assert_eq!((a, b), (Ok(()), Ok(())));
    assert_eq!(at - start, Duration::from_millis(100));
    assert_eq!(bt - start, Duration::from_millis(200));
    // A turn 1 s away is further than 250 ms: busy at once, with the wait as Retry-After.
    let s = OutboundSettings { rate: rate(1, 1), max_wait: Duration::from_millis(250), queue: 100, cluster: None };
    let l = OutboundLimiter::new("erp", &s);
    assert_eq!(l.admit().await, Ok(()));
    let before = tokio::time::Instant::now();
    assert_eq!(l.admit().await, Err(Busy::TooLong { retry_after: Duration::from_secs(1) }));
    assert_eq!(tokio::time::Instant::now(), before, "refused without waiting");
}

#[tokio::test(start_paused = true)]
async fn a_patient_delivery_waits_as_long_as_it_takes() {
    let s = OutboundSettings { rate: rate(2, 1), max_wait: Duration::ZERO, queue: 0, cluster: None };
    let l = OutboundLimiter::new("wms", &s);
    let start = tokio::time::Instant::now();
    for _ in 0..5 {
        l.wait().await;
    }
    assert_eq!(tokio::time::Instant::now() - start, Duration::from_secs(2), "four intervals of 500 ms");
}

#[test]
fn the_fields_are_structured_field_lists() {
    let p = Policy { name: Arc::from("partner \"a\""), per_second: 50 };
    assert_eq!(policy_field(&p), r#""partner \"a\"";q=50;w=1"#);
    assert_eq!(limit_field(&p, 0, Duration::from_millis(1001)), r#""partner \"a\"";r=0;t=2"#);
    assert_eq!(limit_field(&p, 7, Duration::ZERO), r#""partner \"a\"";r=7;t=0"#);
}
