//! The broker's own request-reply ceiling, with `lapin` alone (no weir): what RabbitMQ on
//! this machine can carry when one side publishes a request and the other publishes the
//! reply, at the same concurrency as the HTTP load generator of `bench/run`.
//!
//! Two AMQP connections, as weir has (the gateway's and the service's):
//!
//! - the *responder* consumes a request queue (manual acks, `basic.qos` prefetch like
//!   weir's, acknowledged in batches the way weir's session pump does it: half the
//!   prefetch, sooner when no further delivery is waiting) and publishes each reply, the
//!   request's body echoed, to the request's `reply_to` with the same `correlation_id`;
//! - C *requesters* share the other connection, each with its own channel and exclusive
//!   reply queue (same prefetch, manual acks): publish a request, wait for the reply with
//!   its `correlation_id`, acknowledge it, repeat.
//!
//! Every publish goes through the default exchange without publisher confirms, like
//! weir's data path. A request not answered within `--timeout` counts as a timeout (its
//! late reply is dropped when it comes); an error of the client or the broker counts as
//! an error and ends that requester. Runs `--warmup` seconds unmeasured, then `--duration`
//! seconds, and prints one JSON line:
//!
//! `{"rps":..,"p50_ms":..,"p99_ms":..,"p999_ms":..,"requests":N,"errors":N,"timeouts":N,
//!   "late_replies":N,"concurrency":C,"payload":BYTES,"prefetch":P,"seconds":D}`
//!
//! With `--broker-pid PID` it also reads the CPU time of that process (the broker's
//! `beam.smp`) at the window's start and end, and adds `broker_cpu_us_per_req`; its own
//! CPU time over the window is `cpu_us_per_req` (both from `/proc/PID/stat`, 10 ms ticks).
//!
//! `requests` counts the requests sent within the measured window and answered (those
//! still running when it closes are waited for, as `oha -w` does); latency is from just
//! before the publish to the reply's arrival.
//!
//! Usage: `amqp_ceiling [--url URL] [--concurrency C] [--duration S] [--warmup S]
//! [--payload BYTES] [--prefetch P] [--timeout S] [--workers N] [--broker-pid PID]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

struct Options {
    url: String,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    payload: usize,
    prefetch: u16,
    timeout: Duration,
    workers: Option<usize>,
    broker_pid: Option<u32>,
}

fn usage() -> ! {
    eprintln!(
        "usage: amqp_ceiling [--url URL] [--concurrency C] [--duration SECONDS] [--warmup SECONDS] \
         [--payload BYTES] [--prefetch P] [--timeout SECONDS] [--workers N] [--broker-pid PID]"
    );
    std::process::exit(2)
}

fn parse() -> Options {
    let mut o = Options {
        url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        concurrency: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        payload: 128,
        prefetch: 64,
        timeout: Duration::from_secs(1),
        workers: None,
        broker_pid: None,
    };
    let mut args = std::env::args().skip(1);
    let seconds = |v: Option<String>| {
        v.and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| usage())
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => o.url = args.next().unwrap_or_else(|| usage()),
            "--concurrency" => o.concurrency = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--duration" => o.duration = seconds(args.next()),
            "--warmup" => o.warmup = seconds(args.next()),
            "--payload" => o.payload = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--prefetch" => o.prefetch = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--timeout" => o.timeout = seconds(args.next()),
            "--workers" => o.workers = Some(args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage())),
            "--broker-pid" => o.broker_pid = Some(args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    if o.concurrency == 0 || o.prefetch == 0 {
        usage();
    }
    o
}

/// Counters shared by every task.
#[derive(Default)]
struct Counts {
    errors: AtomicU64,
    timeouts: AtomicU64,
    late_replies: AtomicU64,
}

fn main() {
    let options = parse();
    // Like weir (crates/weir/src/runtime.rs): multi-threaded, one worker per core it may
    // use (tokio reads the affinity mask), so pinned to one core it runs one worker.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = options.workers {
        builder.worker_threads(workers);
    }
    let runtime = builder.enable_all().build().expect("cannot start the tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(line) => println!("{line}"),
        Err(err) => {
            // Still one JSON line, so that bench/run records the failure.
            println!("{{\"rps\":0,\"requests\":0,\"errors\":1,\"timeouts\":0,\"error\":{:?}}}", err.to_string());
            std::process::exit(1);
        }
    }
}

