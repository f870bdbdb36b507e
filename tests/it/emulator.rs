//! The link emulator on plain UDP sockets (no QUIC): it relays both ways and follows the
//! edge, and its rate, delay, jitter, loss, queue and outages do what they say, with
//! counts that add up.
//!
//! Timing tolerances are for a loaded 2-core CI machine: the emulator's schedule is
//! exact, but the three threads a datagram passes (the relay's receive and release
//! threads, the test's receiver) each add wake-up latency. Each check still fails when
//! the setting is missed by a few milliseconds or a few percent.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tests::emulator::{Counters, Direction, Link, LinkConfig, OneWay, Profile};

/// How long to wait for something that should happen at once; only reached on failure.
const PATIENCE: Duration = Duration::from_secs(10);

/// Allowed lateness of the median one-way time over the setting: the 1 ms of the target
/// plus 1.5 ms of scheduling noise on a loaded 2-core machine. Early is never allowed.
const DELAY_TOLERANCE: Duration = Duration::from_micros(2_500);

/// Time since the first call, as carried in test datagrams.
fn clock() -> Duration {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed()
}

/// A test datagram: sequence number, send time, padding up to `len` (at least 16).
fn datagram(seq: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0; len.max(16)];
    data[..8].copy_from_slice(&seq.to_le_bytes());
    let sent = clock().as_nanos() as u64;
    data[8..16].copy_from_slice(&sent.to_le_bytes());
    data
}

/// A test datagram as received: its sequence number, length and one-way time.
#[derive(Debug, Clone, Copy)]
struct Got {
    seq: u64,
    len: usize,
    /// Receive time, on `clock()`.
    at: Duration,
    one_way: Duration,
}

fn parse(data: &[u8]) -> Got {
    let at = clock();
    let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
    let sent = Duration::from_nanos(u64::from_le_bytes(data[8..16].try_into().unwrap()));
    Got {
        seq,
        len: data.len(),
        at,
        one_way: at - sent,
    }
}

/// An edge socket, a core socket, and the link between them.
struct Ends {
    edge: UdpSocket,
    core: UdpSocket,
    link: Link,
}

impl Ends {
    fn new(profile: Profile) -> Ends {
        Ends::with_seed(profile, tests::emulator::DEFAULT_SEED)
    }

    fn with_seed(profile: Profile, seed: u64) -> Ends {
        let core = socket();
        let link = Link::open(LinkConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            core: core.local_addr().unwrap(),
            profile,
            seed,
        })
        .unwrap();
        let edge = socket();
        edge.connect(link.addr()).unwrap();
        Ends { edge, core, link }
    }

    /// Sends one datagram from the edge and returns the relay's core-side address, so
    /// that the core can answer.
    fn hello(&self) -> SocketAddr {
        self.edge.send(&datagram(u64::MAX, 16)).unwrap();
        let mut buf = [0; 64];
        let (_, relay) = self.core.recv_from(&mut buf).unwrap();
        relay
    }
}

fn socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    socket
}

/// Receives one test datagram, failing after `PATIENCE`.
fn recv(socket: &UdpSocket) -> Got {
    let mut buf = vec![0; 65_536];
    let len = socket.recv(&mut buf).expect("a datagram in time");
    parse(&buf[..len])
}

/// Waits until `done` holds, failing after `PATIENCE`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the link holds nothing, then checks that each direction's counts add up.
fn settled(link: &Link) -> Counters {
    wait_until("the link holds nothing", || {
        let c = link.counters();
        c.e2c.held.packets == 0 && c.c2e.held.packets == 0
    });
    let c = link.counters();
    for (name, d) in [("e2c", c.e2c), ("c2e", c.c2e)] {
        assert_eq!(d.offered, d.delivered + d.dropped(), "{name}: {d:?}");
    }
    c
}

