//! Every file name in a run directory, in one place. docs/run-directory.md is the contract these
//! names keep: a stage, the report, `sieve run`, merge and the CLI ask [`Layout`] (or these
//! consts, for names in messages and checksum keys) for a path rather than spelling it.
//!
//! The consts are paths relative to the run directory, with `/` between folder and file.

use std::path::{Path, PathBuf};

/// How the run was made and what it holds.
pub const RUN_JSON: &str = "run.json";
/// A Hugging Face dataset card whose `configs` name the metadata parts as the data, so
/// `datasets.load_dataset(RUN)` reads them and not the summaries.
pub const DATASET_CARD: &str = "README.md";
/// One Parquet part per `part_size` records.
pub const METADATA: &str = "metadata";
/// Image embeddings, one `.npy` per part.
pub const IMG_EMB: &str = "img_emb";
/// Caption embeddings, one `.npy` per part.
pub const TEXT_EMB: &str = "text_emb";
/// The folders every part has a file in, metadata first.
pub const PART_DIRS: [&str; 3] = [METADATA, IMG_EMB, TEXT_EMB];
/// `sieve run`'s record of finished stages.
pub const STAGES_JSON: &str = "stages.json";
/// Present while a command writes the run ([`super::lock`]).
pub const LOCK: &str = ".sieve.lock";

/// `sieve dedup`'s folder and its files.
pub const DEDUP_DIR: &str = "dedup";
pub const DEDUP_SUMMARY: &str = "dedup/summary.json";
pub const DEDUP_GROUPS: &str = "dedup/groups.parquet";
pub const DEDUP_CAPTIONS: &str = "dedup/captions.parquet";
pub const DEDUP_BRIDGES: &str = "dedup/bridges.parquet";
pub const DEDUP_PAIRS: &str = "dedup/pairs.parquet";
pub const DEDUP_KEEP: &str = "dedup/keep.txt";
pub const DEDUP_REMOVE: &str = "dedup/remove.txt";
pub const CALIBRATE_JSON: &str = "dedup/calibrate.json";
/// Where `sieve dedup-centroids` writes by default, and where `dedup-partition` writes (and
/// `dedup-combine` reads) by default.
pub const DEDUP_CENTROIDS_DIR: &str = "dedup/centroids";
pub const DEDUP_PARTITIONS_DIR: &str = "dedup/partitions";
/// The prefix of dedup's temporary sorting folders (`index::spill`), followed by the process id.
pub const SPILL_PREFIX: &str = ".sieve-spill-";
pub const CALIBRATE_HTML: &str = "dedup/calibrate.html";

/// `sieve score`.
pub const PAIRS: &str = "pairs.parquet";
pub const PAIRS_SUMMARY: &str = "pairs_summary.json";
/// `sieve quality`.
pub const QUALITY: &str = "quality.parquet";
pub const QUALITY_SUMMARY: &str = "quality_summary.json";
/// `sieve diversity`.
pub const DIVERSITY: &str = "diversity.json";
/// `sieve audit`.
pub const AUDIT: &str = "audit.parquet";
pub const AUDIT_SUMMARY: &str = "audit_summary.json";
/// `sieve classify`'s folder: `NAME.parquet` and `NAME.json` per head.
pub const CLASSIFY_DIR: &str = "classify";
/// `sieve select`'s folder and its files.
pub const SELECTION_DIR: &str = "selection";
pub const SELECTION_KEEP: &str = "selection/keep.txt";
pub const SELECTION_SUMMARY: &str = "selection/summary.json";
/// `sieve report`'s page (unless `--out` puts it elsewhere).
pub const REPORT: &str = "report.html";

/// What the later stages write into a run directory: computed from the run's embeddings, so
/// removed with them when the run is replaced (`--overwrite`), never left to be read beside
/// another run's records.
pub const STAGE_OUTPUTS: &[&str] = &[
    DEDUP_DIR,
    PAIRS,
    PAIRS_SUMMARY,
    QUALITY,
    QUALITY_SUMMARY,
    DIVERSITY,
    AUDIT,
    AUDIT_SUMMARY,
    CLASSIFY_DIR,
    SELECTION_DIR,
    REPORT,
    STAGES_JSON,
];

/// The name of the part at `index`: `part-00003` (its files add `.parquet` or `.npy`).
pub fn part(index: usize) -> String {
    format!("part-{index:05}")
}

/// The file of part `part` (e.g. `part-00003`) in the part folder `sub`, relative to the run:
/// `metadata/part-00003.parquet`, `img_emb/part-00003.npy` (the keys of `run.json`'s checksums).
pub fn part_file(sub: &str, part: &str) -> String {
    let ext = if sub == METADATA { "parquet" } else { "npy" };
    format!("{sub}/{part}.{ext}")
}

/// The embedding folder: `text_emb` for captions, `img_emb` for images.
pub fn emb_dir(text: bool) -> &'static str {
    if text {
        TEXT_EMB
    } else {
        IMG_EMB
    }
}

/// A run directory's paths: the root, and each file the run and its stages keep there.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    root: &'a Path,
}

impl<'a> Layout<'a> {
    pub fn new(root: &'a Path) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &'a Path {
        self.root
    }

    /// `rel` (one of this module's consts) under the run.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn run_json(&self) -> PathBuf {
        self.file(RUN_JSON)
    }

