//! Running a foreign training program: spawn it, pass its output through while keeping a log,
//! split the output into bounded lines with their arrival times, tail an events file, signal
//! it, and reap it with its exit status and peak memory.
//!
//! Owns: the child process and the threads that read it. Must not: parse reports (`events`),
//! touch a meter or decide a run's status (`exec`).

use super::events::{Line, LineSplitter};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    EventsFile,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::EventsFile => "events file",
        }
    }
}

/// What the reader threads send: a complete line with the moment it was read, or the end of
/// a stream.
#[derive(Debug)]
pub enum Msg {
    Line {
        stream: Stream,
        line: Line,
        at: Instant,
    },
    Closed(Stream),
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// `ru_maxrss` of the program (Linux: KiB).
    pub peak_rss_kib: Option<u64>,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The name of a signal number (`SIGTERM`), or `signal N`.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGXCPU => "SIGXCPU",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// The process group of the running program, for the signal forwarder (0: none).
static CHILD_GROUP: AtomicI32 = AtomicI32::new(0);

/// SIGINT, SIGTERM or SIGHUP to joulebench (Ctrl-C, Slurm preemption, a closed terminal):
/// pass it to the program's process group, then die of it as we would have.
extern "C" fn forward_and_die(sig: libc::c_int) {
    let group = CHILD_GROUP.load(Ordering::SeqCst);
    // SAFETY: killpg, signal and raise are async-signal-safe.
    unsafe {
        if group > 0 {
            libc::killpg(group, sig);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

fn install_forwarder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe {
                libc::signal(sig, forward_and_die as *const () as libc::sighandler_t);
            }
        }
    });
}

/// What to run.
pub struct Spec<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    /// Where the program's stdout is echoed: our stdout, or our stderr (`--json` keeps our
    /// stdout for records).
    pub stdout_to_stderr: bool,
    /// The running log of stdout and stderr together (the caller renames it when done).
    pub log: std::fs::File,
    pub events_file: Option<PathBuf>,
    /// How often the events file is polled for new lines.
    pub poll: Duration,
}

/// A started program and its readers.
pub struct Running {
    pid: libc::pid_t,
    rx: Receiver<Msg>,
    threads: Vec<JoinHandle<()>>,
    open: usize,
    exit: Option<Exit>,
    stop_tail: Arc<AtomicBool>,
    /// Kept so the standard library does not reap it; we reap with wait4.
    _child: std::process::Child,
}

fn echo(to_stderr: bool, bytes: &[u8]) {
    // The echo is a convenience: a closed terminal must not stop the measurement.
    if to_stderr {
        let _ = std::io::stderr().write_all(bytes);
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }
}

fn pipe_reader(
    mut r: impl Read,
    stream: Stream,
    to_stderr: bool,
    log: Arc<Mutex<std::fs::File>>,
    tx: Sender<Msg>,
) {
    let mut split = LineSplitter::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = Instant::now();
        echo(to_stderr, &buf[..n]);
        // A log write error is kept for the caller (the log is then incomplete; see `finish`).
        let _ = log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(&buf[..n]);
        for line in split.push(&buf[..n]) {
            let _ = tx.send(Msg::Line { stream, line, at });
        }
    }
    if let Some(line) = split.flush() {
        let _ = tx.send(Msg::Line {
            stream,
            line,
            at: Instant::now(),
        });
    }
    let _ = tx.send(Msg::Closed(stream));
}

/// Follows a file another process appends to: lines written after `from` (a file that
/// shrinks was rewritten, and is read again from its start).
fn tail_reader(path: PathBuf, from: u64, poll: Duration, stop: Arc<AtomicBool>, tx: Sender<Msg>) {
    let mut offset = from;
    let mut split = LineSplitter::default();
    let mut buf = vec![0u8; 65536];
    loop {
        // Read the stop flag first: the read below then sees everything written before it.
        let last = stop.load(Ordering::Acquire);
        if let Ok(mut f) = std::fs::File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0;
                split = LineSplitter::default();
            }
            if len > offset && f.seek(SeekFrom::Start(offset)).is_ok() {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    offset += n as u64;
                    let at = Instant::now();
                    for line in split.push(&buf[..n]) {
                        let _ = tx.send(Msg::Line {
                            stream: Stream::EventsFile,
                            line,
                            at,
                        });
                    }
                }
            }
        }
        if last {
            break;
        }
        std::thread::sleep(poll);
    }
    if let Some(line) = split.flush() {
        let _ = tx.send(Msg::Line {
            stream: Stream::EventsFile,
            line,
            at: Instant::now(),
        });
    }
    let _ = tx.send(Msg::Closed(Stream::EventsFile));
}