/// Sends `count` datagrams of `len` bytes at `pps` datagrams per second (sleeping to pace,
/// in small bursts), numbered from 0.
fn send_paced(socket: &UdpSocket, count: u64, len: usize, pps: f64) {
    let start = Instant::now();
    let mut seq = 0;
    while seq < count {
        let due = ((start.elapsed().as_secs_f64() * pps) as u64 + 1).min(count);
        while seq < due {
            socket.send(&datagram(seq, len)).unwrap();
            seq += 1;
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

/// Receives on `socket` while `sending` runs, until the sender is done and the link has
/// delivered everything (`delivered` counts it, this call's share of it arrived), then
/// returns what arrived.
fn receive_all(
    socket: &UdpSocket,
    link: &Link,
    delivered: fn(&Counters) -> u64,
    sending: impl FnOnce() + Send,
) -> Vec<Got> {
    let sent = AtomicBool::new(false);
    let before = delivered(&link.counters());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            sending();
            sent.store(true, Ordering::SeqCst);
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0; 65_536];
        let deadline = Instant::now() + PATIENCE * 3;
        loop {
            match socket.recv(&mut buf) {
                Ok(len) => got.push(parse(&buf[..len])),
                Err(_) => {
                    let c = link.counters();
                    let idle = c.e2c.held.packets == 0 && c.c2e.held.packets == 0;
                    if sent.load(Ordering::SeqCst)
                        && idle
                        && got.len() as u64 == delivered(&c) - before
                    {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "timed out: got {}, {c:?}",
                        got.len()
                    );
                }
            }
        }
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        got
    })
}

fn e2c_delivered(c: &Counters) -> u64 {
    c.e2c.delivered.packets
}

fn shaped(rate_bps: u64, queue_bytes: u64, delay: Duration) -> OneWay {
    OneWay {
        rate_bps: std::num::NonZeroU64::new(rate_bps),
        queue_bytes,
        delay,
        ..OneWay::UNLIMITED
    }
}

#[test]
fn relays_both_ways_and_follows_the_edge() {
    let ends = Ends::new(Profile::lan());
    let relay = ends.hello();
    assert_ne!(
        relay,
        ends.edge.local_addr().unwrap(),
        "the core sees the relay"
    );

    ends.core.send_to(&datagram(1, 100), relay).unwrap();
    assert_eq!(recv(&ends.edge).seq, 1);

    // The edge moves (a NAT rebinding): answers follow its new address.
    let moved = socket();
    moved.connect(ends.link.addr()).unwrap();
    moved.send(&datagram(2, 100)).unwrap();
    assert_eq!(recv(&ends.core).seq, 2);
    ends.core.send_to(&datagram(3, 100), relay).unwrap();
    assert_eq!(recv(&moved).seq, 3);
    ends.edge.set_nonblocking(true).unwrap();
    assert!(
        ends.edge.recv(&mut [0; 64]).is_err(),
        "the old address gets nothing"
    );

    // A stranger on the core side is not relayed.
    let stranger = socket();
    stranger.send_to(&datagram(4, 100), relay).unwrap();
    ends.core.send_to(&datagram(5, 100), relay).unwrap();
    assert_eq!(recv(&moved).seq, 5);

    let c = settled(&ends.link);
    assert_eq!(c.e2c.delivered.packets, 2);
    assert_eq!(c.c2e.delivered.packets, 3);
    assert_eq!(
        c.c2e.offered.packets, 3,
        "the stranger's datagram is not offered"
    );
    assert_eq!(c.wire_bytes(), 16 + 100 * 4);

    // A new profile applies to what arrives next.
    let slow = OneWay {
        delay: Duration::from_millis(30),
        ..OneWay::UNLIMITED
    };
    ends.link.set_profile(Profile::symmetric("slow", slow));
    assert_eq!(ends.link.profile().name, "slow");
    moved.send(&datagram(6, 100)).unwrap();
    let got = recv(&ends.core);
    assert_eq!(got.seq, 6);
    assert!(
        got.one_way >= Duration::from_millis(30),
        "{:?}",
        got.one_way
    );
    let c = settled(&ends.link);
    assert_eq!(ends.link.stop(), c);
}

