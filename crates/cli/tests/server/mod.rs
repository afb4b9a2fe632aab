//! A `rustmq-etl serve` process on a free loopback port, and an HTTP client
//! for it.

#![allow(dead_code)] // Each test binary uses its own part of it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The tool, as the tests run it: its artifact cache (by default in the
/// user's `~/.cache`) in the build's own temporary directory, so that the
/// tests neither fill nor depend on the cache of whoever runs them.
pub fn tool() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rustmq-etl"));
    command.env("XDG_CACHE_HOME", cache_home());
    command
}

/// Where the tests' runs of the tool keep their artifact cache.
pub fn cache_home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests-cache")
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../../fixtures")
}

/// Copies the files of `from` into a new directory `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

pub struct Server {
    child: Mutex<Child>,
    base: String,
    log: Arc<Mutex<String>>,
    /// The thread reading the log, until the process's standard error ends.
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Server {
    /// Starts `rustmq-etl serve --listen 127.0.0.1:0 ARGS` and waits until it
    /// says where it listens.
    pub fn start(args: &[&str]) -> Server {
        Server::start_in(Path::new("."), args)
    }

    /// [`Server::start`] with `dir` as the working directory.
    pub fn start_in(dir: &Path, args: &[&str]) -> Server {
        let mut child = tool()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            // The log as the server's own defaults make it.
            .env_remove("RUST_LOG")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (address, listening) = mpsc::channel();
        let written = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(" on http://") {
                    let _ = address.send(line[at + 4..].to_owned());
                }
                let mut log = written.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let base = listening
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the server did not start:\n{}", log.lock().unwrap()));
        Server {
            child: Mutex::new(child),
            base,
            log,
            reader: Mutex::new(Some(reader)),
        }
    }

    /// Where it listens: `127.0.0.1:PORT`.
    #[allow(dead_code)] // (not every test binary using this module needs it)
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The process's id.
    #[allow(dead_code)] // (not every test binary using this module needs it)
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once `ready` holds for it, or as it stands after 30 s: a line
    /// the server wrote before an answer may still be on its way through
    /// the pipe when the answer comes.
    #[allow(dead_code)] // (not every test binary using this module needs it)
    pub fn log_once(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if ready(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a request on a new connection: the status and the body.
    pub fn send(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.send_bytes(method, path, body.as_bytes())
    }

    pub fn send_bytes(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        self.try_send_bytes(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    /// Like `send`, but `None` when no answer came (refused, reset, 10 s).
    pub fn try_send(&self, method: &str, path: &str, body: &str) -> (Option<u16>, String) {
        match self.try_send_bytes(method, path, body.as_bytes()) {
            Ok((code, text)) => (Some(code), text),
            Err(e) => (None, e.to_string()),
        }
    }

    /// Sends a request with `headers` (a JSON `Content-Type` unless they
    /// give one): the status, the answer's headers (names in lower case)
    /// and its body.
    #[allow(dead_code)] // (not every test binary using this module needs it)
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let agent = agent();
        let url = format!("{}{path}", self.base);
        let has_type = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        let sent = match method {
            "GET" => {
                let mut request = agent.get(&url);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                request.call()
            }
            "POST" => {
                let mut request = agent.post(&url);
                if !has_type {
                    request = request.header("content-type", "application/json");
                }
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                request.send(body)
            }
            other => panic!("no method {other} in the test client's exchange"),
        };
        let mut response = sent.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        let code = response.status().as_u16();
        let answered: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    value.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let text = response.body_mut().read_to_string().unwrap();
        (code, answered, text)
    }

    fn try_send_bytes(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, String), ureq::Error> {
        let agent = agent();
        let url = format!("{}{path}", self.base);
        let mut response = match method {
            "GET" => agent.get(&url).call()?,
            "DELETE" => agent.delete(&url).call()?,
            "POST" => agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body)?,
            "PUT" => agent
                .put(&url)
                .header("content-type", "application/json")
                .send(body)?,
            other => panic!("no method {other} in the test client"),
        };
        let code = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        Ok((code, text))
    }

    /// Sends the process signal `name` (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.lock().unwrap().id().to_string();
        let status = Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, and for its log to be read to the end.
    pub fn wait(&self) -> ExitStatus {
        let status = self.child.lock().unwrap().wait().unwrap();
        if let Some(reader) = self.reader.lock().unwrap().take() {
            let _ = reader.join();
        }
        status
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn stop(&self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP client that takes every status as an answer, and gives up after
/// a minute.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}
