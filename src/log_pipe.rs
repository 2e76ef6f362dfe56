//! Log output that never stalls the operator: each formatted line is handed
//! to a thread of its own, which writes it out.
//!
//! The operator's async work runs on one thread by default
//! (`--runtime-threads`). Writing log lines to stdout from that thread would
//! let a log pipe that backs up (a slow log collector) stop the controllers,
//! the webhook and the leader Lease renewal with it. Guarantees: a log call
//! never waits for the output; when `capacity` lines are queued, further
//! lines are dropped and counted, and the next line written is preceded by
//! one that says how many were lost; [`LogPipe::drain`] waits (bounded) for
//! the queue to be written, so the last lines before exit are not lost.
//!
//! Cost: the thread writes what is queued in one batch (at most `capacity`
//! lines, one write to the output; a drain in the middle splits it in
//! two), then rests [`LINGER`] before it waits for the next line, so a
//! steady trickle of lines (the bench's `timeline` log writes about ten
//! per claim) wakes it at most once per rest instead of once per line. The
//! price: a line appears up to [`LINGER`] (plus the current batch's write)
//! later; lines held in memory can reach twice `capacity` (a batch being
//! written and a full queue); and a burst of more than `capacity` lines
//! within one rest is dropped (and counted) even when the output is fast.
//! A `perf` profile of the bench had a tenth of the operator's CPU in
//! waking the thread per line and its single-line writes.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

enum Message {
    Line(Vec<u8>),
    Drain(mpsc::Sender<()>),
}

/// The sending end; clone it into the log subscriber's writer.
#[derive(Clone)]
pub struct LogPipe {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl LogPipe {
    /// Starts the writing thread over `out`. `json` chooses the shape of the
    /// "lines dropped" notice (a JSON object, or plain text).
    pub fn spawn<W: Write + Send + 'static>(out: W, capacity: usize, json: bool) -> LogPipe {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("log-pipe".into())
            .spawn(move || write_out(rx, out, &counter, json, capacity))
            .expect("spawn the log writer thread");
        LogPipe { tx, dropped }
    }

    /// Lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every line queued before this call is written, at most
    /// `timeout`; whether it was.
    pub fn drain(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let (done_tx, done_rx) = mpsc::channel();
        // At exit, waiting for room in a full queue is wanted, but only
        // until the deadline: an output that never takes a line must not
        // hold the exit.
        let mut message = Message::Drain(done_tx);
        loop {
            match self.tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    message = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        done_rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .is_ok()
    }
}

impl Write for LogPipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.tx.try_send(Message::Line(buf.to_vec())) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How long the writing thread rests after a batch.
pub const LINGER: Duration = Duration::from_millis(20);

/// The writing thread: batches of at most `batch_cap` messages (the queue's
/// capacity, so a batch never holds more than the queue could).
fn write_out<W: Write>(
    rx: Receiver<Message>,
    mut out: W,
    dropped: &AtomicU64,
    json: bool,
    batch_cap: usize,
) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(message) = next.take() {
            taken += 1;
            match message {
                Message::Line(line) => {
                    let lost = dropped.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        batch.extend_from_slice(lost_notice(lost, json).as_bytes());
                    }
                    batch.extend_from_slice(&line);
                }
                Message::Drain(done) => {
                    let _ = out.write_all(&batch);
                    batch.clear();
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            if taken < batch_cap {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
            batch.clear();
        }
        // Big batches are rare; do not keep their buffer.
        batch.shrink_to(64 * 1024);
        std::thread::sleep(LINGER);
    }
    let _ = out.flush();
}

/// The notice that `lost` lines were dropped, in the output's format.
fn lost_notice(lost: u64, json: bool) -> String {
    if json {
        format!(
            "{{\"level\":\"WARN\",\"target\":\"log_pipe\",\"fields\":{{\"message\":\"{lost} log lines dropped: the log queue was full\",\"dropped\":{lost}}}}}\n"
        )
    } else {
        format!("WARN log_pipe: {lost} log lines dropped: the log queue was full\n")
    }
}

/// Lines queued for the log thread before further ones are dropped.
const LOG_QUEUE_LINES: usize = 16_384;

/// How long an exit waits for the queued lines to be written.
pub const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// The process's log pipe, for the exits that do not return through `main`.
static INSTALLED: OnceLock<LogPipe> = OnceLock::new();

/// Writes every queued log line (at most [`EXIT_DRAIN`]): call before
/// `std::process::exit`, which would drop them.
pub fn drain_installed() {
    if let Some(pipe) = INSTALLED.get() {
        pipe.drain(EXIT_DRAIN);
    }
}

/// The log filter when `RUST_LOG` is unset or unusable.
const DEFAULT_FILTER: &str = "info,kube_runtime=warn,kube_client=warn";

/// The log filter `RUST_LOG` (its value given) asks for, or the default one
/// with a warning naming RUST_LOG and why it was not used. Before (found by
/// review) a `RUST_LOG` with one bad directive (`error,kube=loud`) was
/// ignored without a word. Pure.
fn log_filter(
    rust_log: Result<String, std::env::VarError>,
) -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    let problem = match rust_log {
        Err(std::env::VarError::NotPresent) => None,
        Err(error) => Some(format!("RUST_LOG is unusable: {error}")),
        // As `EnvFilter::try_from_default_env` parses it.
        Ok(value) => match EnvFilter::builder().parse(&value) {
            Ok(filter) => return (filter, None),
            Err(error) => Some(format!(
                "RUST_LOG {value:?} is not a valid log filter: {error}"
            )),
        },
    };
    let warning = problem.map(|problem| {
        format!("warning: {problem}; logging with the default filter {DEFAULT_FILTER:?} instead")
    });
    (EnvFilter::new(DEFAULT_FILTER), warning)
}