async fn run(o: Options) -> lapin::Result<String> {
    let counts = Arc::new(Counts::default());
    let responder_conn = Connection::connect(
        &o.url,
        ConnectionProperties::default().with_connection_name("amqp_ceiling responder".into()),
    )
    .await?;
    let requester_conn = Connection::connect(
        &o.url,
        ConnectionProperties::default().with_connection_name("amqp_ceiling requesters".into()),
    )
    .await?;

    // The request queue: exclusive to the responder's connection (others may publish to
    // it), named after this process so that stale queues never interfere.
    let responder = responder_conn.create_channel().await?;
    responder.basic_qos(o.prefetch, BasicQosOptions::default()).await?;
    let request_queue: ShortString = format!("amqp-ceiling.{}.requests", std::process::id()).into();
    let exclusive = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    responder.queue_declare(request_queue.clone(), exclusive, FieldTable::default()).await?;
    let consumer = responder
        .basic_consume(request_queue.clone(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let ack_batch = (o.prefetch / 2).max(1);
    let responding = tokio::spawn(respond(responder.clone(), consumer, ack_batch, counts.clone()));

    // Each requester's channel and reply queue, all declared before the clock starts.
    let mut requesters = Vec::with_capacity(o.concurrency);
    for _ in 0..o.concurrency {
        let channel = requester_conn.create_channel().await?;
        channel.basic_qos(o.prefetch, BasicQosOptions::default()).await?;
        let queue = channel.queue_declare("".into(), exclusive, FieldTable::default()).await?;
        let reply_to = queue.name().clone();
        let consumer = channel
            .basic_consume(reply_to.clone(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        requesters.push((channel, consumer, reply_to));
    }

    let start = Instant::now();
    let measure_from = start + o.warmup;
    let measure_until = measure_from + o.duration;
    let body: Arc<[u8]> = vec![b'x'; o.payload].into();
    let tasks: Vec<_> = requesters
        .into_iter()
        .enumerate()
        .map(|(i, (channel, consumer, reply_to))| {
            let window = Window { from: measure_from, until: measure_until, timeout: o.timeout };
            tokio::spawn(request_loop(
                i,
                channel,
                consumer,
                reply_to,
                request_queue.clone(),
                body.clone(),
                window,
                counts.clone(),
            ))
        })
        .collect();
    // CPU time over the measured window: this process, and the broker if named.
    let cpu_window = {
        let broker = o.broker_pid;
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = (cpu_ticks("self"), broker.map(|pid| cpu_ticks(&pid.to_string())));
            tokio::time::sleep_until(measure_until.into()).await;
            let after = (cpu_ticks("self"), broker.map(|pid| cpu_ticks(&pid.to_string())));
            (after.0.saturating_sub(before.0), after.1.zip(before.1).map(|(a, b)| a.saturating_sub(b)))
        })
    };
    let mut latencies_us: Vec<u32> = Vec::new();
    for task in tasks {
        match task.await {
            Ok(samples) => latencies_us.extend(samples),
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    responding.abort();
    let (own_ticks, broker_ticks) = cpu_window.await.unwrap_or((0, None));
    let (errors, timeouts, late_replies) = (
        counts.errors.load(Ordering::Relaxed),
        counts.timeouts.load(Ordering::Relaxed),
        counts.late_replies.load(Ordering::Relaxed),
    );
    let _ = requester_conn.close(200, "done".into()).await;
    let _ = responder_conn.close(200, "done".into()).await;

    latencies_us.sort_unstable();
    let quantile = |q: f64| -> f64 {
        if latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((q * latencies_us.len() as f64).ceil() as usize).clamp(1, latencies_us.len());
        f64::from(latencies_us[rank - 1]) / 1000.0
    };
    let seconds = o.duration.as_secs_f64();
    let per_request = |ticks: u64| {
        if latencies_us.is_empty() {
            0.0
        } else {
            ticks as f64 * 1e6 / CLOCK_TICKS / latencies_us.len() as f64
        }
    };
    let broker_cpu =
        broker_ticks.map(|t| format!(",\"broker_cpu_us_per_req\":{:.1}", per_request(t))).unwrap_or_default();
    Ok(format!(
        "{{\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"requests\":{},\"errors\":{},\
         \"timeouts\":{},\"late_replies\":{},\"concurrency\":{},\"payload\":{},\"prefetch\":{},\"seconds\":{},\"cpu_us_per_req\":{:.1}{}}}",
        latencies_us.len() as f64 / seconds,
        quantile(0.50),
        quantile(0.99),
        quantile(0.999),
        latencies_us.len(),
        errors,
        timeouts,
        late_replies,
        o.concurrency,
        o.payload,
        o.prefetch,
        seconds,
        per_request(own_ticks),
        broker_cpu,
    ))
}

/// Linux's USER_HZ, the unit of the CPU times in `/proc/PID/stat` (100 on every
/// architecture Linux runs this on).
const CLOCK_TICKS: f64 = 100.0;

/// User + system CPU time of a process so far, in clock ticks (0 if it cannot be read).
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; the first after the name is 3.
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
    timeout: Duration,
}

/// One requester until the window closes: the latencies (µs) of the requests it sent
/// within the window and got answered.
#[allow(clippy::too_many_arguments)]
async fn request_loop(
    id: usize,
    channel: Channel,
    mut consumer: Consumer,
    reply_to: ShortString,
    request_queue: ShortString,
    body: Arc<[u8]>,
    window: Window,
    counts: Arc<Counts>,
) -> Vec<u32> {
    let mut samples = Vec::new();
    let mut seq: u64 = 0;
    loop {
        let sent = Instant::now();
        if sent >= window.until {
            return samples;
        }
        seq += 1;
        let correlation: ShortString = format!("{id}.{seq}").into();
        let properties =
            BasicProperties::default().with_reply_to(reply_to.clone()).with_correlation_id(correlation.clone());
        let published = channel
            .basic_publish("".into(), request_queue.clone(), BasicPublishOptions::default(), &body, properties)
            .await;
        if published.is_err() {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            return samples;
        }
        // The reply with this correlation id; replies to requests that timed out before
        // are acknowledged and dropped.
        let answered = tokio::time::timeout(window.timeout, async {
            loop {
                let delivery = match consumer.next().await {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(_)) | None => return Err(()),
                };
                let ours = delivery.properties.correlation_id().as_ref() == Some(&correlation);
                if channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await.is_err() {
                    return Err(());
                }
                if ours {
                    return Ok(Instant::now());
                }
                counts.late_replies.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
        match answered {
            Ok(Ok(at)) => {
                if sent >= window.from {
                    samples.push(at.duration_since(sent).as_micros().min(u128::from(u32::MAX)) as u32);
                }
            }
            Ok(Err(())) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return samples;
            }
            Err(_) => {
                counts.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The responder: each request's body back to its `reply_to`, with its `correlation_id`.
/// Deliveries are acknowledged as weir's session pump does (crates/rabbitmq/src/session.rs):
/// in batches of half the prefetch, and whatever was taken before waiting for more. Each
/// reply is published from its own task, so that one publish waiting for the connection's
/// I/O thread never holds up the next request.
async fn respond(channel: Channel, mut consumer: Consumer, ack_batch: u16, counts: Arc<Counts>) {
    let mut unacked: u16 = 0;
    let mut last_tag = 0;
    loop {
        let next = match consumer.next().now_or_never() {
            Some(next) => next,
            None => {
                if unacked > 0 {
                    if channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await.is_err() {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    unacked = 0;
                }
                consumer.next().await
            }
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(_)) | None => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Some(reply_to) = delivery.properties.reply_to().clone() else {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut properties = BasicProperties::default();
        if let Some(correlation) = delivery.properties.correlation_id().clone() {
            properties = properties.with_correlation_id(correlation);
        }
        let (publisher, counts_for_reply) = (channel.clone(), counts.clone());
        let data = delivery.data;
        tokio::spawn(async move {
            let sent =
                publisher.basic_publish("".into(), reply_to, BasicPublishOptions::default(), &data, properties).await;
            if sent.is_err() {
                counts_for_reply.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        last_tag = delivery.delivery_tag;
        unacked += 1;
        if unacked >= ack_batch {
            if channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await.is_err() {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            unacked = 0;
        }
    }
}