/// The size of a file now (0 when it does not exist): where a tail starts.
pub fn current_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

impl Running {
    /// Start the program with stdin closed, stdout and stderr piped to reader threads.
    pub fn spawn(spec: Spec<'_>) -> std::io::Result<Running> {
        let (program, args) = spec.argv.split_first().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command")
        })?;
        let events_from = spec.events_file.as_deref().map(current_len);
        install_forwarder();
        // Its own process group, so a signal reaches what it starts too (a shell wrapper's
        // python, a data loader's workers); ours are forwarded to it.
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // If joulebench itself is killed (SIGKILL cannot be forwarded), the program dies
        // with it rather than run on unmeasured into a resumed series.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id() as libc::pid_t;
        CHILD_GROUP.store(pid, Ordering::SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(spec.log));
        let mut threads = Vec::new();
        if let Some(out) = child.stdout.take() {
            let (tx, log) = (tx.clone(), log.clone());
            let to_err = spec.stdout_to_stderr;
            threads.push(std::thread::spawn(move || {
                pipe_reader(out, Stream::Stdout, to_err, log, tx)
            }));
        }
        if let Some(err) = child.stderr.take() {
            let (tx, log) = (tx.clone(), log.clone());
            threads.push(std::thread::spawn(move || {
                pipe_reader(err, Stream::Stderr, true, log, tx)
            }));
        }
        let stop_tail = Arc::new(AtomicBool::new(false));
        if let (Some(path), Some(from)) = (spec.events_file, events_from) {
            let (tx, stop) = (tx.clone(), stop_tail.clone());
            let poll = spec.poll;
            threads.push(std::thread::spawn(move || {
                tail_reader(path, from, poll, stop, tx)
            }));
        }
        let open = threads.len();
        Ok(Running {
            pid,
            rx,
            threads,
            open,
            exit: None,
            stop_tail,
            _child: child,
        })
    }

    /// The next line, waiting at most `timeout`; `None` on timeout or when every stream has
    /// closed. Closed streams are counted here.
    pub fn next(&mut self, timeout: Duration) -> Option<(Stream, Line, Instant)> {
        let deadline = Instant::now() + timeout;
        while self.open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Line { stream, line, at }) => return Some((stream, line, at)),
                Ok(Msg::Closed(_)) => self.open -= 1,
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => self.open = 0,
            }
        }
        None
    }

    /// Whether the program's pipes are closed (the events tail stays open until `stop_tail`).
    pub fn streams_open(&self) -> usize {
        self.open
    }

    /// Tell the events-file reader to do its last read and close.
    pub fn stop_tail(&self) {
        self.stop_tail.store(true, Ordering::Release);
    }

    /// Reap the program if it has exited (non-blocking); its exit once known.
    pub fn poll_exit(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            let mut status: libc::c_int = 0;
            // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: pid is our own unreaped child; status and usage are valid out-pointers.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == self.pid {
                let (code, signal) = if libc::WIFEXITED(status) {
                    (Some(libc::WEXITSTATUS(status)), None)
                } else if libc::WIFSIGNALED(status) {
                    (None, Some(libc::WTERMSIG(status)))
                } else {
                    (None, None)
                };
                self.exit = Some(Exit {
                    code,
                    signal,
                    peak_rss_kib: u64::try_from(usage.ru_maxrss).ok(),
                });
            }
        }
        self.exit
    }

    /// Send a signal to the program's process group while the program is not yet reaped (a
    /// reaped pid may name another process by now). True when it was sent.
    pub fn signal(&mut self, sig: i32) -> bool {
        if self.poll_exit().is_some() {
            return false;
        }
        // SAFETY: killpg has no memory effects; the group is led by our unreaped child.
        unsafe { libc::killpg(self.pid, sig) == 0 }
    }

    /// SIGKILL what is left of the program's process group after it exited (a worker that
    /// kept its output open). True when something was there to kill.
    pub fn kill_leftovers(&mut self) -> bool {
        // SAFETY: as above; a group id is not reused while any member lives.
        self.exit.is_some() && unsafe { libc::killpg(self.pid, libc::SIGKILL) == 0 }
    }

    /// Close the events tail and join the readers that have ended; a reader still blocked on
    /// a pipe that a grandchild holds open is left to end with it. Call after `next` has
    /// returned every line the caller wants.
    pub fn finish(mut self) {
        CHILD_GROUP.store(0, Ordering::SeqCst);
        self.stop_tail();
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