/// Sends faster than the rate into a deep enough queue and measures the delivered
/// throughput at the receiver: the slope of bytes received over time (least squares, so
/// that a late wake-up of the receiver at either end does not skew it).
#[test]
fn rate_is_within_5_percent() {
    // (rate in bits per second, datagram length), sending at 1.5 times the rate for 0.4 s.
    // At most ~1,000 datagrams/s reach the receiver, so that a descheduled test thread
    // does not overflow its socket's buffer.
    let cases = [(256_000, 200), (2_000_000, 500), (10_000_000, 1_200)];
    let mut report = Vec::new();
    for (rate, len) in cases {
        // 100 ms of data: a sender descheduled for less than that keeps the link busy.
        let queue = (rate / 80).max(4 * len as u64);
        let ends = Ends::new(Profile::symmetric(
            "rate",
            shaped(rate, queue, Duration::ZERO),
        ));
        let pps = 1.5 * rate as f64 / (8 * len) as f64;
        let count = (pps * 0.4) as u64;
        let got = receive_all(&ends.core, &ends.link, e2c_delivered, || {
            send_paced(&ends.edge, count, len, pps)
        });
        let c = settled(&ends.link);
        assert!(
            c.e2c.dropped_queue.packets > 0,
            "{rate}: the queue overflowed"
        );
        let measured = slope(&got) * 8.0;
        let error = measured / rate as f64 - 1.0;
        report.push(format!(
            "{rate} bit/s: {measured:.0} ({:+.2} %)",
            error * 100.0
        ));
        assert!(
            error.abs() < 0.05,
            "{rate} bit/s measured {measured:.0}, {:?}",
            c.e2c
        );
    }
    eprintln!("rate: {}", report.join(", "));
}

/// Bytes per second: the least-squares slope of cumulative bytes over arrival time.
fn slope(got: &[Got]) -> f64 {
    let mut total = 0.0;
    let points: Vec<(f64, f64)> = got
        .iter()
        .map(|g| {
            total += g.len as f64;
            (g.at.as_secs_f64(), total)
        })
        .collect();
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
    });
    sxy / sxx
}

/// The median one-way time is the delay plus the serialization time, late by at most
/// `DELAY_TOLERANCE`, never early; each direction has its own.
#[test]
fn delay_is_within_a_millisecond() {
    let (e2c, c2e) = (Duration::from_millis(20), Duration::from_millis(7));
    // c2e: 1,000 bytes at 8 Mbit/s take 1 ms on the link before their delay.
    let profile = Profile {
        name: "delay".into(),
        e2c: shaped(0, 1 << 20, e2c),
        c2e: shaped(8_000_000, 1 << 20, c2e),
    };
    let ends = Ends::new(profile);
    let relay = ends.hello();
    let count = 100;
    // One every 3 ms: more than the serialization time, so nothing queues.
    let pps = 1_000.0 / 3.0;
    let up = receive_all(&ends.core, &ends.link, e2c_delivered, || {
        send_paced(&ends.edge, count, 1_000, pps)
    });
    let down = receive_all(
        &ends.edge,
        &ends.link,
        |c| c.c2e.delivered.packets,
        || {
            let start = Instant::now();
            for seq in 0..count {
                ends.core.send_to(&datagram(seq, 1_000), relay).unwrap();
                let next = start + Duration::from_millis(3 * (seq + 1));
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        },
    );
    let mut report = Vec::new();
    for (name, got, expected) in [
        ("e2c", up, e2c),
        ("c2e", down, c2e + Duration::from_millis(1)),
    ] {
        assert_eq!(got.len() as u64, count, "{name}: all arrive");
        let mut times: Vec<Duration> = got.iter().map(|g| g.one_way).collect();
        times.sort();
        let (min, p50, p99) = (
            times[0],
            times[times.len() / 2],
            times[times.len() * 99 / 100],
        );
        report.push(format!(
            "{name} set {expected:?}: min {min:?} p50 {p50:?} p99 {p99:?}"
        ));
        assert!(min >= expected, "{name}: early: {min:?} < {expected:?}");
        assert!(
            p50 <= expected + DELAY_TOLERANCE,
            "{name}: median {p50:?} for {expected:?}"
        );
    }
    eprintln!("delay: {}", report.join("; "));
    settled(&ends.link);
}

#[test]
fn jitter_spreads_but_never_reorders() {
    let (delay, jitter) = (Duration::from_millis(5), Duration::from_millis(10));
    let ends = Ends::new(Profile::symmetric(
        "jitter",
        OneWay {
            delay,
            jitter,
            ..OneWay::UNLIMITED
        },
    ));
    let count = 200;
    let got = receive_all(&ends.core, &ends.link, e2c_delivered, || {
        send_paced(&ends.edge, count, 100, 2_000.0)
    });
    let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
    assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "in order, none lost");
    let min = got.iter().map(|g| g.one_way).min().unwrap();
    let max = got.iter().map(|g| g.one_way).max().unwrap();
    assert!(min >= delay, "early: {min:?}");
    assert!(max - min >= jitter / 2, "spread {:?}", max - min);
    // Not reordering can only hold a datagram until the one ahead, itself within bounds;
    // the 100 ms on top are for a descheduled thread on a loaded machine.
    assert!(
        max <= delay + jitter + Duration::from_millis(100),
        "late: {max:?} for {delay:?} + {jitter:?}"
    );
    settled(&ends.link);
}

