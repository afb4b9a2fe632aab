//! `serve`'s watch of its configuration and modules: a change reloads them.
//!
//! What is watched is where the paths lead (symlinks followed) and also the
//! directories whose entries decide where they lead — the one holding each
//! given path and each symlink met on the way — where a link may be swapped
//! for one to another target: how Kubernetes updates a mounted ConfigMap
//! (`etl.yaml -> ..data/etl.yaml`, `..data -> ..2026_12_03_…` replaced), or
//! how a release directory is switched (`current -> r2`). A change anywhere
//! watched that leaves the paths leading elsewhere, or that removes or makes
//! a target directory, is a change too, after which the targets are watched
//! anew.
//! Every place is watched by its resolved path: the kernel watches a
//! directory, not a name.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// How long the files must be quiet after a change before they are
/// reloaded: a burst of writes is one reload.
const QUIET_BEFORE_RELOAD: Duration = Duration::from_millis(250);

/// The longest a change waits for quiet: files that never stop changing are
/// still reloaded this long after the first change.
const LONGEST_WAIT_BEFORE_RELOAD: Duration = Duration::from_secs(1);

/// The watch; dropping it stops it.
pub(crate) struct Watch {
    _watcher: Arc<Mutex<RecommendedWatcher>>,
}

/// The paths as given (made absolute, symlinks kept).
#[derive(Clone)]
struct Given {
    config: PathBuf,
    modules: PathBuf,
}

/// Where the given paths lead now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    config: PathBuf,
    config_is_dir: bool,
    /// In a configuration directory: where each configuration file leads.
    config_files: Vec<PathBuf>,
    modules: PathBuf,
    /// Where each module file leads.
    module_files: Vec<PathBuf>,
    /// The directories, resolved, whose entries decide where the given
    /// paths lead.
    deciding: Vec<PathBuf>,
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."))
}

/// A name a configuration directory's loading reads: not hidden, with an
/// extension of a format (`.yaml`, `.YML`, `.json`, …).
fn is_config_file(path: &Path) -> bool {
    !is_hidden(path) && rustmq_etl_config::Format::from_path(path).is_some()
}

/// A name a module may have (`<module_id>.wasm`; an id does not start with
/// a dot, so a hidden name is a temporary file on its way).
fn is_module_file(path: &Path) -> bool {
    !is_hidden(path) && path.extension().and_then(|e| e.to_str()) == Some("wasm")
}

/// Adds to `dirs` the directories, resolved, whose entries decide where
/// `path` leads: the one holding it, and the one holding each symlink met on
/// the way (and, the same way, on the way to each link's target).
fn deciding_dirs(path: &Path, dirs: &mut Vec<PathBuf>) {
    follow_links(path, 0, dirs, &mut HashSet::new());
}

/// [`deciding_dirs`], each link followed once: `seen` holds the links
/// followed (their resolved directory and name). Without it, a link met again
/// under another name (`a -> .`, then `a/a/a/…/file`) was followed again on
/// each way to it, in time exponential in the path's length.
fn follow_links(path: &Path, depth: usize, dirs: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) {
    // (Past this, the kernel would not follow the links either.)
    if depth > 40 {
        return;
    }
    let mut prefix = PathBuf::new();
    for component in path.components() {
        prefix.push(component);
        let link = prefix
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink());
        if !link {
            continue;
        }
        let holder = prefix.parent().unwrap_or(Path::new("/")).to_path_buf();
        let resolved = std::fs::canonicalize(&holder).ok();
        let name = prefix.file_name().unwrap_or_default();
        let key = resolved.as_deref().unwrap_or(&holder).join(name);
        dirs.extend(resolved);
        if !seen.insert(key) {
            continue;
        }
        if let Ok(target) = std::fs::read_link(&prefix) {
            follow_links(&holder.join(target), depth + 1, dirs, seen);
        }
    }
    if let Some(parent) = path.parent() {
        dirs.extend(std::fs::canonicalize(parent).ok());
    }
}