/// Installs the process's logging: stdout through a [`LogPipe`], `format`
/// `json` or text, `RUST_LOG` or the default filter; a panic drains the
/// queue before its report. Call once, at start.
pub fn init(format: &str) -> LogPipe {
    let (filter, warning) = log_filter(std::env::var("RUST_LOG"));
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
    let json = format == "json";
    let pipe = LogPipe::spawn(std::io::stdout(), LOG_QUEUE_LINES, json);
    let writer = pipe.clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || writer.clone());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    let _ = INSTALLED.set(pipe.clone());
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        drain_installed();
        default_hook(info);
    }));
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};
    use tracing_subscriber::EnvFilter;

    #[test]
    fn a_bad_rust_log_is_reported_and_the_default_filter_used() {
        let (filter, warning) = log_filter(Ok("error,kube=loud".into()));
        let warning = warning.expect("a warning");
        assert!(
            warning
                .starts_with("warning: RUST_LOG \"error,kube=loud\" is not a valid log filter: "),
            "{warning}"
        );
        assert!(
            warning.ends_with(&format!("default filter {DEFAULT_FILTER:?} instead")),
            "{warning}"
        );
        assert_eq!(
            filter.to_string(),
            EnvFilter::new(DEFAULT_FILTER).to_string()
        );
        let (_, warning) = log_filter(Err(std::env::VarError::NotUnicode("\u{fffd}".into())));
        assert!(
            warning
                .unwrap()
                .starts_with("warning: RUST_LOG is unusable: ")
        );
    }

    #[test]
    fn a_good_or_absent_rust_log_gives_no_warning() {
        let (filter, warning) = log_filter(Ok("warn,timeline=info".into()));
        assert_eq!(warning, None);
        assert_eq!(
            filter.to_string(),
            EnvFilter::new("warn,timeline=info").to_string()
        );
        let (filter, warning) = log_filter(Err(std::env::VarError::NotPresent));
        assert_eq!(warning, None);
        assert_eq!(
            filter.to_string(),
            EnvFilter::new(DEFAULT_FILTER).to_string()
        );
    }

    /// What a [`Gate`] saw.
    #[derive(Default)]
    struct Seen {
        open: bool,
        text: Vec<u8>,
        /// Each write call's bytes.
        writes: Vec<String>,
        /// Write calls started (a blocked one included).
        entered: usize,
    }

    type GateState = (Mutex<Seen>, Condvar);

    /// An output that blocks until opened, recording what it got.
    #[derive(Clone, Default)]
    struct Gate {
        state: Arc<GateState>,
    }

    impl Gate {
        fn open(&self) {
            let (lock, cv) = &*self.state;
            lock.lock().unwrap().open = true;
            cv.notify_all();
        }
        fn text(&self) -> String {
            String::from_utf8(self.state.0.lock().unwrap().text.clone()).unwrap()
        }
        fn writes(&self) -> Vec<String> {
            self.state.0.lock().unwrap().writes.clone()
        }
        fn entered(&self) -> usize {
            self.state.0.lock().unwrap().entered
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.state;
            lock.lock().unwrap().entered += 1;
            let mut state = cv.wait_while(lock.lock().unwrap(), |s| !s.open).unwrap();
            state.text.extend_from_slice(buf);
            state.writes.push(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_never_blocks_the_writer_and_losses_are_reported() {
        let gate = Gate::default();
        let pipe = LogPipe::spawn(gate.clone(), 2, false);
        // The thread takes the first line (and whatever else is queued by
        // then, at most the capacity: two lines in all) and blocks on the
        // output; two more fill the queue; the rest (six at least) are
        // dropped. None of these calls waits
        // (if one did, the writes would not finish and the gate opens to
        // let the test fail instead of hang).
        let (done_tx, done_rx) = mpsc::channel();
        let mut writer = pipe.clone();
        std::thread::spawn(move || {
            for i in 0..10 {
                writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
            }
            done_tx.send(()).unwrap();
        });
        if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            gate.open();
            panic!("a log write waited for the blocked output");
        }
        let mut pipe = pipe;

        gate.open();
        assert!(pipe.drain(Duration::from_secs(5)));
        pipe.write_all(b"after\n").unwrap();
        assert!(pipe.drain(Duration::from_secs(5)));
        // Every line is either written or counted in a notice.
        let text = gate.text();
        let written = text.lines().filter(|l| l.starts_with("line ")).count();
        let reported: u64 = text
            .lines()
            .filter_map(|l| l.strip_prefix("WARN log_pipe: "))
            .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(written as u64 + reported, 10, "{text}");
        assert!(reported >= 6, "{text}");
        assert!(text.ends_with("after\n"), "{text}");
        assert_eq!(pipe.dropped(), 0);
    }

    #[test]
    fn a_drain_behind_a_stuck_output_and_a_full_queue_gives_up_at_its_deadline() {
        let gate = Gate::default();
        let mut pipe = LogPipe::spawn(gate.clone(), 1, false);
        for _ in 0..5 {
            pipe.write_all(b"x\n").unwrap();
        }
        let start = std::time::Instant::now();
        assert!(!pipe.drain(Duration::from_millis(200)));
        let took = start.elapsed();
        gate.open();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn lines_queued_while_the_thread_writes_go_out_in_one_write() {
        let gate = Gate::default();
        let mut pipe = LogPipe::spawn(gate.clone(), 100, false);
        pipe.write_all(b"a\n").unwrap();
        let start = std::time::Instant::now();
        while gate.entered() == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "a never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The thread is blocked writing "a": these three wait in the queue.
        for line in ["b\n", "c\n", "d\n"] {
            pipe.write_all(line.as_bytes()).unwrap();
        }
        gate.open();
        assert!(pipe.drain(Duration::from_secs(5)));
        assert_eq!(gate.writes(), ["a\n", "b\nc\nd\n"]);
    }

    #[test]
    fn drain_waits_for_every_queued_line_and_the_notice_is_json_in_json_mode() {
        let gate = Gate::default();
        gate.open();
        let mut pipe = LogPipe::spawn(gate.clone(), 100, true);
        for i in 0..50 {
            pipe.write_all(format!("{{\"n\":{i}}}\n").as_bytes())
                .unwrap();
        }
        assert!(pipe.drain(Duration::from_secs(5)));
        assert_eq!(gate.text().lines().count(), 50);
        // A notice in JSON mode parses as JSON.
        pipe.dropped.store(3, Ordering::Relaxed);
        pipe.write_all(b"{\"n\":50}\n").unwrap();
        assert!(pipe.drain(Duration::from_secs(5)));
        let text = gate.text();
        let notice = text.lines().nth(50).unwrap();
        let v: serde_json::Value = serde_json::from_str(notice).unwrap();
        assert_eq!(v["fields"]["dropped"], 3);
    }
}
