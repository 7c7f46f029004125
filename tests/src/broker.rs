//! A real Kafka-protocol broker for tests: tansu on a free loopback port with durable
//! sqlite storage in a scratch folder, started and stopped by process id.
//!
//! # Invariants
//! - The broker is reachable (metadata answers) when [`Broker::start`] returns.
//! - [`Broker::stop`] + [`Broker::restart`] keep the data (same folder, same port), so a
//!   bounce is an outage, not a new cluster.
//! - Dropping the handle kills the broker: no test leaves one running.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The tansu binary: `FLOE_TANSU`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("FLOE_TANSU") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file());
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
    match on_path.or(home.filter(|p| p.is_file())) {
        Some(p) => p,
        None => panic!(
            "the tansu broker is not installed; harness/scripts/test.sh installs it \
             (cargo install tansu --locked --features dynostore,libsql)"
        ),
    }
}

/// A running (or stopped) tansu broker.
pub struct Broker {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Broker {
    /// Starts a broker storing its data under `dir`.
    pub fn start(dir: &Path) -> Broker {
        std::fs::create_dir_all(dir).expect("broker dir");
        let mut b = Broker { dir: dir.to_path_buf(), port: free_port(), child: None };
        b.restart();
        b
    }

    /// `host:port` for clients.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The broker's process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the broker again on the same port and storage (after [`Broker::stop`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("tansu.log")).expect("broker log");
        let child = Command::new(tansu_binary())
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &self.url(), "--advertised-listener-url", &self.url()])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .set("log_level", "0")
            .create()
            .expect("metadata client");
        loop {
            if client.fetch_metadata(None, Duration::from_secs(1)).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("tansu exited with {status}; see {}", self.dir.join("tansu.log").display());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "tansu did not come up within 30s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 5 s) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let out = Command::new(tansu_binary())
            .current_dir(&self.dir)
            .args(["topic", "create", name, "--partitions", &partitions.to_string(), "--broker", &self.url()])
            .output()
            .expect("run tansu topic create");
        assert!(out.status.success(), "creating topic {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
