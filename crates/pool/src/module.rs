//! Compiling a module once: admission, the compile deadline, ABI detection,
//! and the on-disk artifact cache.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmer::sys::{Cranelift, EngineBuilder, NativeEngineExt};
use wasmer::{Engine, ExternType, FunctionType, Module, Type};

use rustmq_etl_core::{ModuleSettings, ModuleSpec};

use crate::admission::{self, Admitted, CompileLimits, Refusal};
use crate::budget::Budget;
use crate::error::LoadError;
use crate::limits::LimitingTunables;

/// Which contract a module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// `docs/abi.md` version 1: the whole message in, edits out.
    V1,
    /// The earlier single-function form: payload in, payload out.
    Legacy,
}

/// A compiled module version, shared by every worker thread.
pub(crate) struct CompiledModule {
    pub(crate) id: String,
    pub(crate) version: u64,
    pub(crate) engine: Engine,
    pub(crate) module: Module,
    pub(crate) abi: Abi,
    pub(crate) settings: ModuleSettings,
    /// The occurrence's metric labels (`ModuleSpec::labels`), made once.
    pub(crate) labels: Vec<(&'static str, String)>,
    /// Bytes one bulk operation of a call may move: the time budget times
    /// the calibrated rate (`calibrate.rs`).
    pub(crate) bulk_allowance: i64,
    pub(crate) from_cache: bool,
    /// Guest log lines past the per-call limit, by every instance of this
    /// version (on any thread; a rare path, so one shared counter).
    pub(crate) log_lines_dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("abi", &self.abi)
            .finish_non_exhaustive()
    }
}

/// An engine for one module: Cranelift with the admitted features, its own
/// budget middleware (one per module: the middleware remembers the globals it
/// added) and the memory caps admission computed.
pub(crate) fn engine(admitted: &Admitted) -> Engine {
    let mut compiler = Cranelift::default();
    // One thread: Cranelift would start a pool as large as the machine for
    // every compilation, which a reload runs beside the workers serving
    // messages (and which keeps running past its deadline, see
    // `compile_with_deadline`).
    compiler.num_threads(std::num::NonZero::<usize>::MIN);
    wasmer::sys::CompilerConfig::push_middleware(&mut compiler, Arc::new(Budget::default()));
    let mut engine: Engine = EngineBuilder::new(compiler)
        .set_features(Some(admission::features()))
        .into();
    engine.set_tunables(LimitingTunables::new(admitted));
    engine
}

/// Bumped whenever the way modules are compiled changes (instrumentation,
/// features, engine settings), so that old artifacts are never loaded.
const COMPILE_SETTINGS: &str = "wasmer-7.4.2/cranelift/budget-checks/wasm2+extended-const/v7";

/// Compiled artifacts on disk, keyed by the module bytes' hash and the compile
/// settings, each authenticated with a key only this cache's owner can read.
///
/// Artifacts are native code that runs unchecked, so the cache trusts nothing
/// it did not write itself (`docs/abi.md`, "The artifact cache"):
///
/// - the directory must belong to the user running the engine and must not be
///   writable by anyone else; [`ArtifactCache::new`] refuses it otherwise;
/// - a random 256-bit key is made in the directory on first use (`key`, mode
///   0600; refused if anyone else may read or write it);
/// - every artifact carries an HMAC-SHA256 under that key of the compile
///   settings, the target, the module's hash and the artifact; one that does
///   not verify (written by another program, another engine build, another
///   machine's cache, or damaged) is ignored and replaced.
///
/// A new module version is a new artifact, so the cache is kept within a
/// size ([`ArtifactCache::DEFAULT_MAX_BYTES`], or
/// [`ArtifactCache::max_bytes`]): storing an artifact that takes it past its
/// size removes the artifacts used the longest ago (loading one counts as a
/// use: it refreshes the file's modification time), never the one just stored.
#[derive(Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
    max_bytes: u64,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

const MAGIC: &[u8; 8] = b"RMQETLA2";
const KEY_FILE: &str = "key";
type Tag = Hmac<Sha256>;

impl ArtifactCache {
    /// The artifacts a cache keeps at most unless told otherwise: 1 GiB, some
    /// two thousand of the shipped sample modules' (about 0.5 MiB each).
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