/// Where each entry of `dir` that `wanted` says is one leads (sorted).
fn targets(dir: &Path, wanted: fn(&Path) -> bool) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot watch {}", dir.display()))?;
    let mut targets: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| wanted(path))
        // (One removed meanwhile is simply not there.)
        .filter_map(|path| std::fs::canonicalize(path).ok())
        .collect();
    targets.sort();
    Ok(targets)
}

/// What the watched files were before the service first read them: where
/// the paths led, and each file's size, times and inode. The watch, once
/// set, compares: a change made while the service started (reading,
/// compiling), before anything watched, is reloaded too.
#[derive(PartialEq)]
pub(crate) struct Stamp(Option<(Resolved, Vec<Option<FileStamp>>)>);

/// A file's length, modification time, inode and change time (which no
/// program sets: `cp -p` keeps a time, not this one).
type FileStamp = (u64, std::time::SystemTime, u64, (i64, i64));

impl Stamp {
    pub(crate) fn take(config: &Path, modules: &Path) -> Stamp {
        Stamp(Given::new(config, modules).ok().and_then(|given| {
            let resolved = given.resolve().ok()?;
            let files = std::iter::once(&resolved.config)
                .filter(|_| !resolved.config_is_dir)
                .chain(&resolved.config_files)
                .chain(&resolved.module_files)
                .map(|file| {
                    use std::os::unix::fs::MetadataExt as _;
                    let m = std::fs::metadata(file).ok()?;
                    Some((
                        m.len(),
                        m.modified().ok()?,
                        m.ino(),
                        (m.ctime(), m.ctime_nsec()),
                    ))
                })
                .collect();
            Some((resolved, files))
        }))
    }
}

impl Given {
    fn new(config: &Path, modules: &Path) -> anyhow::Result<Given> {
        let absolute = |path: &Path| {
            std::path::absolute(path).with_context(|| format!("cannot watch {}", path.display()))
        };
        Ok(Given {
            config: absolute(config)?,
            modules: absolute(modules)?,
        })
    }

    /// While a given path leads nowhere: the deepest directory on it that
    /// exists, and those deciding where it leads, for each path.
    fn reachable(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for given in [&self.config, &self.modules] {
            if let Some(there) = given.ancestors().find(|a| a.is_dir()) {
                dirs.extend(std::fs::canonicalize(there).ok());
                deciding_dirs(there, &mut dirs);
            }
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }

    fn resolve(&self) -> anyhow::Result<Resolved> {
        let canonical = |path: &Path| {
            std::fs::canonicalize(path).with_context(|| format!("cannot watch {}", path.display()))
        };
        let config = canonical(&self.config)?;
        let config_is_dir = config.is_dir();
        let config_files = if config_is_dir {
            targets(&config, is_config_file)?
        } else {
            Vec::new()
        };
        let modules = canonical(&self.modules)?;
        let module_files = targets(&modules, is_module_file)?;
        let mut deciding = Vec::new();
        deciding_dirs(&self.config, &mut deciding);
        deciding_dirs(&self.modules, &mut deciding);
        deciding.sort();
        deciding.dedup();
        Ok(Resolved {
            config,
            config_is_dir,
            config_files,
            modules,
            module_files,
            deciding,
        })
    }
}

impl Resolved {
    /// The directories to watch, each by its resolved path and on its own
    /// (not what is below it: the loading reads no subdirectory, and a
    /// recursive watch of a directory in a git checkout took a watch, and
    /// a change, for each directory below): a configuration directory or a
    /// file's, the modules directory, the directories deciding where the
    /// paths lead, and those of the files a configuration or modules
    /// directory links to.
    fn places(&self) -> Vec<PathBuf> {
        let parent = |path: &Path| path.parent().map(Path::to_path_buf);
        let mut places = Vec::new();
        if self.config_is_dir {
            places.push(self.config.clone());
        } else {
            // Its directory: editors replace a file by renaming another onto it.
            places.extend(parent(&self.config));
        }
        places.push(self.modules.clone());
        for file in self.config_files.iter().chain(&self.module_files) {
            places.extend(parent(file));
        }
        places.extend(self.deciding.iter().cloned());
        places.sort();
        places.dedup();
        places
    }

