//! Subscriber files for `tocsinctl import`: CSV with a header row, or JSON lines.
//!
//! Only the shape is checked here (names of channels, severities and event kinds, clock
//! times); contact details are checked by the server, which owns those rules. A row whose
//! shape is wrong is rejected here with its line number and never sent.
//!
//! CSV columns, in any order, are listed with their formats in [`CSV_COLUMNS`] (which
//! `import --help` prints). Lists are separated by `;` (`email;sms`, `api;dashboard`).
//! JSON lines carry the same fields nested, and add per-channel event kinds:
//!
//! ```json
//! {"external_id":"acme","contacts":{"email":"ops@acme.example"},
//!  "preferences":{"channels":["email","sms"],"components":["api"],"min_severity":"major",
//!   "kinds":{"sms":["opened","resolved"]},
//!   "quiet_hours":{"time_zone":"Europe/Paris","start":"22:00","end":"07:00"}}}
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use serde::Deserialize;
use tocsin_proto::v1;

use crate::client::CtlError;

/// How the file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// The format a file name implies, if it implies one.
    pub(crate) fn from_path(path: &str) -> Option<Format> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if [".jsonl", ".ndjson", ".json"]
            .iter()
            .any(|ext| lower.ends_with(ext))
        {
            Some(Format::Jsonl)
        } else {
            None
        }
    }
}

/// One row ready to send, with the line it came from.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) line: u64,
    pub(crate) request: v1::UpsertSubscriberRequest,
}

/// A row refused, here or by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub(crate) line: u64,
    pub(crate) external_id: String,
    pub(crate) field: String,
    pub(crate) message: String,
}

#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) rows: Vec<Row>,
    pub(crate) rejected: Vec<Rejected>,
}

/// Reads a whole file. A file that cannot be read at all (no header, not UTF-8) is an error;
/// a bad row is only rejected.
pub(crate) fn parse(format: Format, input: impl Read) -> Result<Parsed, CtlError> {
    match format {
        Format::Csv => parse_csv(input),
        Format::Jsonl => parse_json_lines(input),
    }
}

/// A CSV column: its header, whether a file must have it, and what a cell holds.
pub(crate) struct CsvColumn {
    pub(crate) name: &'static str,
    pub(crate) required: bool,
    pub(crate) format: &'static str,
}

/// Every column the parser accepts. `import --help` lists these same entries, so the help
/// cannot drift from what is read.
pub(crate) const CSV_COLUMNS: [CsvColumn; 9] = [
    CsvColumn {
        name: "external_id",
        required: true,
        format: "your id for the subscriber (a customer or account id)",
    },
    CsvColumn {
        name: "email",
        required: false,
        format: "an email address",
    },
    CsvColumn {
        name: "phone",
        required: false,
        format: "a phone number in E.164 form, e.g. +14155550100",
    },
    CsvColumn {
        name: "webhook_url",
        required: false,
        format: "an https URL on a public address",
    },
    CsvColumn {
        name: "channels",
        required: true,
        format: "email, sms and/or webhook, separated by ; (email;sms)",
    },
    CsvColumn {
        name: "components",
        required: false,
        format: "components followed, separated by ; (api;dashboard); empty: every component",
    },
    CsvColumn {
        name: "min_severity",
        required: false,
        format: "minor, major or critical; empty: minor (everything)",
    },
    CsvColumn {
        name: "quiet_hours",
        required: false,
        format: "<IANA zone> HH:MM-HH:MM, e.g. Europe/Paris 22:00-07:00 (critical is never held)",
    },
    CsvColumn {
        name: "consent",
        required: false,
        format: "how the person agreed to be told, kept in the consent log",
    },
];

