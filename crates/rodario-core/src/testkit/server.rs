//! Private broker servers for tests: a child process on a free loopback port, killed on drop.
//!
//! Backend crates use this to start `redis-server` or `nats-server` per test binary or per
//! test (see DESIGN.md, "Servers in tests"), and fault tests stop and restart it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1, as the OS hands it out. Another process could take it
/// before the server binds it; [`ServerProcess::start`] reports that as a start failure.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
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
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{} exited with {status} before listening on port {} (port taken?)",
                        self.program, self.port
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "{} did not listen on port {} within 10 s",
            self.program, self.port
        ))
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