    /// Whether a change at `path` (not a read) is one to the configuration
    /// or to a module, or to the directory of either itself (removed, made
    /// anew).
    fn concerns(&self, path: &Path) -> bool {
        let direct = |path: &Path| {
            if path == self.config || path == self.modules {
                return true;
            }
            let in_config = self.config_is_dir
                && ((path.parent() == Some(&self.config) && is_config_file(path))
                    || self.config_files.iter().any(|file| file == path));
            in_config
                || (path.parent() == Some(&self.modules) && is_module_file(path))
                || self.module_files.iter().any(|file| file == path)
        };
        // An event may name a file through a link on its way.
        direct(path)
            || path
                .parent()
                .and_then(|parent| std::fs::canonicalize(parent).ok())
                .zip(path.file_name())
                .is_some_and(|(parent, name)| direct(&parent.join(name)))
    }
}

/// Watches `config` and `modules`; a change (debounced: one reload,
/// [`QUIET_BEFORE_RELOAD`] after the last of a burst of writes, at most
/// [`LONGEST_WAIT_BEFORE_RELOAD`] after its first) calls `reload` on a
/// blocking thread. Reading a file is not a change: inotify reports every
/// open, and a reload's own reads must not start the next. Files that differ
/// from `read` (taken before the service read them) once the watch is set
/// are a change. A reload that panics is logged, and the watch goes on.
pub(crate) fn watch(
    config: &Path,
    modules: &Path,
    read: &Stamp,
    reload: impl Fn() + Send + Sync + 'static,
) -> anyhow::Result<Watch> {
    let given = Given::new(config, modules)?;
    let first = given.resolve()?;
    let mut places = first.places();
    // Where the paths lead as last seen; none while they lead nowhere (then
    // only their coming back is a change, not every event).
    let resolved = Arc::new(Mutex::new(Some(first)));
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = {
        let (given, resolved, changed) = (given.clone(), resolved.clone(), changed.clone());
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            // Events were lost (the kernel's queue overflowed): anything may
            // have changed.
            Ok(event) if event.need_rescan() => {
                let _ = changed.send(());
            }
            Ok(event) => {
                let known = crate::lock(&resolved).clone();
                let concerns = known
                    .as_ref()
                    .is_some_and(|known| event.paths.iter().any(|path| known.concerns(path)));
                // Writing to some other file leads nowhere else: only a change
                // of names can (no resolving for every write to a log here).
                let renames = !matches!(
                    event.kind,
                    EventKind::Modify(notify::event::ModifyKind::Data(_))
                );
                // While they lead nowhere, a directory made on the way may be
                // one level of several: follow it down (the places reachable
                // are worked out again).
                if concerns || (renames && (known.is_none() || given.resolve().ok() != known)) {
                    let _ = changed.send(());
                }
            }
            Err(e) => log::warn!("watching the configuration and modules: {e}"),
        })
        .context("cannot start a file watcher")?
    };
    let watcher = Arc::new(Mutex::new(watcher));
    // (A place that cannot be watched — a directory on the way that may be
    // passed but not read — is a warning, as later.)
    rewatch(&mut crate::lock(&watcher), &[], &places);
    if Stamp::take(config, modules) != *read {
        let _ = changed.send(());
    }
    let weak = Arc::downgrade(&watcher);
    let reload = Arc::new(reload);
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            // Until the files have been quiet for a while, or changing for
            // too long; changes that come in while the reload runs bring one
            // more reload after it.
            let first = tokio::time::Instant::now();
            loop {
                let left = LONGEST_WAIT_BEFORE_RELOAD.saturating_sub(first.elapsed());
                if left.is_zero() {
                    break;
                }
                match tokio::time::timeout(QUIET_BEFORE_RELOAD.min(left), changes.recv()).await {
                    Ok(Some(())) => {}
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            let (given, resolved, weak, reload) = (
                given.clone(),
                resolved.clone(),
                weak.clone(),
                reload.clone(),
            );
            let old = std::mem::take(&mut places);
            let follow = move || {
                // Where the paths lead now is watched before the reload reads
                // it, so that no change after the reading goes unseen;
                // watched anew even where the paths are the same (a directory
                // removed and made again at its path is another). While they
                // lead nowhere, the deepest directories they reach are
                // watched, for their coming back.
                // (What panics, a bug, is logged: watching goes on. Places
                // not known are watched anew next time.)
                let new = caught("watching the files anew", || {
                    let now = given.resolve().ok();
                    let new = now
                        .as_ref()
                        .map_or_else(|| given.reachable(), Resolved::places);
                    *crate::lock(&resolved) = now;
                    if let Some(watcher) = weak.upgrade() {
                        rewatch(&mut crate::lock(&watcher), &old, &new);
                    }
                    new
                })
                .unwrap_or_default();
                caught("reload (file_change)", || reload());
                new
            };
            match tokio::task::spawn_blocking(follow).await {
                Ok(new) => places = new,
                // (The runtime is shutting down.)
                Err(_) => return,
            }
        }
    });
    Ok(Watch { _watcher: watcher })
}