    pub fn dataset_card(&self) -> PathBuf {
        self.file(DATASET_CARD)
    }

    pub fn stages_json(&self) -> PathBuf {
        self.file(STAGES_JSON)
    }

    pub fn lock(&self) -> PathBuf {
        self.file(LOCK)
    }

    /// A part folder (`metadata`, `img_emb`, `text_emb`).
    pub fn part_dir(&self, sub: &str) -> PathBuf {
        self.file(sub)
    }

    /// `metadata/PART.parquet`.
    pub fn metadata_part(&self, part: &str) -> PathBuf {
        self.file(&part_file(METADATA, part))
    }

    /// `img_emb/PART.npy` or, for captions, `text_emb/PART.npy`.
    pub fn emb_part(&self, text: bool, part: &str) -> PathBuf {
        self.file(&part_file(emb_dir(text), part))
    }

    pub fn dedup_dir(&self) -> PathBuf {
        self.file(DEDUP_DIR)
    }

    pub fn dedup_summary(&self) -> PathBuf {
        self.file(DEDUP_SUMMARY)
    }

    pub fn dedup_groups(&self) -> PathBuf {
        self.file(DEDUP_GROUPS)
    }

    pub fn dedup_captions(&self) -> PathBuf {
        self.file(DEDUP_CAPTIONS)
    }

    pub fn dedup_remove(&self) -> PathBuf {
        self.file(DEDUP_REMOVE)
    }

    pub fn dedup_keep(&self) -> PathBuf {
        self.file(DEDUP_KEEP)
    }

    pub fn dedup_bridges(&self) -> PathBuf {
        self.file(DEDUP_BRIDGES)
    }

    pub fn dedup_pairs(&self) -> PathBuf {
        self.file(DEDUP_PAIRS)
    }

    pub fn dedup_centroids_dir(&self) -> PathBuf {
        self.file(DEDUP_CENTROIDS_DIR)
    }

    pub fn dedup_partitions_dir(&self) -> PathBuf {
        self.file(DEDUP_PARTITIONS_DIR)
    }

    pub fn calibrate_json(&self) -> PathBuf {
        self.file(CALIBRATE_JSON)
    }

    pub fn calibrate_html(&self) -> PathBuf {
        self.file(CALIBRATE_HTML)
    }

    pub fn pairs(&self) -> PathBuf {
        self.file(PAIRS)
    }

    pub fn pairs_summary(&self) -> PathBuf {
        self.file(PAIRS_SUMMARY)
    }

    pub fn quality(&self) -> PathBuf {
        self.file(QUALITY)
    }

    pub fn quality_summary(&self) -> PathBuf {
        self.file(QUALITY_SUMMARY)
    }

    pub fn diversity(&self) -> PathBuf {
        self.file(DIVERSITY)
    }

    pub fn audit(&self) -> PathBuf {
        self.file(AUDIT)
    }

    pub fn audit_summary(&self) -> PathBuf {
        self.file(AUDIT_SUMMARY)
    }

    pub fn classify_dir(&self) -> PathBuf {
        self.file(CLASSIFY_DIR)
    }

    /// `classify/NAME.EXT`.
    pub fn classify(&self, name: &str, ext: &str) -> PathBuf {
        self.file(CLASSIFY_DIR).join(format!("{name}.{ext}"))
    }

    pub fn selection_dir(&self) -> PathBuf {
        self.file(SELECTION_DIR)
    }

    pub fn selection_keep(&self) -> PathBuf {
        self.file(SELECTION_KEEP)
    }

    pub fn selection_summary(&self) -> PathBuf {
        self.file(SELECTION_SUMMARY)
    }

    pub fn report(&self) -> PathBuf {
        self.file(REPORT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_documented_ones() {
        let l = Layout::new(Path::new("RUN"));
        assert_eq!(l.run_json(), Path::new("RUN/run.json"));
        assert_eq!(l.metadata_part("part-00002"), Path::new("RUN/metadata/part-00002.parquet"));
        assert_eq!(l.emb_part(false, "part-00002"), Path::new("RUN/img_emb/part-00002.npy"));
        assert_eq!(l.emb_part(true, "part-00002"), Path::new("RUN/text_emb/part-00002.npy"));
        assert_eq!(l.dedup_summary(), Path::new("RUN/dedup/summary.json"));
        assert_eq!(l.selection_keep(), Path::new("RUN/selection/keep.txt"));
        assert_eq!(l.report(), Path::new("RUN/report.html"));
        // Every name in docs/run-directory.md's tree.
        let doc = include_str!("../../docs/run-directory.md");
        for name in [
            RUN_JSON,
            STAGES_JSON,
            PAIRS,
            PAIRS_SUMMARY,
            QUALITY,
            QUALITY_SUMMARY,
            DIVERSITY,
            AUDIT,
            AUDIT_SUMMARY,
            REPORT,
            LOCK,
            SPILL_PREFIX,
        ] {
            assert!(doc.contains(name), "{name} is not in docs/run-directory.md");
        }
        for dir in [METADATA, IMG_EMB, TEXT_EMB, DEDUP_DIR, CLASSIFY_DIR, SELECTION_DIR] {
            assert!(doc.contains(&format!("{dir}/")), "{dir}/ is not in docs/run-directory.md");
        }
    }
}
