//! The Hugging Face Hub cache as huggingface_hub (2.x) lays it out and finds it, so a model
//! downloaded by Python (`huggingface-cli download`, `from_pretrained`) is found by sieve and the
//! other way round:
//!
//! - the cache folder: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
//!   `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (a leading `~` expanded);
//! - offline: `HF_HUB_OFFLINE`, else `TRANSFORMERS_OFFLINE`, true when `1`, `ON`, `YES` or `TRUE`
//!   in any case (huggingface_hub's `_is_true`);
//! - a file: `models--ORG--NAME/snapshots/COMMIT/FILE`, where COMMIT is the revision itself when
//!   a snapshot folder has that name (a commit sha needs no `refs/` file, which Python never
//!   writes for one), else the commit `refs/REVISION` names (`try_to_load_from_cache`).

use std::path::{Path, PathBuf};

/// What huggingface_hub takes as true in an environment variable.
fn is_true(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.to_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}

/// An environment variable, as `os.getenv` reads it (set but empty counts as set).
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Whether only the cache may be used (`HF_HUB_OFFLINE`, or `TRANSFORMERS_OFFLINE` when that is
/// unset or empty).
pub fn offline() -> bool {
    offline_from(var)
}

fn offline_from(get: impl Fn(&str) -> Option<String>) -> bool {
    is_true(get("HF_HUB_OFFLINE").filter(|v| !v.is_empty()).or_else(|| get("TRANSFORMERS_OFFLINE")))
}

/// The cache folder huggingface_hub uses in this environment.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(var, home())
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn expand_user(p: String, home: &Option<PathBuf>) -> PathBuf {
    match (p.strip_prefix('~'), home) {
        (Some(rest), Some(h)) if rest.is_empty() || rest.starts_with('/') => h.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(p),
    }
}

fn cache_dir_from(get: impl Fn(&str) -> Option<String>, home: Option<PathBuf>) -> PathBuf {
    if let Some(p) = get("HF_HUB_CACHE").or_else(|| get("HUGGINGFACE_HUB_CACHE")) {
        return expand_user(p, &home);
    }
    let hf_home = match get("HF_HOME") {
        Some(p) => expand_user(p, &home),
        None => {
            let xdg = get("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.clone().unwrap_or_default().join(".cache"));
            xdg.join("huggingface")
        }
    };
    hf_home.join("hub")
}

/// The folder of a model repo in `cache`.
pub fn repo_dir(cache: &Path, repo_id: &str) -> PathBuf {
    cache.join(format!("models--{}", repo_id.replace('/', "--")))
}

/// `filename` of `repo_id` at `revision` (a branch, tag or commit) in `cache`, if it is there.
pub fn cached_file(cache: &Path, repo_id: &str, revision: &str, filename: &str) -> Option<PathBuf> {
    let repo = repo_dir(cache, repo_id);
    let snapshots = repo.join("snapshots");
    // A revision that names a snapshot is a commit: no refs/ needed. Names with a path
    // separator or `..` are refs (`refs/pr/1`), never snapshot folders.
    let safe = |s: &str| !s.is_empty() && !s.contains(['/', '\\']) && s != "." && s != "..";
    let commit = if safe(revision) && snapshots.join(revision).is_dir() {
        revision.to_string()
    } else {
        let rev = std::fs::read_to_string(repo.join("refs").join(revision)).ok()?;
        let rev = rev.trim().to_string();
        if !safe(&rev) {
            return None;
        }
        rev
    };
    let file = snapshots.join(commit).join(filename);
    file.is_file().then_some(file)
}

/// The commit a file resolved from the cache belongs to: the name of its snapshot folder.
pub fn snapshot_commit(file: &Path) -> Option<String> {
    let dir = file.parent()?;
    (dir.parent()?.file_name()? == "snapshots").then(|| dir.file_name()?.to_str().map(str::to_string))?
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        move |k| map.get(k).map(|v| v.to_string())
    }

    #[test]
    fn the_cache_folder_follows_huggingface_hub_precedence() {
        let home = Some(PathBuf::from("/home/u"));
        let dir = |vars: &[(&str, &str)]| cache_dir_from(env(vars), home.clone());
        assert_eq!(dir(&[]), PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(dir(&[("XDG_CACHE_HOME", "/x")]), PathBuf::from("/x/huggingface/hub"));
        assert_eq!(dir(&[("XDG_CACHE_HOME", "/x"), ("HF_HOME", "~/hf")]), PathBuf::from("/home/u/hf/hub"));
        assert_eq!(dir(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old")]), PathBuf::from("/old"));
        assert_eq!(dir(&[("HUGGINGFACE_HUB_CACHE", "/old"), ("HF_HUB_CACHE", "/new")]), PathBuf::from("/new"));
    }

    #[test]
    fn offline_takes_huggingface_hub_truthy_values() {
        for v in ["1", "true", "True", "TRUE", "yes", "on", "ON"] {
            assert!(offline_from(env(&[("HF_HUB_OFFLINE", v)])), "{v}");
        }
        for v in ["0", "false", "no", "", "2"] {
            assert!(!offline_from(env(&[("HF_HUB_OFFLINE", v)])), "{v}");
        }
        assert!(offline_from(env(&[("TRANSFORMERS_OFFLINE", "1")])));
        assert!(!offline_from(env(&[("HF_HUB_OFFLINE", "0"), ("TRANSFORMERS_OFFLINE", "1")])));
    }

    #[test]
    fn files_resolve_by_ref_or_by_commit_without_refs() {
        let cache = tempfile::tempdir().unwrap();
        let repo = repo_dir(cache.path(), "org/model");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("snapshots").join(sha)).unwrap();
        std::fs::write(repo.join("snapshots").join(sha).join("config.json"), "{}").unwrap();
        let want = Some(repo.join("snapshots").join(sha).join("config.json"));
        assert_eq!(cached_file(cache.path(), "org/model", sha, "config.json"), want);
        assert_eq!(cached_file(cache.path(), "org/model", "main", "config.json"), None, "no refs/main yet");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), format!("{sha}\n")).unwrap();
        assert_eq!(cached_file(cache.path(), "org/model", "main", "config.json"), want);
        assert_eq!(cached_file(cache.path(), "org/model", "main", "missing.json"), None);
        assert_eq!(snapshot_commit(want.as_ref().unwrap()).as_deref(), Some(sha));
        assert_eq!(snapshot_commit(Path::new("/some/folder/config.json")), None);
        // A ref naming something outside the snapshots is not followed.
        std::fs::write(repo.join("refs/evil"), "../../x").unwrap();
        assert_eq!(cached_file(cache.path(), "org/model", "evil", "config.json"), None);
        assert_eq!(cached_file(cache.path(), "org/model", "..", "config.json"), None);
    }
}
