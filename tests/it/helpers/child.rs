//! The real `troupe` binary as a child process, for crash tests.

use std::process::Stdio;

use tokio::process::{Child, Command};

use super::{Isolation, config_dir};

/// A `troupe serve` child process over a test's isolated data.
pub struct ChildService {
    child: Child,
}

impl ChildService {
    /// Starts `troupe serve` with the isolation's settings plus `extra` environment variables.
    /// The instance id stays the same across restarts, as it would in a deployment.
    pub fn start(isolation: &Isolation, extra: &[(&str, &str)]) -> Self {
        let s = &isolation.settings;
        let log = std::env::temp_dir().join(format!("troupe-child-{}.log", s.instance.id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("child log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_troupe"));
        cmd.arg("serve")
            .arg("--config-dir")
            .arg(config_dir())
            .env("TROUPE_ENV", "test")
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
        }
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