/// The CSV columns as `import --help` shows them, one a line.
pub(crate) fn csv_columns_help() -> String {
    let width = CSV_COLUMNS.iter().map(|c| c.name.len()).max().unwrap_or(0);
    CSV_COLUMNS
        .iter()
        .map(|c| {
            let required = if c.required { "required" } else { "optional" };
            format!("  {:<width$}  {required}: {}", c.name, c.format)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// File line numbers from byte offsets, counted forward as records come in order.
///
/// The csv crate's own line count is one short in files with CRLF line ends: it takes a
/// record's position before it consumes the `\n` of the `\r\n` ending the line before.
struct Lines<'a> {
    data: &'a [u8],
    counted_to: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(data: &'a [u8]) -> Lines<'a> {
        Lines {
            data,
            counted_to: 0,
            line: 1,
        }
    }

    /// The line of the record the csv crate says starts at `byte`: the first byte after any
    /// line ends there, as `\r\n`, `\n` and a lone `\r` all end a line.
    fn of(&mut self, byte: u64) -> u64 {
        let mut start = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        while matches!(self.data.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        if start < self.counted_to {
            return self.line;
        }
        for i in self.counted_to..start {
            let ends_line = match self.data[i] {
                b'\n' => true,
                b'\r' => self.data.get(i + 1) != Some(&b'\n'),
                _ => false,
            };
            if ends_line {
                self.line += 1;
            }
        }
        self.counted_to = start;
        self.line
    }
}

fn parse_csv(mut input: impl Read) -> Result<Parsed, CtlError> {
    // The whole file in memory (100,000 rows are a few megabytes), for line numbers by offset.
    let mut data = Vec::new();
    input
        .read_to_end(&mut data)
        .map_err(|e| CtlError::Usage(format!("reading the CSV file: {e}")))?;
    let mut lines = Lines::new(&data);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(data.as_slice());
    let headers = reader
        .headers()
        .map_err(|e| CtlError::Usage(format!("reading the CSV header: {e}")))?
        .clone();
    let columns: Vec<String> = headers.iter().map(str::to_ascii_lowercase).collect();
    if let Some(unknown) = columns
        .iter()
        .find(|c| !CSV_COLUMNS.iter().any(|known| known.name == c.as_str()))
    {
        let names: Vec<&str> = CSV_COLUMNS.iter().map(|c| c.name).collect();
        return Err(CtlError::Usage(format!(
            "unknown CSV column {unknown:?}; the columns are {}",
            names.join(", ")
        )));
    }
    for required in CSV_COLUMNS.iter().filter(|c| c.required).map(|c| c.name) {
        if !columns.iter().any(|c| c == required) {
            return Err(CtlError::Usage(format!(
                "the CSV header has no {required:?} column"
            )));
        }
    }
    let mut parsed = Parsed::default();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.of(p.byte()));
                parsed.rejected.push(Rejected {
                    line,
                    external_id: String::new(),
                    field: "row".into(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| lines.of(p.byte()));
        let cell = |name: &str| -> &str {
            columns
                .iter()
                .position(|c| c == name)
                .and_then(|i| record.get(i))
                .unwrap_or("")
        };
        let external_id = cell("external_id").to_owned();
        match csv_request(&cell) {
            Ok(request) => parsed.rows.push(Row { line, request }),
            Err((field, message)) => parsed.rejected.push(Rejected {
                line,
                external_id,
                field: field.into(),
                message,
            }),
        }
    }
    Ok(parsed)
}

type FieldError = (&'static str, String);

fn list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split([';', '|'])
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn csv_request<'a>(
    cell: &dyn Fn(&str) -> &'a str,
) -> Result<v1::UpsertSubscriberRequest, FieldError> {
    let channels = list(cell("channels"))
        .map(|name| channel(name).map_err(|m| ("preferences.channels", m)))
        .collect::<Result<Vec<_>, _>>()?;
    let min_severity = match cell("min_severity") {
        "" => v1::Severity::Unspecified as i32,
        name => severity(name).map_err(|m| ("preferences.min_severity", m))?,
    };
    let quiet_hours = match cell("quiet_hours") {
        "" => None,
        raw => Some(quiet_hours_cell(raw).map_err(|m| ("preferences.quiet_hours", m))?),
    };
    Ok(v1::UpsertSubscriberRequest {
        consent: cell("consent").to_owned(),
        external_id: cell("external_id").to_owned(),
        contacts: Some(v1::Contacts {
            email: cell("email").to_owned(),
            phone: cell("phone").to_owned(),
            webhook_url: cell("webhook_url").to_owned(),
        }),
        preferences: Some(v1::Preferences {
            channels,
            components: list(cell("components")).map(str::to_owned).collect(),
            min_severity,
            kinds: Vec::new(),
            quiet_hours,
        }),
    })
}

/// `Europe/Paris 22:00-07:00`.
fn quiet_hours_cell(raw: &str) -> Result<v1::QuietHours, String> {
    let (zone, window) = raw
        .rsplit_once(' ')
        .ok_or_else(|| format!("{raw:?} is not of the form \"Europe/Paris 22:00-07:00\""))?;
    let (start, end) = window
        .split_once('-')
        .ok_or_else(|| format!("{window:?} is not of the form \"22:00-07:00\""))?;
    Ok(v1::QuietHours {
        time_zone: zone.trim().to_owned(),
        start_minute: minute_of_day(start)?,
        end_minute: minute_of_day(end)?,
    })
}

fn minute_of_day(raw: &str) -> Result<u32, String> {
    let invalid = || format!("{raw:?} is not a time of day like 07:30");
    let (h, m) = raw.trim().split_once(':').ok_or_else(invalid)?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| invalid())?,
        m.parse().map_err(|_| invalid())?,
    );
    if h > 23 || m > 59 {
        return Err(invalid());
    }
    Ok(h * 60 + m)
}

fn channel(name: &str) -> Result<i32, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "email" => v1::Channel::Email,
        "sms" => v1::Channel::Sms,
        "webhook" => v1::Channel::Webhook,
        _ => return Err(format!("{name:?} is not one of email, sms, webhook")),
    } as i32)
}

