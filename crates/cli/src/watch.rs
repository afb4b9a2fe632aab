//! `serve`'s watch of its configuration and modules: a change reloads them.
//!
//! What is watched is where the paths lead (symlinks followed) and also the
//! directories they were given in, where a symlink on the way may be
//! swapped for one to another target: how Kubernetes updates a mounted
//! ConfigMap (`etl.yaml -> ..data/etl.yaml`, `..data -> ..2026_12_03_…`
//! replaced), or how a release directory is switched (`current -> r2`). A
//! change anywhere watched that leaves the paths leading elsewhere is a
//! change too, and from then on the new targets are watched.

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
}

fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

impl Given {
    fn resolve(&self) -> anyhow::Result<Resolved> {
        let canonical = |path: &Path| {
            std::fs::canonicalize(path).with_context(|| format!("cannot watch {}", path.display()))
        };
        let config = canonical(&self.config)?;
        let config_is_dir = config.is_dir();
        let mut config_files = Vec::new();
        if config_is_dir {
            let entries = std::fs::read_dir(&config)
                .with_context(|| format!("cannot watch {}", config.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if is_config_file(&path) {
                    // (One removed meanwhile is simply not there.)
                    config_files.extend(std::fs::canonicalize(&path).ok());
                }
            }
            config_files.sort();
        }
        Ok(Resolved {
            config,
            config_is_dir,
            config_files,
            modules: canonical(&self.modules)?,
        })
    }

    /// What to watch for `resolved`: its targets, and the directories the
    /// given paths are in. A directory watched recursively covers what is
    /// below it.
    fn places(&self, resolved: &Resolved) -> Vec<(PathBuf, RecursiveMode)> {
        let parent = |path: &Path| path.parent().map(Path::to_path_buf);
        let mut places = Vec::new();
        if resolved.config_is_dir {
            places.push((resolved.config.clone(), RecursiveMode::Recursive));
            // Configuration files that lead out of the directory.
            for file in &resolved.config_files {
                if !file.starts_with(&resolved.config) {
                    places.extend(parent(file).map(|p| (p, RecursiveMode::NonRecursive)));
                }
            }
        } else {
            // Its directory: editors replace a file by renaming another onto it.
            places.extend(parent(&resolved.config).map(|p| (p, RecursiveMode::NonRecursive)));
        }
        places.push((resolved.modules.clone(), RecursiveMode::NonRecursive));
        for given in [&self.config, &self.modules] {
            places.extend(parent(given).map(|p| (p, RecursiveMode::NonRecursive)));
        }
        // One watch a directory, recursive if any wants it; none below a
        // recursive one.
        places.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then((b.1 == RecursiveMode::Recursive).cmp(&(a.1 == RecursiveMode::Recursive)))
        });
        places.dedup_by(|later, first| later.0 == first.0);
        let recursive: Vec<PathBuf> = places
            .iter()
            .filter(|(_, mode)| *mode == RecursiveMode::Recursive)
            .map(|(path, _)| path.clone())
            .collect();
        places.retain(|(path, _)| !recursive.iter().any(|r| path != r && path.starts_with(r)));
        places
    }
}

impl Resolved {
    /// Whether a change at `path` (not a read) is one to the configuration
    /// or to a module.
    fn concerns(&self, path: &Path) -> bool {
        let in_config = if self.config_is_dir {
            (path.starts_with(&self.config) && is_config_file(path))
                || self.config_files.iter().any(|file| file == path)
        } else {
            path == self.config
        };
        in_config
            || (path.parent() == Some(&self.modules)
                && path.extension().and_then(|e| e.to_str()) == Some("wasm"))
    }
}