    /// A cache in `dir` (created if missing, private to this user). Fails if
    /// the directory or its key may be written (or the key read) by other users.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        if let Err(e) = private::create_dir(&dir) {
            // (`create_dir` says only "File exists" of a file in the way.)
            if fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "it is there and not a directory",
                ));
            }
            return Err(e);
        }
        private::check(&dir, private::Kind::Dir)?;
        // Files are found by name again at every load and store, on the
        // path checked here (links resolved): no one else may be able to
        // replace the directory on the way to it.
        let dir = fs::canonicalize(&dir)?;
        private::check(&dir, private::Kind::Dir)?;
        private::check_ancestors(&dir)?;
        remove_stale_temporaries(&dir);
        let key = read_or_make_key(&dir)?;
        Ok(ArtifactCache {
            dir,
            key,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        })
    }

    /// The same cache, kept within `bytes` of artifacts.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    fn path(&self, wasm: &[u8]) -> (PathBuf, [u8; 32]) {
        let module_hash: [u8; 32] = Sha256::digest(wasm).into();
        let mut hasher = Sha256::new();
        hasher.update(COMPILE_SETTINGS.as_bytes());
        hasher.update(target().as_bytes());
        hasher.update(module_hash);
        let key: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (self.dir.join(format!("{key}.artifact")), module_hash)
    }

    fn tag(&self, module_hash: &[u8; 32], artifact: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(COMPILE_SETTINGS.as_bytes());
        mac.update(&[0]);
        mac.update(target().as_bytes());
        mac.update(&[0]);
        mac.update(module_hash);
        mac.update(artifact);
        mac
    }

    fn load(&self, wasm: &[u8], engine: &Engine) -> Option<Module> {
        let (path, module_hash) = self.path(wasm);
        let bytes = match private::read_artifact(&path, max_artifact_bytes(wasm)) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(e) => {
                log::warn!("artifact cache: {e}; recompiling");
                return None;
            }
        };
        let authentic = bytes
            .split_at_checked(MAGIC.len() + 32)
            .filter(|(header, _)| &header[..MAGIC.len()] == MAGIC)
            .filter(|(header, artifact)| {
                self.tag(&module_hash, artifact)
                    .verify_slice(&header[MAGIC.len()..])
                    .is_ok()
            });
        let Some((_, artifact)) = authentic else {
            log::warn!(
                "artifact cache: {} was not written by this cache (or is damaged); recompiling",
                path.display()
            );
            return None;
        };
        // SAFETY: the artifact's tag verifies under this cache's private key,
        // over these module bytes and these compile settings: this cache wrote
        // it from `Module::serialize` of an engine configured like this one.
        unsafe { Module::deserialize(engine, artifact.to_vec()) }.ok()
    }

    fn store(&self, wasm: &[u8], module: &Module) {
        let result = (|| -> Result<PathBuf, String> {
            let artifact = module.serialize().map_err(|e| e.to_string())?;
            let (path, module_hash) = self.path(wasm);
            let tag = self.tag(&module_hash, &artifact).finalize().into_bytes();
            let (tmp, mut file) = tempfile_in(&self.dir).map_err(|e| e.to_string())?;
            let written = file
                .write_all(MAGIC)
                .and_then(|()| file.write_all(&tag))
                .and_then(|()| file.write_all(&artifact))
                .and_then(|()| file.sync_all())
                .and_then(|()| fs::rename(&tmp, &path));
            if written.is_err() {
                // A full disk, say: leave nothing half-written behind.
                let _ = fs::remove_file(&tmp);
            }
            written.map_err(|e| e.to_string())?;
            Ok(path)
        })();
        match result {
            Ok(stored) => self.keep_within_size(&stored),
            Err(e) => log::warn!(
                "artifact cache: cannot store an artifact in {}: {e}",
                self.dir.display()
            ),
        }
    }

    /// Removes the artifacts used the longest ago (by modification time,
    /// which a load refreshes) until those left take at most `max_bytes`;
    /// never `stored`, the one just written. Only files named as
    /// [`ArtifactCache::path`] names them count: nothing else in the
    /// directory is removed. Another process loading one removed meanwhile
    /// finds it gone and compiles the module.
    fn keep_within_size(&self, stored: &Path) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut total = 0u64;
        let mut others: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            if !is_artifact_name(&entry.file_name()) {
                continue;
            }
            // `DirEntry::metadata` does not follow a link.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let path = entry.path();
            total = total.saturating_add(meta.len());
            if path != stored {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                others.push((used, meta.len(), path));
            }
        }
        if total <= self.max_bytes {
            return;
        }
        others.sort();
        let (mut removed, mut freed) = (0usize, 0u64);
        for (_, len, path) in others {
            if total <= self.max_bytes {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    freed += len;
                }
                // Another process sharing the cache removed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    log::warn!("artifact cache: cannot remove {}: {e}", path.display());
                    continue;
                }
            }
            total -= len;
        }
        if removed > 0 {
            log::info!(
                "artifact cache: removed the {removed} artifact(s) used the longest ago \
                 ({freed} bytes) to keep {} within {} bytes",
                self.dir.display(),
                self.max_bytes
            );
        }
    }
}

