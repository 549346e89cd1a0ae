//! A TOML file being loaded, so that every error can name the file, the line and the key.
use core::fmt;
use core::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The text of a configuration or policy file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    path: PathBuf,
    text: String,
}

impl SourceFile {
    /// The file's text, as read.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn read(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            text,
        })
    }

    pub fn from_text(path: &Path, text: &str) -> Self {
        Self {
            path: path.to_path_buf(),
            text: text.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Deserializes the whole file (unknown keys are refused by the types).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, LoadError> {
        toml::from_str(&self.text).map_err(|e| {
            let span = e.span();
            LoadError {
                file: self.path.clone(),
                line: span.as_ref().map(|s| self.line_of(s.start)),
                key: span.as_ref().and_then(|s| self.key_at(s.start)),
                message: e.message().trim().to_owned(),
            }
        })
    }

    /// An error about the value at `span`, for the key `key`.
    pub fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> LoadError {
        LoadError {
            file: self.path.clone(),
            line: Some(self.line_of(span.start)),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    /// An error about the file as a whole (a missing table, a cross-check between keys).
    pub fn file_error(&self, key: Option<&str>, message: impl Into<String>) -> LoadError {
        LoadError {
            file: self.path.clone(),
            line: None,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// The key written on the line of `offset` (`key = value` or `[table]`), if any.
    fn key_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next()?.trim();
        if let Some(table) = line.strip_prefix('[') {
            return Some(
                table
                    .trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .to_owned(),
            );
        }
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty()).then(|| key.to_owned())
    }
}

/// A configuration or policy file that cannot be used. Its message names the file, the line
/// and the key when they are known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        count: u32,
    }

    #[test]
    fn type_errors_name_file_line_and_key() {
        let file = SourceFile::from_text(Path::new("x.toml"), "name = \"a\"\n\ncount = \"two\"\n");
        let err = file.parse::<Sample>().unwrap_err();
        assert_eq!(err.line, Some(3));
        assert_eq!(err.key.as_deref(), Some("count"));
        assert!(err.to_string().starts_with("x.toml:3: count: "), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let file =
            SourceFile::from_text(Path::new("x.toml"), "name = \"a\"\ncount = 1\ncuont = 2\n");
        let err = file.parse::<Sample>().unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("cuont"), "{err}");
    }
}
