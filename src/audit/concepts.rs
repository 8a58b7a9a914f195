//! The concept file of `sieve audit --concepts FILE`: what to look for, in groups.
//!
//! ```text
//! # a comment; blank lines are ignored
//! lighting: daylight | night | studio lighting
//! background: plain background = a photo on a plain background | outdoors | indoors
//! cat
//! dog
//! ```
//!
//! A line `GROUP: A | B | C` is a group of concepts; every other line is one concept, and those
//! bare concepts form one group named [`DEFAULT_GROUP`]. A concept may give its own prompt after
//! `=` (`night = a photo taken at night`): that text is embedded as it is, instead of the
//! model's template ensemble. Names are trimmed; they may not contain `:`, `|` or `=`, and
//! `none` is reserved (it is what an item that fits no concept gets). A group needs at least
//! two concepts (the margin is the best one's lead over the second).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The group that bare lines (no `GROUP:`) form.
pub const DEFAULT_GROUP: &str = "concepts";
/// What an item that fits no concept of a group gets.
pub const NONE: &str = "none";
/// Most concepts in one file (all groups).
pub const MAX_CONCEPTS: usize = 1000;
/// Longest line, in bytes.
pub const MAX_LINE_BYTES: usize = 4096;
/// Longest concept or group name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Largest concept file, in bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// One concept: its name and, when the file gave one, its own prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concept {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// A group of concepts an item gets one of (or `none`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub concepts: Vec<Concept>,
}

/// A parsed concept file, with where it came from and its digest (what an audit records, so a
/// stale audit is recognisable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConceptSet {
    pub path: PathBuf,
    pub sha256: String,
    pub groups: Vec<Group>,
}

impl ConceptSet {
    /// Reads and parses `path`; every problem is a usage error naming the file and line.
    pub fn read(path: &Path) -> Result<Self> {
        let bad =
            |reason: String| Error::InvalidArg { what: "--concepts", reason: format!("{}: {reason}", path.display()) };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a file".into()));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(bad(format!("{} bytes; a concept file holds at most {MAX_FILE_BYTES}", meta.len())));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| bad(format!("not UTF-8 ({e})")))?;
        let groups = parse(text).map_err(bad)?;
        Ok(Self { path: path.to_path_buf(), sha256: crate::digest::sha256_bytes(&bytes), groups })
    }