/// Whether `name` is one [`ArtifactCache::path`] makes: 64 lower-case
/// hexadecimal digits and `.artifact`.
fn is_artifact_name(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.strip_suffix(".artifact"))
        .is_some_and(|hash| {
            hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// The largest artifact read back for a module of `wasm`'s size: native code
/// is a few times the size of its WebAssembly (the shipped modules' artifacts
/// are 2–5 times), so anything far larger was not written by this cache.
fn max_artifact_bytes(wasm: &[u8]) -> u64 {
    (wasm.len() as u64)
        .saturating_mul(64)
        .saturating_add(16 << 20)
}

/// Removes temporary files that a store killed half-way left, an hour or
/// more old (a store under way now is younger).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(".tmp-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|age| age >= Duration::from_secs(3600));
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn target() -> String {
    wasmer::sys::Target::default().triple().to_string()
}

/// The cache's key in `dir`: read if it exists (and is private), made
/// otherwise. A new key is written whole to a temporary file and linked into
/// place, so that no one ever reads a key half-written (a run killed while
/// writing it leaves only a temporary file).
fn read_or_make_key(dir: &Path) -> std::io::Result<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    if fs::symlink_metadata(&path).is_err() {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
        let (tmp, mut file) = tempfile_in(dir)?;
        let written = file
            .write_all(&key)
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::hard_link(&tmp, &path));
        let _ = fs::remove_file(&tmp);
        match written {
            Ok(()) => return Ok(key),
            // Another process made it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    private::check(&path, private::Kind::Secret)?;
    let bytes = fs::read(&path)?;
    bytes[..].try_into().map_err(|_| {
        std::io::Error::other(format!(
            "{} is not a cache key ({} bytes, not 32): remove it (the artifacts it \
             signed are then compiled afresh)",
            path.display(),
            bytes.len()
        ))
    })
}

/// Files only this user may touch.
mod private {
    use std::fs;
    use std::path::Path;

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Kind {
        /// Nobody else may write it.
        Dir,
        /// Nobody else may read or write it.
        Secret,
    }

    /// Marks an artifact as just used, for the cache's size limit: its
    /// modification time is now (best effort: a file system that refuses
    /// leaves it to be removed earlier than it might).
    fn used(file: &fs::File) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }

    #[cfg(unix)]
    pub(super) fn create_dir(dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }

    #[cfg(unix)]
    pub(super) fn create_file(path: &Path) -> std::io::Result<fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    }

    #[cfg(unix)]
    pub(super) fn check(path: &Path, kind: Kind) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::symlink_metadata(path)?;
        // SAFETY: `geteuid` has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let forbidden = match kind {
            Kind::Dir => 0o022,
            Kind::Secret => 0o077,
        };
        let problem = if meta.file_type().is_symlink() {
            Some("is a symbolic link".to_owned())
        } else if meta.uid() != me {
            Some(format!(
                "belongs to user {}, not to this user ({me})",
                meta.uid()
            ))
        } else if meta.mode() & forbidden != 0 {
            Some(format!(
                "has mode {:o}: other users may {}",
                meta.mode() & 0o777,
                if kind == Kind::Dir {
                    "write to it"
                } else {
                    "read or write it"
                }
            ))
        } else if (kind == Kind::Dir) != meta.is_dir() {
            Some(if kind == Kind::Dir {
                "is not a directory".to_owned()
            } else {
                "is not a file".to_owned()
            })
        } else {
            None
        };
        match problem {
            Some(problem) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} {problem}; the artifact cache holds native code and must be private",
                    path.display()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Refuses a directory whose ancestors someone else could rename or
    /// replace: each must belong to this user or to root, and one that
    /// others may write must be sticky (as `/tmp` is: there, only an entry's
    /// owner may rename it).
    #[cfg(unix)]
    pub(super) fn check_ancestors(dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        // SAFETY: `geteuid` has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        for ancestor in fs::canonicalize(parent)?.ancestors() {
            let meta = fs::metadata(ancestor)?;
            let owner_ok = meta.uid() == me || meta.uid() == 0;
            let sticky = meta.mode() & 0o1000 != 0;
            let writable_by_others = meta.mode() & 0o022 != 0;
            if !owner_ok || (writable_by_others && !sticky) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} lies in {}, which {}: they could replace the cache; \
                         the artifact cache holds native code and must be private",
                        dir.display(),
                        ancestor.display(),
                        if owner_ok {
                            format!(
                                "others may write (mode {:o}, not sticky)",
                                meta.mode() & 0o7777
                            )
                        } else {
                            format!("belongs to user {}", meta.uid())
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The artifact at `path`: `None` if there is none; an error if what is
    /// there is not a regular file of this user's of at most `max` bytes
    /// (opened without following a link or waiting on a pipe, so that no
    /// file planted there can make the engine hang or read without end).
    #[cfg(unix)]
    pub(super) fn read_artifact(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read as _;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            }
        };
        let meta = file.metadata()?;
        // SAFETY: `geteuid` has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.uid() != me || meta.len() > max {
            return Err(std::io::Error::other(format!(
                "{} is not an artifact of this cache (not a regular file of this user's of \
                 at most {max} bytes)",
                path.display()
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&file).take(max).read_to_end(&mut bytes)?;
        used(&file);
        Ok(Some(bytes))
    }

    #[cfg(not(unix))]
    pub(super) fn check_ancestors(_: &Path) -> std::io::Result<()> {
        Ok(())
    }

    #[cfg(not(unix))]
    pub(super) fn read_artifact(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read as _;
        match fs::File::open(path) {
            Ok(file) => {
                let mut bytes = Vec::new();
                (&file).take(max).read_to_end(&mut bytes)?;
                used(&file);
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[cfg(not(unix))]
    pub(super) fn create_dir(dir: &Path) -> std::io::Result<()> {
        fs::create_dir_all(dir)
    }

    #[cfg(not(unix))]
    pub(super) fn create_file(path: &Path) -> std::io::Result<fs::File> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    }

    #[cfg(not(unix))]
    pub(super) fn check(_: &Path, _: Kind) -> std::io::Result<()> {
        Ok(())
    }
}

/// A new file in `dir` with a name no other process uses: random, since
/// process ids repeat (a container's first process is always 1) and a run
/// killed half-way leaves its file behind.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let mut attempts = 0;
    loop {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random)
            .map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
        let path = dir.join(format!(".tmp-{:016x}", u64::from_le_bytes(random)));
        match private::create_file(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Compilations that ran past their deadline and still run: their thread
/// cannot be stopped, only waited for.
static OVERDUE_COMPILATIONS: AtomicUsize = AtomicUsize::new(0);
/// With this many overdue compilations running, loads are refused until one ends.
const MAX_OVERDUE_COMPILATIONS: usize = 2;

/// Compiles `wasm` on a thread of its own (Cranelift's work on that thread
/// alone, see [`engine`]) and waits at most `timeout`.
fn compile_with_deadline(
    id: &str,
    engine: &Engine,
    wasm: &[u8],
    timeout: Duration,
) -> Result<Module, LoadError> {
    let compile_error = |message: String| LoadError::Compile {
        module: id.to_owned(),
        message,
    };
    let (engine, wasm) = (engine.clone(), wasm.to_vec());
    let work = move || Module::new(&engine, wasm);
    match on_a_thread_within(&OVERDUE_COMPILATIONS, MAX_OVERDUE_COMPILATIONS, timeout, work) {
        Ok(compiled) => compiled.map_err(|e| compile_error(e.to_string())),
        Err(Late::Overdue(overdue)) => Err(compile_error(format!(
            "{overdue} earlier compilations ran past their deadline and still run; try again when they end"
        ))),
        Err(Late::NoThread(e)) => Err(compile_error(format!("cannot start a compiler thread: {e}"))),
        Err(Late::TimedOut) => Err(compile_error(format!(
            "compiling took longer than {timeout:?} (CompileLimits::compile_timeout)"
        ))),
        Err(Late::Panicked) => Err(compile_error(
            "the compiler failed without an answer (it panicked: a bug of the compiler's)".to_owned(),
        )),
    }
}

/// Why [`on_a_thread_within`] has no answer.
#[derive(Debug)]
enum Late {
    /// This many earlier works ran past their deadline and still run.
    Overdue(usize),
    NoThread(std::io::Error),
    /// Past the deadline: the work runs on, counted as overdue until it ends.
    TimedOut,
    /// The work panicked.
    Panicked,
}

/// Where the work of [`on_a_thread_within`] stands.
const RUNNING: u8 = 0;
const ENDED: u8 = 1;
const GIVEN_UP: u8 = 2;

/// Runs `work` on a thread of its own and waits at most `timeout` for it,
/// unless `overdue` counts `max_overdue` works that ran past their deadline
/// and still run. A work given up is counted in `overdue` until its thread
/// ends, however it ends (a panic included); one that ends as it is given
/// up is not given up after all (its answer is taken).
fn on_a_thread_within<T: Send + 'static>(
    overdue: &'static AtomicUsize,
    max_overdue: usize,
    timeout: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Late> {
    let running = overdue.load(Ordering::SeqCst);
    if running >= max_overdue {
        return Err(Late::Overdue(running));
    }
    /// Marks the work ended as its thread ends (unwinding too), and takes it
    /// off the overdue count if it had been given up.
    struct Ends(Arc<AtomicU8>, &'static AtomicUsize);
    impl Drop for Ends {
        fn drop(&mut self) {
            if self.0.swap(ENDED, Ordering::SeqCst) == GIVEN_UP {
                self.1.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    let state = Arc::new(AtomicU8::new(RUNNING));
    let ends = Ends(state.clone(), overdue);
    let (done, answer) = mpsc::channel();
    std::thread::Builder::new()
        .name("rustmq-etl-compile".to_owned())
        .spawn(move || {
            // Dropped last: the answer is sent before the work counts as ended.
            let _ends = ends;
            let _ = done.send(work());
        })
        .map_err(Late::NoThread)?;
    match answer.recv_timeout(timeout) {
        Ok(value) => Ok(value),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Late::Panicked),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // Counted before it is marked given up, so that its end, which
            // takes it off the count, comes after.
            overdue.fetch_add(1, Ordering::SeqCst);
            if state
                .compare_exchange(RUNNING, GIVEN_UP, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                // An answer sent as the deadline passed is taken; the thread,
                // ending, still takes the work off the count.
                return answer.try_recv().map_err(|_| Late::TimedOut);
            }
            // It ended meanwhile: its answer, if any, was sent first.
            overdue.fetch_sub(1, Ordering::SeqCst);
            answer.try_recv().map_err(|_| Late::Panicked)
        }
    }
}

/// Compiles (or loads from the cache) and checks a module's exports and imports.
pub(crate) fn compile(
    spec: &ModuleSpec,
    version: u64,
    wasm: &[u8],
    settings: &CompileSettings,
) -> Result<CompiledModule, LoadError> {
    let (id, config) = (spec.id.as_str(), &spec.settings);
    if config.memory_limit_bytes < wasmer::WASM_PAGE_SIZE || config.execution_timeout_ms == 0 {
        return Err(LoadError::Limits {
            module: id.to_owned(),
            message: "memory_limit_bytes must be at least one 64 KiB page and execution_timeout_ms at least 1"
                .to_owned(),
        });
    }
    let module_id = id.to_owned();
    let admitted =
        admission::admit(wasm, &settings.limits, config.memory_limit_bytes).map_err(|refusal| {
            match refusal {
                Refusal::Invalid(message) => LoadError::Compile {
                    module: module_id,
                    message: format!("not a valid WebAssembly module: {message}"),
                },
                Refusal::Rule(message) => LoadError::Refused {
                    module: module_id,
                    message,
                },
                Refusal::Memory(message) => LoadError::Refused {
                    module: module_id,
                    message: format!("cannot start within its memory limit: {message}"),
                },
            }
        })?;
    let engine = engine(&admitted);
    let cached = settings.cache.as_ref().and_then(|c| c.load(wasm, &engine));
    let from_cache = cached.is_some();
    let module = match cached {
        Some(module) => module,
        None => {
            let module = compile_with_deadline(id, &engine, wasm, settings.limits.compile_timeout)?;
            if let Some(cache) = &settings.cache {
                cache.store(wasm, &module);
            }
            module
        }
    };
    let abi = check_abi(&module).map_err(|message| LoadError::Abi {
        module: id.to_owned(),
        message,
    })?;
    Ok(CompiledModule {
        id: id.to_owned(),
        version,
        engine,
        module,
        abi,
        bulk_allowance: i64::try_from(
            config
                .execution_timeout_ms
                .saturating_mul(settings.bulk_bytes_per_ms),
        )
        .unwrap_or(i64::MAX / 4)
        .min(i64::MAX / 4),
        settings: config.clone(),
        labels: spec.labels(),
        from_cache,
        log_lines_dropped: Arc::default(),
    })
}

/// What compiling a module takes besides the module: the limits it must
/// meet, the rate that turns a time budget into a bulk allowance, and the
/// artifact cache. A [`Pool`](crate::Pool) holds one; a caller that compiles
/// for its own [`LocalPool`](crate::LocalPool) makes one.
#[derive(Debug, Clone)]
pub struct CompileSettings {
    /// Limits on a module's shape and on compiling it.
    pub limits: CompileLimits,
    /// Bytes of bulk memory work per millisecond of a call's budget (see
    /// [`bulk_bytes_per_ms`](crate::bulk_bytes_per_ms)).
    pub bulk_bytes_per_ms: u64,
    /// Where compiled artifacts are kept, if anywhere.
    pub cache: Option<ArtifactCache>,
}

fn func(params: &[Type], results: &[Type]) -> FunctionType {
    FunctionType::new(params.to_vec(), results.to_vec())
}

/// The imports a guest may have: `rmq_etl.log` and nothing else.
pub(crate) const LOG_IMPORT: (&str, &str) = ("rmq_etl", "log");

fn check_abi(module: &Module) -> Result<Abi, String> {
    use Type::{I32, I64};
    // Admission allowed no import but `rmq_etl.log`; here its signature.
    for import in module.imports() {
        if !matches!(import.ty(), ExternType::Function(f) if *f == func(&[I32, I32, I32], &[])) {
            return Err(format!(
                "imports `{}.{}` as {:?}; it must be a function (i32, i32, i32) -> ()",
                import.module(),
                import.name(),
                import.ty()
            ));
        }
    }
    let export = |name: &str| {
        module
            .exports()
            .find(|e| e.name() == name)
            .map(|e| e.ty().clone())
    };
    let has_func = |name: &str, ty: FunctionType| matches!(export(name), Some(ExternType::Function(f)) if f == ty);
    if !matches!(export("memory"), Some(ExternType::Memory(_))) {
        return Err("exports no `memory`".to_owned());
    }
    let v1 = [
        ("rmq_abi_version", func(&[], &[I32])),
        ("rmq_alloc", func(&[I32], &[I32])),
        ("rmq_init", func(&[I32, I32], &[I64])),
        ("rmq_transform", func(&[I32, I32], &[I64])),
    ];
    if v1.iter().all(|(name, ty)| has_func(name, ty.clone())) {
        return Ok(Abi::V1);
    }
    if has_func("allocate", func(&[I32], &[I32]))
        && has_func("transform", func(&[I32, I32], &[I32]))
    {
        return Ok(Abi::Legacy);
    }
    let missing: Vec<String> = v1
        .iter()
        .filter(|(name, ty)| !has_func(name, ty.clone()))
        .map(|(name, ty)| format!("`{name}` {ty}"))
        .collect();
    Err(format!(
        "is not a rustmq-etl module: it lacks {} (see docs/abi.md), and is not a legacy module either (`allocate(i32) -> i32` and `transform(i32, i32) -> i32`)",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `overdue` reads `n` (the thread of a work given up ends
    /// on its own time).
    fn overdue_reaches(overdue: &AtomicUsize, n: usize) {
        let started = std::time::Instant::now();
        while overdue.load(Ordering::SeqCst) != n {
            assert!(started.elapsed() < Duration::from_secs(60), "overdue stuck");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A work that panics is an answer of its own and never counts as
    /// overdue; one given up counts until its thread ends, however it ends;
    /// with the most overdue, nothing starts.
    #[test]
    fn works_given_up_count_as_overdue_until_they_end_even_by_a_panic() {
        static OVERDUE: AtomicUsize = AtomicUsize::new(0);
        let long = Duration::from_secs(60);
        let answer = on_a_thread_within(&OVERDUE, 1, long, || 7);
        assert_eq!(answer.unwrap(), 7);
        let panicked = on_a_thread_within(&OVERDUE, 1, long, || -> u8 { panic!("a compiler bug") });
        assert!(matches!(panicked, Err(Late::Panicked)), "{panicked:?}");
        assert_eq!(OVERDUE.load(Ordering::SeqCst), 0);

        for panics in [false, true] {
            let (release, wait) = mpsc::channel::<()>();
            let late = on_a_thread_within(&OVERDUE, 1, Duration::from_millis(10), move || {
                let _ = wait.recv();
                assert!(!panics, "a compiler bug after the deadline");
            });
            assert!(matches!(late, Err(Late::TimedOut)), "{late:?}");
            assert_eq!(OVERDUE.load(Ordering::SeqCst), 1);
            let refused = on_a_thread_within(&OVERDUE, 1, long, || 7);
            assert!(matches!(refused, Err(Late::Overdue(1))), "{refused:?}");
            drop(release);
            overdue_reaches(&OVERDUE, 0);
            assert_eq!(on_a_thread_within(&OVERDUE, 1, long, || 8).unwrap(), 8);
        }
    }

    /// The text of the item starting at `start` in `source`, to its closing
    /// brace at the start of a line.
    fn item<'a>(source: &'a str, start: &str) -> &'a str {
        let from = source.find(start).expect("the item is there");
        let to = source[from..].find("\n}\n").expect("the item ends") + from;
        &source[from..to]
    }

    /// The names `keep_within_size` may remove are those `path` makes.
    #[test]
    fn artifact_names_are_those_the_cache_makes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::new(dir.path()).unwrap();
        for wasm in [&b""[..], b"\0asm", &[7; 1000]] {
            let (path, _) = cache.path(wasm);
            assert!(is_artifact_name(path.file_name().unwrap()), "{path:?}");
        }
        let hex = "0123456789abcdef".repeat(4);
        for name in [
            "key".to_owned(),
            ".tmp-0123456789abcdef".to_owned(),
            "firmware.artifact".to_owned(),
            format!("{}.artifact", hex.to_uppercase()),
            format!("{}.artifact", &hex[1..]),
            format!("{hex}0.artifact"),
            format!("{hex}.artifact.bak"),
            hex.clone(),
        ] {
            assert!(!is_artifact_name(name.as_ref()), "{name}");
        }
    }

    /// A tripwire for the artifact cache: artifacts compiled by an earlier
    /// build are kept apart only by `COMPILE_SETTINGS`, bumped by hand. The
    /// code that decides what compiled modules look like (the budget
    /// middleware, the tunables' memory and table styles, the features, the
    /// engine) and the wasmer version are fingerprinted here: when this
    /// fails, compiling may have changed: bump `COMPILE_SETTINGS` if it did,
    /// then record the new fingerprint.
    /// (The budget middleware's own tests are left out: a test added there
    /// changes no compiled module.)
    #[test]
    fn compile_settings_are_bumped_when_compiling_changes() {
        let module = include_str!("module.rs");
        let budget = include_str!("budget.rs");
        let sources = [
            &budget[..budget
                .find("\n#[cfg(test)]")
                .expect("budget.rs has its tests last")],
            include_str!("limits.rs"),
            item(include_str!("admission.rs"), "pub(crate) fn features()"),
            item(module, "pub(crate) fn engine("),
        ];
        let fingerprint = sources.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, text| {
            text.bytes().chain([0]).fold(hash, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        });
        let lock = include_str!("../../../Cargo.lock");
        let wasmer = lock
            .split("\n[[package]]\n")
            .find(|p| p.starts_with("name = \"wasmer\"\n"))
            .and_then(|p| p.lines().nth(1))
            .and_then(|l| l.strip_prefix("version = \""))
            .and_then(|v| v.strip_suffix('"'))
            .expect("wasmer in Cargo.lock");
        assert!(
            COMPILE_SETTINGS.starts_with(&format!("wasmer-{wasmer}/")),
            "wasmer is {wasmer} now: bump COMPILE_SETTINGS ({COMPILE_SETTINGS})"
        );
        // The settings and the fingerprint of the code they were bumped for.
        const RECORDED: (&str, u64) = (
            "wasmer-7.4.2/cranelift/budget-checks/wasm2+extended-const/v7",
            2_560_665_333_690_958_644,
        );
        assert_eq!(
            (COMPILE_SETTINGS, fingerprint),
            RECORDED,
            "the code that decides how modules compile changed: if compiled modules change, \
             bump COMPILE_SETTINGS; then record both here"
        );
    }
}
