//! A Tessera cluster for `tessera-bench compare`: `tessera playground` (3 stores, one
//! placement member, development TLS, fsync on) as a child process on loopback, in a
//! directory of the caller's, stopped when dropped.
//!
//! The `tessera` binary is the one next to this benchmark's (the same target directory and
//! profile), built with `cargo build -p tessera` first if it is missing, or `--tessera-bin`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long the playground may take to come up (build not included).
const READY: Duration = Duration::from_secs(120);

/// A running playground (see the module documentation).
#[derive(Debug)]
pub struct TesseraCluster {
    child: Option<Child>,
    dir: PathBuf,
    cluster_id: u64,
    certs: PathBuf,
    placement: Vec<(u64, SocketAddr)>,
}

impl TesseraCluster {
    /// Starts `stores` stores and one placement member with data under `dir`, and waits
    /// until the playground reports the cluster ready (every store up, ranges replicated).
    ///
    /// # Errors
    /// The binary is missing, no free ports, or the cluster does not come up in time (the
    /// error carries the playground's last lines).
    pub fn start(binary: &Path, dir: &Path, stores: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let base = free_base().context("no 40 consecutive free loopback ports")?;
        let mut child = Command::new(binary)
            .args(["playground", "--stores", &stores.to_string(), "--placement", "1"])
            .args(["--data-dir", "data", "--base-port", &base.to_string()])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} playground", binary.display()))?;
        let stdout = child.stdout.take().context("the playground's stdout")?;
        let (lines, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    // Nobody listens any more: keep draining so the playground never blocks.
                    continue;
                }
            }
        });
        let mut cluster = Self {
            child: Some(child),
            dir: dir.to_path_buf(),
            cluster_id: 0,
            certs: PathBuf::new(),
            placement: Vec::new(),
        };
        let deadline = Instant::now() + READY;
        let mut last = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match seen.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let ready = line.contains(" ready in ");
                    last.push(line);
                    if last.len() > 20 {
                        last.remove(0);
                    }
                    if ready {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the playground stopped before it was ready:\n{}", last.join("\n"))
                }
            }
            if Instant::now() >= deadline {
                bail!("the playground was not ready within {READY:?}:\n{}", last.join("\n"));
            }
        }
        cluster.read_profile()?;
        Ok(cluster)
    }

    fn read_profile(&mut self) -> Result<()> {
        let profile = Profile::load(&self.dir.join(".tessera-profile.toml"))?
            .context("the playground wrote no profile")?;
        self.cluster_id = profile.cluster_id.context("the profile has no cluster_id")?;
        self.certs = profile.certs.context("the profile has no certs_dir")?;
        self.placement = profile.placement;
        Ok(())
    }

    /// The cluster id.
    #[must_use]
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The development TLS directory.
    #[must_use]
    pub fn certs(&self) -> &Path {
        &self.certs
    }

    /// The placement members.
    #[must_use]
    pub fn placement(&self) -> &[(u64, SocketAddr)] {
        &self.placement
    }

    /// The process ids of the nodes (the playground's children), for CPU accounting.
    #[must_use]
    pub fn node_pids(&self) -> Vec<u32> {
        let Some(child) = &self.child else { return Vec::new() };
        let pid = child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Stops every node: SIGTERM to the playground, which stops its nodes; SIGKILL after
    /// 30 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for TesseraCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the playground's client profile (`.tessera-profile.toml`) says, each part optional.
#[derive(Debug, Default)]
pub struct Profile {
    /// The cluster id.
    pub cluster_id: Option<u64>,
    /// The development TLS directory.
    pub certs: Option<PathBuf>,
    /// The placement members.
    pub placement: Vec<(u64, SocketAddr)>,
}

impl Profile {
    /// Reads the profile at `path`; `None` if there is no such file.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        let table: toml::Table =
            text.parse().with_context(|| format!("{} is not a client profile", path.display()))?;
        let mut profile = Self {
            cluster_id: table
                .get("cluster_id")
                .and_then(toml::Value::as_integer)
                .and_then(|id| u64::try_from(id).ok()),
            certs: table.get("certs_dir").and_then(toml::Value::as_str).map(PathBuf::from),
            placement: Vec::new(),
        };
        let members = table.get("placement").and_then(toml::Value::as_array);
        for member in members.into_iter().flatten() {
            let text = member.as_str().context("a placement member that is not a string")?;
            profile.placement.push(parse_member(text)?);
        }
        Ok(Some(profile))
    }
}

/// Parses `ID=ADDR`.
///
/// # Errors
/// Says what is wrong.
pub fn parse_member(text: &str) -> Result<(u64, SocketAddr)> {
    let (id, addr) = text.split_once('=').with_context(|| format!("`{text}`: not ID=ADDR"))?;
    Ok((
        id.trim().parse().with_context(|| format!("`{id}`: not a node id"))?,
        addr.trim().parse().with_context(|| format!("`{addr}`: not an address"))?,
    ))
}

/// A base port with the 40 ports the playground uses above it free (UDP and TCP).
fn free_base() -> Option<u16> {
    for _ in 0..200 {
        let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
        let base = probe.local_addr().ok()?.port();
        drop(probe);
        if base > 65_000 - 40 {
            continue;
        }
        let free = (0..40).all(|offset| {
            let addr = SocketAddr::from(([127, 0, 0, 1], base + offset));
            UdpSocket::bind(addr).is_ok() && TcpListener::bind(addr).is_ok()
        });
        if free {
            return Some(base);
        }
    }
    None
}

/// The `tessera` binary: `explicit` if given, else the one in this benchmark's target
/// directory, built with the same profile if missing.
///
/// # Errors
/// It is missing and cannot be built.
pub fn tessera_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("this benchmark's own path")?;
    let dir = exe.parent().context("the benchmark's directory")?;
    let bin = dir.join("tessera");
    if bin.exists() {
        return Ok(bin);
    }
    let release = dir.ends_with("release");
    eprintln!("building tessera ({}) …", if release { "release" } else { "dev" });
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    command
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["build", "-p", "tessera", "--bin", "tessera"]);
    if release {
        command.arg("--release");
    }
    let status = command.status().with_context(|| format!("running {cargo} build"))?;
    if !status.success() || !bin.exists() {
        bail!("could not build {}; give --tessera-bin PATH", bin.display());
    }
    Ok(bin)
}
