//! `NMC_*` environment overrides of the configuration file, typed by the field they set.
//!
//! `NMC_<KEY>` sets top-level key `<key>` (lowercased); `__` steps into a table:
//! `NMC_SOURCE_LATENESS_SECS__AWS_CLOUDTRAIL=900` sets `source_lateness_secs.aws_cloudtrail`.
//! The value is read as the type the field has (from the defaults), not guessed from the text:
//! `NMC_NODE_ID=42` is the string `"42"`, `NMC_BATCH_SIZE=x` is an error naming the variable.
//! Lists are comma-separated; a table may also be given whole as an inline TOML table
//! (`NMC_SOURCE_LATENESS_SECS='{ aws_cloudtrail = 900 }'`). Map entries (whose keys are not in
//! the defaults) take the type their map declares in [`MAP_VALUES`].

use anyhow::{Context, Result, bail};
use toml::{Table, Value};

/// The type of the values of each map-typed key (keys chosen by the operator, so absent from
/// the defaults), by path.
pub const MAP_VALUES: &[(&str, Kind)] = &[
    ("source_lateness_secs", Kind::Integer),
    ("source_feed_silence_secs", Kind::Integer),
    ("placeholders", Kind::List),
];

/// The type an override is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text as is.
    String,
    /// A whole number.
    Integer,
    /// A number.
    Float,
    /// `true` or `false`.
    Boolean,
    /// Comma-separated strings.
    List,
    /// An inline TOML table.
    Table,
}

impl Kind {
    /// The kind of a default value.
    fn of(v: &Value) -> Kind {
        match v {
            Value::String(_) | Value::Datetime(_) => Kind::String,
            Value::Integer(_) => Kind::Integer,
            Value::Float(_) => Kind::Float,
            Value::Boolean(_) => Kind::Boolean,
            Value::Array(_) => Kind::List,
            Value::Table(_) => Kind::Table,
        }
    }

    /// Reads `text` (the value of variable `var`) as this kind.
    fn read(self, var: &str, text: &str) -> Result<Value> {
        let bad = |what: &str| format!("{var}={text:?}: expected {what}");
        Ok(match self {
            Kind::String => Value::String(text.to_owned()),
            Kind::Integer => {
                Value::Integer(text.trim().parse().with_context(|| bad("a whole number"))?)
            }
            Kind::Float => Value::Float(text.trim().parse().with_context(|| bad("a number"))?),
            Kind::Boolean => {
                Value::Boolean(text.trim().parse().with_context(|| bad("true or false"))?)
            }
            Kind::List => Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
            Kind::Table => Value::Table(
                format!("v = {text}")
                    .parse::<Table>()
                    .ok()
                    .and_then(|mut t| match t.remove("v") {
                        Some(Value::Table(t)) => Some(t),
                        _ => None,
                    })
                    .with_context(|| bad("an inline TOML table such as `{ key = value }`"))?,
            ),
        })
    }
}

/// Applies the `NMC_*` variables of `env` to `table` (the configuration file's contents), using
/// `defaults` (the serialized default configuration) for the keys and their types. Variables
/// that name no key are left alone (tools read some, e.g. `NMC_LOG`, `NMC_CONFIG`).
pub fn apply(
    table: &mut Table,
    defaults: &Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("NMC_"))
        .collect();
    // Whole tables before their entries, whatever order the environment lists them in.
    vars.sort();
    for (var, text) in vars {
        let path: Vec<String> = var["NMC_".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let Some(kind) = kind_of(defaults, &path) else {
            continue;
        };
        let value = kind.read(&var, &text)?;
        set(table, &path, value).with_context(|| format!("applying {var}"))?;
    }
    Ok(())
}

/// The kind of the value at `path`, if it names a configuration key.
fn kind_of(defaults: &Table, path: &[String]) -> Option<Kind> {
    let (last, parents) = path.split_last()?;
    let mut table = defaults;
    for (i, p) in parents.iter().enumerate() {
        match table.get(p) {
            Some(Value::Table(t)) => table = t,
            // A map whose entries the operator names: its declared value type.
            None if i + 1 == parents.len() => return map_value(&path[..=i]),
            _ => return None,
        }
    }
    match table.get(last) {
        Some(v) => Some(Kind::of(v)),
        None => map_value(parents),
    }
}

/// The declared value type of the map at `path`.
fn map_value(path: &[String]) -> Option<Kind> {
    let key = path.join(".");
    MAP_VALUES
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, kind)| *kind)
}

/// Sets `path` in `table` to `value`, creating tables on the way.
fn set(table: &mut Table, path: &[String], value: Value) -> Result<()> {
    let (last, parents) = path.split_last().expect("a path has a key");
    let mut t = table;
    for p in parents {
        let next = t
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match next {
            Value::Table(inner) => t = inner,
            _ => bail!("`{p}` is not a table"),
        }
    }
    t.insert(last.clone(), value);
    Ok(())
}
