//! Reading the TOML text: schema errors with the line (from the parser's spans) and the key
//! path (from serde), and the line of any dotted key for errors found after parsing.

use super::{Config, ConfigError};

pub(super) fn parse_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| parse_error(origin, text, &e, None))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        parse_error(origin, text, e.inner(), Some(key))
    })
}

/// Builds a message with the line number (from the TOML span) and the key path (from serde).
fn parse_error(origin: &str, text: &str, error: &toml::de::Error, key: Option<String>) -> ConfigError {
    let location = error
        .span()
        .map(|span| {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: ")
        })
        .unwrap_or_default();
    let key = key
        .filter(|k| !k.is_empty() && k != ".")
        .map(|k| format!("key `{k}`: "))
        .unwrap_or_default();
    ConfigError::Parse {
        path: origin.to_string(),
        message: format!("{location}{key}{}", in_the_files_words(error.message().trim())),
    }
}

/// serde's words for Rust types, said as a config file's reader knows them: "integer `-2`,
/// expected u32" is "expected a whole number of 0 or more", a number too large for any field
/// is no longer "as i128", and an untagged enum's "did not match any variant" says what the
/// key takes (the only untagged enum is `facility_codes`).
fn in_the_files_words(message: &str) -> String {
    message
        .replace(" as i128", "")
        .replace(" as u128", "")
        .replace("expected u64", "expected a whole number of 0 or more")
        .replace("expected u32", "expected a whole number from 0 to 4294967295")
        .replace("expected u16", "expected a whole number from 0 to 65535")
        .replace("expected u8", "expected a whole number from 0 to 255")
        .replace("expected any value", "expected a smaller number")
        .replace(
            "data did not match any variant of untagged enum FacilityCodesToml",
            "expected a list of facility codes such as [1] (whole numbers, without quotes), or \"any\"",
        )
}

/// The line on which a dotted key such as `doors[1].reader.d1` is written, found through the
/// TOML parser's spans; `None` when the key is not in the text (a default was used).
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut span = None;
    let mut segments = key.split('.').peekable();
    while let Some(segment) = segments.next() {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let mut value = table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == name)
            .map(|(_, v)| v)?;
        if let Some(index) = index {
            match value.get_ref() {
                DeValue::Array(items) => value = items.get(index)?,
                _ => return None,
            }
        }
        span = Some(value.span());
        if segments.peek().is_some() {
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => return None,
            }
        }
    }
    span.map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
}