/// `work`'s result, or `None` if it panicked (logged: a bug).
fn caught<T>(what: &str, work: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .map_err(|panic| {
            log::error!(
                "{what} panicked: {}; watching goes on (a bug: please report it)",
                crate::panic_text(panic.as_ref())
            );
        })
        .ok()
}

/// Stops watching the places `old` has and `new` has not, and watches every
/// place of `new`, those kept too: a directory made again at the same path
/// is another, watched anew (a place that cannot be watched is logged: a
/// reload through `POST /v1/reload` still reads it).
fn rewatch(watcher: &mut RecommendedWatcher, old: &[PathBuf], new: &[PathBuf]) {
    for place in old.iter().filter(|place| !new.contains(place)) {
        // A directory removed (a ConfigMap's previous version) is no longer
        // watched: the watcher drops it as it sees it go.
        if place.exists() {
            let _ = watcher.unwatch(place);
        }
    }
    for path in new {
        if let Err(e) = watcher.watch(path, RecursiveMode::NonRecursive) {
            log::warn!(
                "cannot watch {}: {e}; its changes reload nothing until another change is seen \
                 (POST /v1/reload reloads)",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ConfigMap's layout: the file given leads through `..data` into a
    /// dated directory; that one and the one holding the links are watched.
    #[test]
    fn a_file_through_a_symlinked_directory_is_watched_where_it_is_and_where_it_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let cm = root.join("cm");
        std::fs::create_dir_all(cm.join("..v1")).unwrap();
        std::fs::write(cm.join("..v1/etl.yaml"), "").unwrap();
        std::os::unix::fs::symlink("..v1", cm.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/etl.yaml", cm.join("etl.yaml")).unwrap();
        std::fs::create_dir_all(root.join("sw/r1")).unwrap();
        std::os::unix::fs::symlink("r1", root.join("sw/current")).unwrap();
        let given = Given {
            config: cm.join("etl.yaml"),
            modules: root.join("sw/current"),
        };
        let resolved = given.resolve().unwrap();
        assert_eq!(resolved.config, cm.join("..v1/etl.yaml"));
        assert_eq!(resolved.modules, root.join("sw/r1"));
        assert!(resolved.concerns(&cm.join("..v1/etl.yaml")));
        assert!(
            resolved.concerns(&cm.join("..data/etl.yaml")),
            "named by the link"
        );
        assert!(resolved.concerns(&root.join("sw/r1/m.wasm")));
        assert!(!resolved.concerns(&cm.join("..v1/other.yaml")));
        assert!(!resolved.concerns(&root.join("sw/r1/m.txt")));
        let places = resolved.places();
        assert_eq!(
            places,
            [
                cm.clone(),
                cm.join("..v1"),
                root.join("sw"),
                root.join("sw/r1")
            ]
        );
        // `..data` swapped: the same given paths lead elsewhere.
        std::fs::create_dir_all(cm.join("..v2")).unwrap();
        std::fs::write(cm.join("..v2/etl.yaml"), "").unwrap();
        std::os::unix::fs::symlink("..v2", cm.join("..data_tmp")).unwrap();
        std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
        let now = given.resolve().unwrap();
        assert_ne!(now, resolved);
        assert_eq!(now.config, cm.join("..v2/etl.yaml"));
    }

    /// A configuration directory is watched, and the directories its files
    /// lead to; its files' targets are known, so that a swap of where they
    /// lead is a change.
    #[test]
    fn a_directory_is_watched_and_knows_where_its_files_lead() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let cm = root.join("cm");
        std::fs::create_dir_all(cm.join("..v1")).unwrap();
        std::fs::write(cm.join("..v1/a.yaml"), "").unwrap();
        std::os::unix::fs::symlink("..v1", cm.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/a.yaml", cm.join("a.yaml")).unwrap();
        std::fs::write(root.join("b.json"), "").unwrap();
        std::os::unix::fs::symlink(root.join("b.json"), cm.join("b.json")).unwrap();
        std::fs::create_dir(root.join("modules")).unwrap();
        let given = Given {
            config: cm.clone(),
            modules: root.join("modules"),
        };
        let resolved = given.resolve().unwrap();
        assert_eq!(
            resolved.config_files,
            [root.join("b.json"), cm.join("..v1/a.yaml")]
        );
        assert!(resolved.concerns(&root.join("b.json")));
        assert!(resolved.concerns(&cm.join("..v1/a.yaml")));
        assert!(!resolved.concerns(&root.join("c.json")));
        assert_eq!(
            resolved.places(),
            [
                root.clone(),
                cm.clone(),
                cm.join("..v1"),
                root.join("modules")
            ]
        );
    }

    /// Paths given through `..` or through a symlinked directory are
    /// watched by the directories they lead to (one name each), and a link
    /// in the middle of a path decides too: its directory is watched.
    #[test]
    fn paths_through_dots_and_links_are_watched_by_where_they_lead() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("conf")).unwrap();
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::fs::write(root.join("conf/etl.yaml"), "").unwrap();
        std::fs::create_dir_all(root.join("srv/r1/modules")).unwrap();
        std::os::unix::fs::symlink("r1", root.join("srv/current")).unwrap();
        let given = Given {
            config: root.join("x/../conf/etl.yaml"),
            modules: root.join("srv/current/modules"),
        };
        let resolved = given.resolve().unwrap();
        assert!(resolved.concerns(&root.join("conf/etl.yaml")));
        let places = resolved.places();
        assert_eq!(
            places,
            [
                root.join("conf"),
                root.join("srv"),
                root.join("srv/r1"),
                root.join("srv/r1/modules"),
            ]
        );
        // The modules directory removed or made anew at its path (seen in
        // its parent, a deciding directory): a change.
        assert!(resolved.concerns(&root.join("srv/r1/modules")));
    }

    /// A link met again and again on one path (`a -> .`, the path
    /// `a/a/…/a/etl.yaml`) is followed once. (Each
    /// way to it followed anew took time doubling with each `a`: this test
    /// did not finish.)
    #[test]
    fn a_link_met_many_times_on_a_path_is_followed_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("etl.yaml"), "").unwrap();
        std::os::unix::fs::symlink(".", root.join("a")).unwrap();
        let config = (0..36).fold(root.clone(), |path, _| path.join("a"));
        let mut dirs = Vec::new();
        deciding_dirs(&config.join("etl.yaml"), &mut dirs);
        dirs.sort();
        dirs.dedup();
        // (The one holding the link's target, `.`, decides too.)
        let above = root.parent().unwrap().to_path_buf();
        assert_eq!(dirs, [above.clone(), root.clone()]);
        let given = Given {
            config: config.join("etl.yaml"),
            modules: config,
        };
        assert_eq!(given.resolve().unwrap().places(), [above, root]);
    }

    /// A configuration directory's files are those its loading reads:
    /// upper-case extensions too; hidden names (editors' locks and swap
    /// files, a ConfigMap's own) and files below it not.
    #[test]
    fn a_directory_s_files_are_those_its_loading_reads() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let conf = root.join("conf");
        std::fs::create_dir_all(conf.join("sub")).unwrap();
        for file in ["X.YAML", ".x.yaml", "sub/y.yaml", "z.txt"] {
            std::fs::write(conf.join(file), "").unwrap();
        }
        std::fs::create_dir(root.join("modules")).unwrap();
        let given = Given {
            config: conf.clone(),
            modules: root.join("modules"),
        };
        let resolved = given.resolve().unwrap();
        assert_eq!(resolved.config_files, [conf.join("X.YAML")]);
        assert!(resolved.concerns(&conf.join("X.YAML")));
        assert!(resolved.concerns(&conf.join("new.Json")), "one made anew");
        for other in [".#x.yaml", ".x.yaml", "sub/y.yaml", "z.txt"] {
            assert!(!resolved.concerns(&conf.join(other)), "{other}");
        }
    }

    /// Waits up to `within` for a reload; whether one came.
    fn reloaded(reloads: &std::sync::mpsc::Receiver<()>, within: Duration) -> bool {
        reloads.recv_timeout(within).is_ok()
    }

    /// A change made while the service started (after the stamp taken
    /// before its reading, before the watch) is reloaded once the watch is
    /// set; with none, nothing is. A reload that panics stops nothing: the
    /// next change is reloaded.
    #[test]
    fn a_change_while_starting_is_reloaded_and_a_panicking_reload_stops_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let (config, modules) = (root.join("etl.yaml"), root.join("modules"));
        std::fs::write(&config, "pipelines: []\n").unwrap();
        std::fs::create_dir(&modules).unwrap();
        std::fs::write(modules.join("m.wasm"), "old").unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let _in_runtime = runtime.enter();
        let start = |read: &Stamp, panics: bool| {
            let (reloaded, reloads) = std::sync::mpsc::channel();
            let watch = watch(&config, &modules, read, move || {
                let _ = reloaded.send(());
                assert!(!panics, "a reload that panics");
            })
            .unwrap();
            (watch, reloads)
        };
        // Nothing changed since the reading: no reload.
        let (watch, reloads) = start(&Stamp::take(&config, &modules), false);
        assert!(!reloaded(&reloads, Duration::from_secs(2)));
        drop(watch);
        // A module changed meanwhile (same size: its time and inode differ).
        let read = Stamp::take(&config, &modules);
        std::fs::remove_file(modules.join("m.wasm")).unwrap();
        std::fs::write(modules.join("m.wasm"), "new").unwrap();
        assert!(Stamp::take(&config, &modules) != read);
        let (_watch, reloads) = start(&read, true);
        assert!(
            reloaded(&reloads, Duration::from_secs(10)),
            "the start's change"
        );
        std::fs::write(&config, "pipelines: []\n# edited\n").unwrap();
        assert!(
            reloaded(&reloads, Duration::from_secs(10)),
            "a change after a reload that panicked"
        );
    }
}
