//! The part of the compose file format the checks read, as serde types, and the files they
//! read from the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
// serde_yaml is archived and deprecated by its author; serde_norway is the maintained fork
// with the same API (and YAML merge keys, which the compose file uses for shared settings).
use serde_norway::Value;

use super::SERVICE_BINARIES;

#[derive(Debug, Deserialize)]
pub(super) struct Compose {
    pub(super) services: BTreeMap<String, Service>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Service {
    pub(super) image: Option<String>,
    pub(super) build: Option<Build>,
    pub(super) command: Option<Words>,
    pub(super) entrypoint: Option<Words>,
    #[serde(default)]
    pub(super) environment: Environment,
    #[serde(default)]
    pub(super) ports: Vec<Value>,
    pub(super) container_name: Option<String>,
    #[serde(default)]
    pub(super) depends_on: DependsOn,
    pub(super) healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub(super) profiles: Vec<String>,
    pub(super) restart: Option<String>,
    #[serde(default)]
    pub(super) volumes: Vec<Value>,
    /// How long compose waits after SIGTERM before SIGKILL, e.g. `30s` (default 10 s).
    pub(super) stop_grace_period: Option<String>,
}

/// `build: .` or `build: {context, dockerfile}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Build {
    Context(String),
    Full {
        context: Option<String>,
        dockerfile: Option<String>,
    },
}

/// A command as one shell-style string or as a list of words.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Words {
    Line(String),
    List(Vec<String>),
}

impl Words {
    pub(super) fn words(&self) -> Vec<String> {
        match self {
            Words::Line(line) => line.split_whitespace().map(str::to_owned).collect(),
            Words::List(list) => list.clone(),
        }
    }
}

/// `environment:` as a mapping or as a list of `NAME=value`.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub(super) enum Environment {
    #[default]
    None,
    Map(BTreeMap<String, Option<Value>>),
    List(Vec<String>),
}

impl Environment {
    pub(super) fn names(&self) -> BTreeSet<String> {
        match self {
            Environment::None => BTreeSet::new(),
            Environment::Map(map) => map.keys().cloned().collect(),
            Environment::List(list) => list
                .iter()
                .map(|entry| {
                    entry
                        .split_once('=')
                        .map_or(entry.as_str(), |(name, _)| name)
                        .to_owned()
                })
                .collect(),
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<String> {
        match self {
            Environment::None => None,
            Environment::Map(map) => map.get(name).cloned().flatten().map(|value| match value {
                Value::String(s) => s,
                other => serde_norway::to_string(&other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            }),
            Environment::List(list) => list.iter().find_map(|entry| {
                entry
                    .split_once('=')
                    .filter(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_owned())
            }),
        }
    }
}

/// `depends_on:` as a list of names or as a mapping with conditions.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub(super) enum DependsOn {
    #[default]
    None,
    List(Vec<String>),
    Map(BTreeMap<String, Dependency>),
}

#[derive(Debug, Deserialize)]
pub(super) struct Dependency {
    pub(super) condition: Option<String>,
}

impl DependsOn {
    /// Each dependency with its condition (compose's default is `service_started`).
    pub(super) fn conditions(&self) -> Vec<(String, String)> {
        const STARTED: &str = "service_started";
        match self {
            DependsOn::None => Vec::new(),
            DependsOn::List(names) => names
                .iter()
                .map(|n| (n.clone(), STARTED.to_owned()))
                .collect(),
            DependsOn::Map(map) => map
                .iter()
                .map(|(n, d)| {
                    (
                        n.clone(),
                        d.condition.clone().unwrap_or_else(|| STARTED.to_owned()),
                    )
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Healthcheck {
    pub(super) test: Option<Words>,
    #[serde(default)]
    pub(super) disable: bool,
}

impl Healthcheck {
    pub(super) fn is_active(&self) -> bool {
        let test = self.test.as_ref().map(Words::words).unwrap_or_default();
        !self.disable && !test.is_empty() && test[0] != "NONE"
    }
}

impl Service {
    pub(super) fn command_words(&self) -> Vec<String> {
        self.command.as_ref().map(Words::words).unwrap_or_default()
    }

    /// The workspace binary this service runs, if it runs one.
    pub(super) fn binary(&self) -> Option<String> {
        let first = self.command_words().into_iter().next()?;
        (first.starts_with("tocsin-") || SERVICE_BINARIES.contains(&first.as_str()))
            .then_some(first)
    }

    pub(super) fn dockerfile(&self) -> Option<PathBuf> {
        let (context, dockerfile) = match self.build.as_ref()? {
            Build::Context(context) => (Some(context.as_str()), None),
            Build::Full {
                context,
                dockerfile,
            } => (context.as_deref(), dockerfile.as_deref()),
        };
        let context = repo_root().join(context.unwrap_or("."));
        Some(normalise(&context.join(dockerfile.unwrap_or("Dockerfile"))))
    }
}

pub(super) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_owned()
}

/// `a/./b/../c` as `a/c`, without touching the file system.
pub(super) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

pub(super) fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub(super) fn load_compose() -> Compose {
    let mut value: Value =
        serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    // Compose expands `<<: *anchor` merge keys; so must we before reading the services.
    value
        .apply_merge()
        .expect("docker-compose.yml's merge keys are well-formed");
    serde_norway::from_value(value).expect("docker-compose.yml has the shape of a compose file")
}

/// Seconds in a compose duration such as `30s`, `1m30s` or `2m`.
pub(super) fn compose_seconds(duration: &str) -> Option<u64> {
    let (mut total, mut number) = (0, String::new());
    for c in duration.chars() {
        match c {
            '0'..='9' => number.push(c),
            'm' | 's' | 'h' => {
                let unit = match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                total += number.parse::<u64>().ok()? * unit;
                number.clear();
            }
            _ => return None,
        }
    }
    number.is_empty().then_some(total)
}
