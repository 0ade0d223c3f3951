//! Private broker servers for tests: a child process on a free loopback port, killed on drop.
//!
//! Backend crates use this to start `redis-server` or `nats-server` per test binary or per
//! test: tests never assume a server on a fixed port, each gets one of its own (or a
//! unique prefix on a shared one), and fault tests stop, freeze and restart it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1, as the OS hands it out, and never one this process was
/// handed before (the OS may hand a just-closed port out again, and two servers started in
/// parallel on one port would look like one). Another process could still take it before
/// the server binds it; [`ServerProcess::start`] reports that as a start failure.
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no port this process has not used before",
    ))
}

/// Whether `program` can be run from `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A server child process listening on a loopback port. Killed (and reaped) on drop.
#[derive(Debug)]
pub struct ServerProcess {
    program: String,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

impl ServerProcess {
    /// Runs `program args..`, which must listen on 127.0.0.1:`port`, and waits up to 10 s
    /// for the port to accept connections.
    pub fn start(program: &str, args: &[String], port: u16) -> Result<Self, String> {
        let mut server = ServerProcess {
            program: program.to_owned(),
            args: args.to_vec(),
            port,
            child: None,
        };
        server.launch()?;
        Ok(server)
    }

    /// Runs `program` with the arguments `args(port)` for a [`free_port`], trying a few
    /// ports in case another process takes one first; the last failure when none works.
    pub fn start_on_free_port(
        program: &str,
        args: impl Fn(u16) -> Vec<String>,
    ) -> Result<Self, String> {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free TCP port on 127.0.0.1: {e}"))?;
            match Self::start(program, &args(port), port) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn launch(&mut self) -> Result<(), String> {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program))?;
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            // Whoever answers must be our child: a server that failed to bind the port (it
            // was taken) exits, and the port may answer for someone else.
            self.check_running()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                std::thread::sleep(Duration::from_millis(50));
                return self.check_running();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "{} did not listen on port {} within 10 s",
            self.program, self.port
        ))
    }

    fn check_running(&mut self) -> Result<(), String> {
        let exited = match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten(),
            None => return Err(format!("{} is not running", self.program)),
        };
        match exited {
            Some(status) => Err(format!(
                "{} exited with {status} instead of listening on port {} (port taken?)",
                self.program, self.port
            )),
            None => Ok(()),
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Suspends the server (SIGSTOP, sent with the `kill` command): its connections stay
    /// open and nothing answers, as with a hung server, until [`ServerProcess::thaw`].
    ///
    /// Returns once the process is stopped: a signal is delivered asynchronously, and a
    /// server thread still running could otherwise answer a request sent right after.
    pub fn freeze(&self) {
        self.signal("-STOP");
        let Some(child) = self.child.as_ref() else {
            return;
        };
        let stat = format!("/proc/{}/stat", child.id());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            match std::fs::read_to_string(&stat) {
                // `pid (name) state ...`: the state follows the closing parenthesis.
                Ok(text)
                    if text
                        .rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T')) =>
                {
                    return;
                }
                // No /proc (not Linux): a short pause stands in for the check.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    return;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Resumes a server [`ServerProcess::freeze`] suspended (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is not running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("cannot run the `kill` command");
        assert!(status.success(), "kill {signal} {} failed", child.id());
    }

    /// Starts the server again with the same program, arguments and port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.launch()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