pub(crate) fn severity(name: &str) -> Result<i32, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "minor" => v1::Severity::Minor,
        "major" => v1::Severity::Major,
        "critical" => v1::Severity::Critical,
        _ => return Err(format!("{name:?} is not one of minor, major, critical")),
    } as i32)
}

pub(crate) fn event_kind(name: &str) -> Result<i32, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "opened" => v1::EventKind::Opened,
        "updated" => v1::EventKind::Updated,
        "resolved" => v1::EventKind::Resolved,
        "reopened" => v1::EventKind::Reopened,
        "maintenance_scheduled" => v1::EventKind::MaintenanceScheduled,
        "maintenance_started" => v1::EventKind::MaintenanceStarted,
        "maintenance_completed" => v1::EventKind::MaintenanceCompleted,
        "review" => v1::EventKind::Review,
        _ => {
            return Err(format!(
                "{name:?} is not one of opened, updated, resolved, reopened, review, \
                 maintenance_scheduled, maintenance_started, maintenance_completed"
            ));
        }
    } as i32)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    external_id: String,
    #[serde(default)]
    contacts: JsonContacts,
    preferences: JsonPreferences,
    #[serde(default)]
    consent: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonContacts {
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    webhook_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPreferences {
    channels: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    min_severity: Option<String>,
    #[serde(default)]
    kinds: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    quiet_hours: Option<JsonQuietHours>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonQuietHours {
    time_zone: String,
    start: String,
    end: String,
}

fn parse_json_lines(input: impl Read) -> Result<Parsed, CtlError> {
    let mut parsed = Parsed::default();
    for (index, line) in std::io::BufReader::new(input).lines().enumerate() {
        let line_number = index as u64 + 1;
        let line = line.map_err(|e| CtlError::Usage(format!("reading line {line_number}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: JsonRow = match serde_json::from_str(&line) {
            Ok(row) => row,
            Err(e) => {
                parsed.rejected.push(Rejected {
                    line: line_number,
                    external_id: String::new(),
                    field: "row".into(),
                    message: format!("not a subscriber object: {e}"),
                });
                continue;
            }
        };
        let external_id = row.external_id.clone();
        match json_request(row) {
            Ok(request) => parsed.rows.push(Row {
                line: line_number,
                request,
            }),
            Err((field, message)) => parsed.rejected.push(Rejected {
                line: line_number,
                external_id,
                field: field.into(),
                message,
            }),
        }
    }
    Ok(parsed)
}

fn json_request(row: JsonRow) -> Result<v1::UpsertSubscriberRequest, FieldError> {
    let p = row.preferences;
    let channels = p
        .channels
        .iter()
        .map(|name| channel(name).map_err(|m| ("preferences.channels", m)))
        .collect::<Result<Vec<_>, _>>()?;
    let min_severity = match p.min_severity.as_deref() {
        None | Some("") => v1::Severity::Unspecified as i32,
        Some(name) => severity(name).map_err(|m| ("preferences.min_severity", m))?,
    };
    let kinds = p
        .kinds
        .iter()
        .map(|(name, kinds)| {
            Ok(v1::ChannelKinds {
                channel: channel(name).map_err(|m| ("preferences.kinds", m))?,
                kinds: kinds
                    .iter()
                    .map(|k| event_kind(k).map_err(|m| ("preferences.kinds", m)))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect::<Result<Vec<_>, FieldError>>()?;
    let quiet_hours = p
        .quiet_hours
        .map(|q| {
            Ok(v1::QuietHours {
                time_zone: q.time_zone,
                start_minute: minute_of_day(&q.start)
                    .map_err(|m| ("preferences.quiet_hours.start", m))?,
                end_minute: minute_of_day(&q.end)
                    .map_err(|m| ("preferences.quiet_hours.end", m))?,
            })
        })
        .transpose()?;
    Ok(v1::UpsertSubscriberRequest {
        consent: row.consent,
        external_id: row.external_id,
        contacts: Some(v1::Contacts {
            email: row.contacts.email,
            phone: row.contacts.phone,
            webhook_url: row.contacts.webhook_url,
        }),
        preferences: Some(v1::Preferences {
            channels,
            components: p.components,
            min_severity,
            kinds,
            quiet_hours,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_requests_and_bad_rows_are_rejected_with_their_line() {
        let file = "\
external_id,email,phone,channels,components,min_severity,quiet_hours,consent
acme,ops@acme.example,,email,api;dashboard,major,Europe/Paris 22:00-07:00,signed contract
globex,,+14155550100,email;sms,,,,
initech,ops@initech.example,,fax,,,,
hooli,ops@hooli.example,,email,,,Europe/Paris 25:00-07:00,
";
        let parsed = parse(Format::Csv, file.as_bytes()).unwrap();
        assert_eq!(parsed.rows.len(), 2);
        let acme = &parsed.rows[0];
        assert_eq!(acme.line, 2);
        let prefs = acme.request.preferences.as_ref().unwrap();
        assert_eq!(prefs.channels, [v1::Channel::Email as i32]);
        assert_eq!(prefs.components, ["api", "dashboard"]);
        assert_eq!(prefs.min_severity, v1::Severity::Major as i32);
        let quiet = prefs.quiet_hours.as_ref().unwrap();
        assert_eq!(
            (
                quiet.time_zone.as_str(),
                quiet.start_minute,
                quiet.end_minute
            ),
            ("Europe/Paris", 1320, 420)
        );
        assert_eq!(acme.request.consent, "signed contract");
        let globex = &parsed.rows[1].request;
        assert_eq!(globex.consent, "");
        assert_eq!(globex.contacts.as_ref().unwrap().phone, "+14155550100");
        assert_eq!(
            globex.preferences.as_ref().unwrap().channels,
            [v1::Channel::Email as i32, v1::Channel::Sms as i32]
        );
        let rejected: Vec<(u64, &str, &str)> = parsed
            .rejected
            .iter()
            .map(|r| (r.line, r.external_id.as_str(), r.field.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [
                (4, "initech", "preferences.channels"),
                (5, "hooli", "preferences.quiet_hours")
            ]
        );
    }

    #[test]
    fn a_csv_header_with_an_unknown_or_missing_column_fails_before_anything_is_sent() {
        let typo = "external_id,emial,channels\nacme,a@b.example,email\n";
        let err = parse(Format::Csv, typo.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("\"emial\""), "{err}");
        let missing = "external_id,email\nacme,a@b.example\n";
        let err = parse(Format::Csv, missing.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("channels"), "{err}");
    }

    #[test]
    fn json_lines_carry_kinds_and_quiet_hours_and_bad_lines_are_rejected() {
        let file = r#"{"external_id":"acme","contacts":{"email":"ops@acme.example","phone":"+14155550100"},"preferences":{"channels":["email","sms"],"kinds":{"sms":["opened","resolved"]},"quiet_hours":{"time_zone":"UTC","start":"22:00","end":"07:00"}}}

{"external_id":"globex","preferences":{"channels":["pager"]}}
{"external_id":"initech","preferences":{"channels":["email"]},"colour":"blue"}
not json
"#;
        let parsed = parse(Format::Jsonl, file.as_bytes()).unwrap();
        assert_eq!(parsed.rows.len(), 1);
        let prefs = parsed.rows[0].request.preferences.as_ref().unwrap();
        assert_eq!(prefs.kinds.len(), 1);
        assert_eq!(prefs.kinds[0].channel, v1::Channel::Sms as i32);
        assert_eq!(
            prefs.kinds[0].kinds,
            [v1::EventKind::Opened as i32, v1::EventKind::Resolved as i32]
        );
        let lines: Vec<(u64, &str)> = parsed
            .rejected
            .iter()
            .map(|r| (r.line, r.field.as_str()))
            .collect();
        assert_eq!(lines, [(3, "preferences.channels"), (4, "row"), (5, "row")]);
        assert!(parsed.rejected[1].message.contains("colour"));
    }

    #[test]
    fn crlf_line_ends_keep_the_line_numbers_of_the_file() {
        let file = "external_id,email,channels\r\n\
                    ann,ann@example.com,email\r\n\
                    bob,bob@example.com,email\r\n\
                    cat,cat@example.com,fax\r\n\
                    \"dan\",\"dan@example.com\",\"email\"\r\n\
                    eve,eve@example.com,pager\r\n";
        let parsed = parse(Format::Csv, file.as_bytes()).unwrap();
        let rows: Vec<(u64, &str)> = parsed
            .rows
            .iter()
            .map(|r| (r.line, r.request.external_id.as_str()))
            .collect();
        assert_eq!(rows, [(2, "ann"), (3, "bob"), (5, "dan")]);
        let rejected: Vec<(u64, &str)> = parsed
            .rejected
            .iter()
            .map(|r| (r.line, r.external_id.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [(4, "cat"), (6, "eve")],
            "the 3rd data row is line 4"
        );
        // The same for JSON lines written on Windows.
        let jsonl = "{\"external_id\":\"ann\",\"preferences\":{\"channels\":[\"email\"]}}\r\n\
                     \r\n\
                     {\"external_id\":\"bob\",\"preferences\":{\"channels\":[\"fax\"]}}\r\n";
        let parsed = parse(Format::Jsonl, jsonl.as_bytes()).unwrap();
        assert_eq!(parsed.rows[0].line, 1);
        assert_eq!(parsed.rejected[0].line, 3);
    }

    #[test]
    fn a_quoted_cell_over_two_lines_does_not_shift_the_rows_after_it() {
        let file = "external_id,consent,channels\r\n\
                    ann,\"signed\r\nin person\",email\r\n\
                    bob,,fax\r\n";
        let parsed = parse(Format::Csv, file.as_bytes()).unwrap();
        assert_eq!(parsed.rows[0].line, 2);
        assert_eq!(parsed.rows[0].request.consent, "signed\r\nin person");
        assert_eq!(parsed.rejected[0].line, 4);
    }

    #[test]
    fn every_column_the_parser_reads_is_in_the_help() {
        let help = csv_columns_help();
        for column in &CSV_COLUMNS {
            let line = help
                .lines()
                .find(|l| l.split_whitespace().next() == Some(column.name))
                .unwrap_or_else(|| panic!("{} missing from\n{help}", column.name));
            assert!(line.contains(column.format), "{line}");
        }
        let header: Vec<&str> = CSV_COLUMNS.iter().map(|c| c.name).collect();
        let file = format!("{}\n", header.join(","));
        assert!(
            parse(Format::Csv, file.as_bytes()).is_ok(),
            "every listed column is accepted"
        );
    }

    #[test]
    fn formats_follow_the_file_name() {
        assert_eq!(Format::from_path("subs.CSV"), Some(Format::Csv));
        assert_eq!(Format::from_path("subs.jsonl"), Some(Format::Jsonl));
        assert_eq!(Format::from_path("-"), None);
    }
}