/// 10 % loss over 1,000 datagrams: within 5 standard deviations of the binomial mean,
/// and the same seed loses the same datagrams.
#[test]
fn loss_is_seeded_and_about_right() {
    let count = 1_000;
    let run = |seed| {
        let ends = Ends::with_seed(
            Profile::symmetric(
                "loss",
                OneWay {
                    loss: 0.1,
                    ..OneWay::UNLIMITED
                },
            ),
            seed,
        );
        let got = receive_all(&ends.core, &ends.link, e2c_delivered, || {
            send_paced(&ends.edge, count, 100, 4_000.0)
        });
        let c = settled(&ends.link).e2c;
        assert_eq!(c.offered.packets, count);
        assert_eq!(c.dropped(), c.dropped_loss, "only loss: {c:?}");
        let (mean, sd) = (count as f64 * 0.1, (count as f64 * 0.1 * 0.9).sqrt());
        let lost = c.dropped_loss.packets as f64;
        assert!((lost - mean).abs() <= 5.0 * sd, "lost {lost} of {count}");
        got.iter().map(|g| g.seq).collect::<BTreeSet<u64>>()
    };
    let first = run(7);
    assert_eq!(first, run(7), "same seed, same losses");
    assert_ne!(first, run(8), "another seed, other losses");
}

/// A burst into a slow link: the queue takes what fits, the rest is dropped at the tail,
/// and once it has drained the link accepts again.
#[test]
fn full_queue_drops_at_the_tail() {
    // 100 kB/s, room for ten 1,000-byte datagrams (10 ms each on the link).
    let ends = Ends::new(Profile::symmetric(
        "queue",
        shaped(800_000, 10_000, Duration::ZERO),
    ));
    let burst = 40;
    for seq in 0..burst {
        ends.edge.send(&datagram(seq, 1_000)).unwrap();
    }
    let first: Vec<u64> = (0..10).map(|_| recv(&ends.core).seq).collect();
    assert_eq!(first, (0..10).collect::<Vec<_>>(), "the head of the burst");
    wait_until("the burst is offered", || {
        ends.link.counters().e2c.offered.packets == burst
    });
    let c = settled(&ends.link).e2c;
    // A relay thread descheduled mid-burst lets the queue drain a little: one or two more.
    assert!(
        (10..=12).contains(&c.delivered.packets),
        "delivered {}",
        c.delivered.packets
    );
    assert_eq!(c.dropped(), c.dropped_queue, "only overflow: {c:?}");
    for _ in 10..c.delivered.packets {
        recv(&ends.core);
    }
    ends.edge.send(&datagram(burst, 1_000)).unwrap();
    assert_eq!(recv(&ends.core).seq, burst, "accepted again once drained");
}

