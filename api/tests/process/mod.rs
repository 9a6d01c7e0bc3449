//! Starting the real `ledgerd` binary for the tests, written once for every suite that runs it
//! (`common`, `end_to_end`, `bench`, `operations`): spawn with stdout and stderr piped, read
//! stdout on a thread until `listening on ADDR`, drain stderr on another so the server never
//! blocks on a full pipe, and either give the running process or, when it exits first, its
//! status and stderr. Each suite wraps [`Spawned`] in its own `Server` (how it stops, what it
//! checks on the way out).

#![allow(dead_code, reason = "not every suite uses every part")]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a start may take before the test fails (recovery of a test's data dir included).
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(120);
/// How long an exit may take after a signal.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(60);

/// A `ledgerd serve` that printed `listening on ADDR`.
pub struct Spawned {
    pub child: Child,
    pub address: SocketAddr,
    /// Lines printed on stdout after `listening on`.
    pub stdout_lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

/// A `ledgerd` that exited before listening.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stderr: String,
}

/// Spawns `command` and waits for `listening on ADDR`.
pub fn spawn_listening(mut command: Command) -> Result<Spawned, Exited> {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(20)) {
            let address =
                line.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected stdout line {line:?}"));
            let address = address.parse().unwrap_or_else(|_| panic!("not an address: {address:?}"));
            return Ok(Spawned { child, address, stdout_lines: lines, stderr: Some(stderr) });
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Err(Exited { status, stderr: stderr.join().unwrap_or_default() });
        }
        assert!(Instant::now() < deadline, "ledgerd did not print `listening on` in time");
    }
}

impl Spawned {
    /// Sends `signal` (`TERM`, `KILL`, `STOP`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (up to [`EXIT_DEADLINE`]) for the process to exit; its status and all it wrote on
    /// stderr.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + EXIT_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "ledgerd did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        };
        (status, self.take_stderr())
    }

    /// Sends `signal` and waits for the exit.
    pub fn stop_with(&mut self, signal: &str) -> (ExitStatus, String) {
        self.signal(signal);
        self.wait_exit()
    }

    /// SIGKILL and wait; what it wrote on stderr.
    pub fn kill(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.take_stderr()
    }

    fn take_stderr(&mut self) -> String {
        self.stderr.take().map(|reader| reader.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