    /// Concepts in all groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.concepts.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A name from the file, checked.
fn name(raw: &str, line: usize, what: &str) -> std::result::Result<String, String> {
    let n = raw.trim();
    if n.is_empty() {
        return Err(format!("line {line}: an empty {what} name"));
    }
    if n.chars().count() > MAX_NAME_CHARS {
        return Err(format!("line {line}: a {what} name over {MAX_NAME_CHARS} characters"));
    }
    if n.chars().any(|c| c.is_control()) {
        return Err(format!("line {line}: a control character in a {what} name"));
    }
    if n.contains([':', '|', '=']) {
        return Err(format!("line {line}: {what} name `{n}` holds `:`, `|` or `=`"));
    }
    Ok(n.to_string())
}

/// One concept, `NAME` or `NAME = PROMPT`.
fn concept(raw: &str, line: usize) -> std::result::Result<Concept, String> {
    let (n, prompt) = match raw.split_once('=') {
        Some((n, p)) => {
            let p = p.trim();
            if p.is_empty() {
                return Err(format!("line {line}: an empty prompt after `=`"));
            }
            (n, Some(p.to_string()))
        }
        None => (raw, None),
    };
    let n = name(n, line, "concept")?;
    if n.eq_ignore_ascii_case(NONE) {
        return Err(format!("line {line}: `{n}` is reserved for items that fit no concept"));
    }
    Ok(Concept { name: n, prompt })
}

/// Parses a concept file's text into its groups (bare concepts last, as [`DEFAULT_GROUP`]).
pub fn parse(text: &str) -> std::result::Result<Vec<Group>, String> {
    let mut groups: Vec<Group> = Vec::new();
    let mut bare: Vec<(Concept, usize)> = Vec::new();
    let mut total = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.len() > MAX_LINE_BYTES {
            return Err(format!("line {line} is {} bytes long; at most {MAX_LINE_BYTES}", raw.len()));
        }
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        // A group line: a `:` before any `=` (a prompt may hold a colon).
        let colon = l.find(':').filter(|&c| l.find('=').is_none_or(|e| c < e));
        match colon {
            Some(c) => {
                let g = name(&l[..c], line, "group")?;
                if groups.iter().any(|x| x.name == g) {
                    return Err(format!("line {line}: group `{g}` is named twice"));
                }
                let concepts =
                    l[c + 1..].split('|').map(|p| concept(p, line)).collect::<std::result::Result<Vec<_>, _>>()?;
                total += concepts.len();
                groups.push(Group { name: g, concepts });
            }
            None => {
                bare.push((concept(l, line)?, line));
                total += 1;
            }
        }
        if total > MAX_CONCEPTS {
            return Err(format!("more than {MAX_CONCEPTS} concepts (line {line})"));
        }
    }
    if !bare.is_empty() {
        if groups.iter().any(|g| g.name == DEFAULT_GROUP) {
            return Err(format!(
                "bare concepts form the group `{DEFAULT_GROUP}`, which a `{DEFAULT_GROUP}:` line names too"
            ));
        }
        groups.push(Group { name: DEFAULT_GROUP.into(), concepts: bare.into_iter().map(|(c, _)| c).collect() });
    }
    if groups.is_empty() {
        return Err("no concepts (lines `GROUP: A | B`, or one concept a line)".into());
    }
    for g in &groups {
        if g.concepts.len() < 2 {
            return Err(format!(
                "group `{}` has {} concept; a group needs at least two (an item gets the best of them)",
                g.name,
                g.concepts.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &g.concepts {
            if !seen.insert(c.name.to_lowercase()) {
                return Err(format!("concept `{}` appears twice in group `{}`", c.name, g.name));
            }
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_bare_lines_prompts_and_comments() {
        let g = parse(
            "# lighting\nlighting: daylight | night = a photo taken at night: dark | studio\n\n  cat \ndog\n# end\n",
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "lighting");
        let names: Vec<&str> = g[0].concepts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["daylight", "night", "studio"]);
        assert_eq!(g[0].concepts[1].prompt.as_deref(), Some("a photo taken at night: dark"));
        assert_eq!(g[1].name, DEFAULT_GROUP);
        assert_eq!(
            g[1].concepts,
            [Concept { name: "cat".into(), prompt: None }, Concept { name: "dog".into(), prompt: None }]
        );
        // A bare concept with its own prompt holding a colon stays a concept.
        let g = parse("cat = a photo: of a cat\ndog\n").unwrap();
        assert_eq!(g[0].concepts[0].prompt.as_deref(), Some("a photo: of a cat"));
    }

    #[test]
    fn hostile_files_are_clear_errors() {
        let many: String = (0..10_000).map(|i| format!("c{i}\n")).collect();
        let long = format!("g: a | {}\n", "b".repeat(1 << 20));
        for (text, says) in [
            ("", "no concepts"),
            ("# only a comment\n\n", "no concepts"),
            ("cat\ncat\n", "twice"),
            ("g: a | A\n", "twice"),
            ("g: a | b\ng: c | d\n", "named twice"),
            ("cat\n", "at least two"),
            ("g: a\n", "at least two"),
            ("g: a | | b\n", "empty concept"),
            (": a | b\n", "empty group"),
            ("g: a | none\n", "reserved"),
            ("g: a = | b\n", "empty prompt"),
            ("concepts: a | b\nc\nd\n", "bare concepts"),
            (many.as_str(), "more than 1000"),
            (long.as_str(), "bytes long"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text:.40?}: {err}");
        }
    }
}
