//! The real `troupe` binary as a child process, for crash tests.

use std::process::Stdio;

use tokio::process::{Child, Command};

use super::{Isolation, config_dir};

/// Names the registry a child started by [`ChildService::start_test_domains`] runs.
pub const CHILD_REGISTRY: &str = "TROUPE_TEST_CHILD_REGISTRY";

/// A `troupe serve` child process over a test's isolated data.
pub struct ChildService {
    child: Child,
    /// `http://127.0.0.1:<port>` when started with [`ChildService::serving`].
    pub address: Option<String>,
}

impl ChildService {
    /// Starts `troupe serve` with the isolation's settings plus `extra` environment variables.
    /// The instance id stays the same across restarts, as it would in a deployment.
    pub fn start(isolation: &Isolation, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_troupe"));
        cmd.arg("serve").arg("--config-dir").arg(config_dir());
        Self::spawn(cmd, isolation, extra)
    }

    /// Starts this test binary as a service running the test-only domains of `registry` (see
    /// `crate::child_entry`), for crash tests of domains the `troupe` binary does not have.
    /// Everything else is as with [`Self::start`].
    pub fn start_test_domains(
        isolation: &Isolation,
        registry: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args(["--ignored", "--exact", "child_entry", "--nocapture"])
            .env(CHILD_REGISTRY, registry);
        Self::spawn(cmd, isolation, extra)
    }

    fn spawn(mut cmd: Command, isolation: &Isolation, extra: &[(&str, &str)]) -> Self {
        let s = &isolation.settings;
        let log = std::env::temp_dir().join(format!("troupe-child-{}.log", s.instance.id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("child log");
        cmd.env("TROUPE_ENV", "test")
            .env("TROUPE__DATABASE__URL", &s.database.url)
            .env("TROUPE__REDIS__URL", &s.redis.url)
            .env("TROUPE__REDIS__KEY_PREFIX", &s.redis.key_prefix)
            .env("TROUPE__INSTANCE__ID", &s.instance.id)
            .env("TROUPE__HTTP__PORT", "0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("child log"))
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("troupe starts"),
            address: None,
        }
    }

    /// Like [`Self::start`], listening for HTTP on a free port of its own, and waits until the
    /// service answers `/health/live`: its own `/metrics` are then the process's alone.
    pub async fn serving(isolation: &Isolation, extra: &[(&str, &str)]) -> Self {
        Self::until_serving(extra, |env| Self::start(isolation, env)).await
    }

    /// Like [`Self::start_test_domains`], and waits as [`Self::serving`] does.
    pub async fn serving_test_domains(
        isolation: &Isolation,
        registry: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::until_serving(extra, |env| {
            Self::start_test_domains(isolation, registry, env)
        })
        .await
    }

    /// Like [`Self::serving`] on `port`: a restarted service keeps its address.
    pub async fn serving_on(isolation: &Isolation, port: u16, extra: &[(&str, &str)]) -> Self {
        Self::until_serving_on(port, extra, |env| Self::start(isolation, env)).await
    }

    /// A port that was free a moment ago.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    async fn until_serving(
        extra: &[(&str, &str)],
        start: impl FnOnce(&[(&str, &str)]) -> Self,
    ) -> Self {
        Self::until_serving_on(Self::free_port(), extra, start).await
    }

    async fn until_serving_on(
        port: u16,
        extra: &[(&str, &str)],
        start: impl FnOnce(&[(&str, &str)]) -> Self,
    ) -> Self {
        let port = port.to_string();
        let mut env = extra.to_vec();
        env.push(("TROUPE__HTTP__PORT", port.as_str()));
        let mut service = start(&env);
        let address = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while client
            .get(format!("{address}/health/live"))
            .send()
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the service answers on {address}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        service.address = Some(address);
        service
    }

    /// The typed client of the inventory API of a service started with [`Self::serving`].
    pub fn inventory(&self) -> super::client::InventoryClient {
        let address = self.address.as_deref().expect("started with serving()");
        super::client::InventoryClient::new(reqwest::Client::new(), address)
    }

    /// GET `path` from a service started with [`Self::serving`].
    pub async fn get(&self, path: &str) -> reqwest::Response {
        let address = self.address.as_deref().expect("started with serving()");
        reqwest::get(format!("{address}{path}"))
            .await
            .expect("the service answers")
    }

    /// The value of one series of the service's `/metrics`, named with its labels as the
    /// exposition writes them (`troupe_entities_in_memory{domain="inventory"}`); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        super::series_value(&text, series)
    }

    /// SIGKILL, and reap.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("reaped");
    }

    /// Sends `signal` (`"TERM"`, `"INT"`), as an orchestrator or Ctrl-C would; returns at once
    /// (see [`Self::wait`]).
    pub async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the child is running");
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success(), "SIG{signal} sent to {pid}");
    }

    /// Waits for the process to exit by itself; returns its status.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().await.expect("reaped")
    }
}