/// Down drops everything both ways, including what was in flight; up restores.
#[test]
fn outage_drops_everything_and_up_restores() {
    let ends = Ends::new(Profile::symmetric(
        "outage",
        OneWay {
            delay: Duration::from_millis(30),
            ..OneWay::UNLIMITED
        },
    ));
    let relay = ends.hello();
    // In flight when the link goes down: lost, like a radio frame in the air.
    for seq in 0..5 {
        ends.edge.send(&datagram(seq, 100)).unwrap();
    }
    ends.link.down();
    assert!(ends.link.is_down());
    for seq in 5..20 {
        ends.edge.send(&datagram(seq, 100)).unwrap();
        ends.core.send_to(&datagram(seq, 100), relay).unwrap();
    }
    wait_until("everything is offered", || {
        let c = ends.link.counters();
        c.e2c.offered.packets == 21 && c.c2e.offered.packets == 15
    });
    let c = settled(&ends.link);
    assert_eq!(c.e2c.dropped_outage.packets, 20);
    assert_eq!(c.c2e.dropped_outage.packets, 15);

    ends.link.up();
    assert!(!ends.link.is_down());
    ends.edge.send(&datagram(100, 100)).unwrap();
    ends.core.send_to(&datagram(200, 100), relay).unwrap();
    assert_eq!(recv(&ends.core).seq, 100, "nothing from the outage");
    assert_eq!(recv(&ends.edge).seq, 200, "nothing from the outage");
    let c = settled(&ends.link);
    assert_eq!(c.e2c.delivered.packets, 2);
    assert_eq!(c.c2e.delivered.packets, 1);
}

/// A schedule of 60 ms up, 60 ms down: what arrives was sent while the link was up.
#[test]
fn scheduled_outages_flap() {
    let ends = Ends::new(Profile::lan());
    let (up, down) = (Duration::from_millis(60), Duration::from_millis(60));
    let start = clock();
    ends.link.schedule(&[(up, down)]);
    let count = 240;
    let got = receive_all(&ends.core, &ends.link, e2c_delivered, || {
        send_paced(&ends.edge, count, 100, 500.0)
    });
    let c = settled(&ends.link).e2c;
    assert_eq!(c.offered.packets, count);
    assert_eq!(c.dropped(), c.dropped_outage);
    let share = c.delivered.packets as f64 / count as f64;
    assert!((0.35..=0.65).contains(&share), "delivered {share:.2}");
    // Sent times are within a few ms of the relay's view (which starts slightly later).
    let slack = Duration::from_millis(4);
    for g in &got {
        let sent = g.at - g.one_way - start;
        let phase = Duration::from_nanos((sent.as_nanos() % (up + down).as_nanos()) as u64);
        assert!(
            phase < up + slack || phase + slack > up + down,
            "datagram {} sent {sent:?} into the outage",
            g.seq
        );
    }
    ends.link.up();
    assert!(!ends.link.is_down());
}

#[test]
fn named_profiles() {
    for name in Profile::NAMES {
        assert_eq!(Profile::named(name).unwrap().name, name);
    }
    let satcom: Profile = "satcom".parse().unwrap();
    assert_eq!(satcom.c2e.rate_bps.unwrap().get(), 2_000_000);
    assert_eq!(satcom.e2c.rate_bps.unwrap().get(), 256_000);
    assert_eq!(satcom.round_trip(), Duration::from_millis(600));
    assert_eq!(satcom.e2c.loss, 0.01);
    assert_eq!(satcom.c2e.queue_bytes, 250_000, "one second at the rate");
    let hf = Profile::named("hf").unwrap();
    assert_eq!(hf.e2c.queue_bytes, 6_000, "at least four full datagrams");
    assert_eq!(Profile::lan().e2c.rate_bps, None);
    let err = Profile::named("dialup").unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown link profile \"dialup\" (known: lan, lte, satcom, tactical, hf)"
    );
    // Counters render as the bench's JSON: per direction, per count.
    let c = Counters {
        e2c: Direction::default(),
        c2e: Direction::default(),
    };
    assert_eq!(c.to_json()["e2c"]["delivered"]["bytes"], 0);
}