/// Watches `config` and `modules`; a change (debounced: one reload,
/// [`QUIET_BEFORE_RELOAD`] after the last of a burst of writes, at most
/// [`LONGEST_WAIT_BEFORE_RELOAD`] after its first) calls `reload` on a
/// blocking thread. Reading a file is not a change: inotify reports every
/// open, and a reload's own reads must not start the next.
pub(crate) fn watch(
    config: &Path,
    modules: &Path,
    reload: impl Fn() + Send + Sync + 'static,
) -> anyhow::Result<Watch> {
    let absolute = |path: &Path| {
        std::path::absolute(path).with_context(|| format!("cannot watch {}", path.display()))
    };
    let given = Given {
        config: absolute(config)?,
        modules: absolute(modules)?,
    };
    let resolved = Arc::new(Mutex::new(given.resolve()?));
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = {
        let (given, resolved) = (given.clone(), resolved.clone());
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            Ok(event) => {
                let known = lock(&resolved).clone();
                if event.paths.iter().any(|path| known.concerns(path))
                    || given.resolve().ok().as_ref() != Some(&known)
                {
                    let _ = changed.send(());
                }
            }
            Err(e) => log::warn!("watching the configuration and modules: {e}"),
        })
        .context("cannot watch files")?
    };
    let watcher = Arc::new(Mutex::new(watcher));
    let places = given.places(&lock(&resolved));
    for (path, mode) in &places {
        lock(&watcher)
            .watch(path, *mode)
            .with_context(|| format!("cannot watch {}", path.display()))?;
    }
    let weak = Arc::downgrade(&watcher);
    let reload = Arc::new(reload);
    tokio::spawn(async move {
        let mut places = places;
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
            let follow = move |places: Vec<(PathBuf, RecursiveMode)>| {
                // Where the paths lead now is watched before the reload reads
                // it, so that no change after the reading goes unseen.
                if let Ok(now) = given.resolve() {
                    let new = given.places(&now);
                    *lock(&resolved) = now;
                    if let Some(watcher) = weak.upgrade() {
                        rewatch(&mut lock(&watcher), &places, &new);
                    }
                    reload();
                    return new;
                }
                reload();
                places
            };
            match tokio::task::spawn_blocking(move || follow(places.clone())).await {
                Ok(now) => places = now,
                Err(_) => return,
            }
        }
    });
    Ok(Watch { _watcher: watcher })
}

/// Stops watching the places `old` has and `new` has not, and watches those
/// `new` adds (a place that cannot be watched is logged: a reload through
/// `POST /v1/reload` still reads it).
fn rewatch(
    watcher: &mut RecommendedWatcher,
    old: &[(PathBuf, RecursiveMode)],
    new: &[(PathBuf, RecursiveMode)],
) {
    for place in old.iter().filter(|place| !new.contains(place)) {
        // A directory removed (a ConfigMap's previous version) is no longer
        // watched: the watcher drops it as it sees it go.
        if place.0.exists() {
            let _ = watcher.unwatch(&place.0);
        }
    }
    for (path, mode) in new.iter().filter(|place| !old.contains(place)) {
        if let Err(e) = watcher.watch(path, *mode) {
            log::warn!(
                "cannot watch {}: {e}; its changes reload nothing until another change is seen \
                 (POST /v1/reload reloads)",
                path.display()
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ConfigMap's layout: the file given leads through `..data` into a
    /// dated directory; both directories are watched, the given one for the
    /// swap of `..data`.
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
        assert!(resolved.concerns(&root.join("sw/r1/m.wasm")));
        assert!(!resolved.concerns(&cm.join("..v1/other.yaml")));
        assert!(!resolved.concerns(&root.join("sw/r1/m.txt")));
        let places: Vec<PathBuf> = given.places(&resolved).into_iter().map(|p| p.0).collect();
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

    /// A configuration directory is watched recursively, with its parent for
    /// a swap of the directory itself; its files' targets are known, so that
    /// a swap of where they lead is a change.
    #[test]
    fn a_directory_is_watched_recursively_and_knows_where_its_files_lead() {
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
            given.places(&resolved),
            [
                (root.clone(), RecursiveMode::NonRecursive),
                (cm.clone(), RecursiveMode::Recursive),
                (root.join("modules"), RecursiveMode::NonRecursive),
            ]
        );
    }
}
