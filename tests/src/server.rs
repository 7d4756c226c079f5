//! A test API server and the kubectl that talks to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::build::{Built, BUILD_COMMAND};

/// How long the server may take to answer `/readyz` after it starts.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// How long it may take to stop after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A running test API server: its own etcd and data in a temporary directory, serving on a
/// free loopback port, with a kubeconfig that carries its token. Dropping it kills the server
/// and removes the directory.
#[derive(Debug)]
pub struct ApiServer {
    built: Built,
    dir: tempfile::TempDir,
    token: String,
    child: Option<Child>,
    port: u16,
}

impl ApiServer {
    /// Starts a server and waits until it is ready. When it is not built, this fails with the
    /// command that builds it (under `CI=true` too: the tests never pass without it).
    pub fn start() -> Result<ApiServer> {
        let built = Built::find().with_context(|| {
            format!("the end-to-end tests need the test API server: run `{BUILD_COMMAND}`")
        })?;
        let dir = tempfile::Builder::new()
            .prefix("lb-e2e-apiserver-")
            .tempdir()
            .context("creating the server's temporary directory")?;
        let mut server = ApiServer {
            built,
            dir,
            token: random_token()?,
            child: None,
            port: 0,
        };
        server.launch()?;
        Ok(server)
    }

    /// Stops the server and starts it again on the same data (the port changes; the
    /// kubeconfig is rewritten).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The kubeconfig naming this server, its CA and the token.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// kubectl with this server's kubeconfig.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            bin: self.built.kubectl.clone(),
            kubeconfig: self.kubeconfig(),
        }
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn launch(&mut self) -> Result<()> {
        let data = self.data_dir();
        let ready = data.join("ready");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.built.server)
            .arg("--data-dir")
            .arg(&data)
            .arg("--token")
            .arg(&self.token)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.built.server.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_DEADLINE;
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text
                    .trim()
                    .parse::<u16>()
                    .with_context(|| format!("{} holds no port: {text:?}", ready.display()))?;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "the API server exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the API server was not ready within {READY_DEADLINE:?}:\n{}",
                    self.log_tail()
                );
            }
            // The server writes the file when /readyz answers ok; look again shortly.
            std::thread::sleep(Duration::from_millis(20));
        };
        self.port = port;
        let ca = data.join("certs/apiserver.crt");
        std::fs::write(
            self.kubeconfig(),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    \
                 server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\n\
                 users:\n- name: e2e\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  \
                 context:\n    cluster: e2e\n    user: e2e\n    namespace: default\n\
                 current-context: e2e\n",
                ca = ca.display(),
                token = self.token
            ),
        )?;
        Ok(())
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// kubectl with a test server's kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// A kubectl command with the kubeconfig set and nothing read from the user's.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env_remove("KUBECONFIG")
            .env("HOME", self.kubeconfig.parent().unwrap_or(Path::new("/")));
        cmd
    }

    /// Runs kubectl with `args` (and `stdin`, when given); its stdout, or an error with
    /// its stderr when it fails.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let (ok, out, err) = self.output(args, stdin)?;
        if !ok {
            bail!("kubectl {} failed: {}", args.join(" "), err.trim());
        }
        Ok(out)
    }

    /// Runs kubectl; whether it succeeded, its stdout and its stderr.
    pub fn output(&self, args: &[&str], stdin: Option<&str>) -> Result<(bool, String, String)> {
        let mut child = self
            .command()
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `kubectl apply -f -` of `manifest` (with `extra` flags such as `--server-side`).
    pub fn apply(&self, manifest: &str, extra: &[&str]) -> Result<String> {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        self.run(&args, Some(manifest))
    }

    /// `kubectl get … -o json`, parsed.
    pub fn get_json(&self, what: &[&str]) -> Result<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        let out = self.run(&args, None)?;
        serde_json::from_str(&out).with_context(|| format!("kubectl get output: {out}"))
    }

    /// A watch: `kubectl get --raw PATH` (a path with `watch=1`), its events read as they
    /// arrive.
    pub fn watch(&self, path: &str) -> Result<Watch> {
        let mut child = self
            .command()
            .args(["get", "--raw", path])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str::<Value>(&line)
                    .with_context(|| format!("a watch line that is not JSON: {line}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Ok(Watch { child, events: rx })
    }
}

/// A running watch; dropping it ends kubectl.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    events: mpsc::Receiver<Result<Value>>,
}

impl Watch {
    /// The next event (`{"type": …, "object": …}`), waiting until `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Result<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("no watch event within the deadline"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let mut err = String::new();
                if let Some(mut stderr) = self.child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err);
                }
                bail!("the watch ended: {}", err.trim())
            }
        }
    }

    /// Events until one of `kind` (`BOOKMARK`, `ERROR`, …) arrives before `deadline`.
    pub fn until(&mut self, kind: &str, deadline: Instant) -> Result<Value> {
        loop {
            let event = self.next(deadline)?;
            if event["type"] == kind {
                return Ok(event);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
