//! How a service ends when it cannot go on: one line naming what failed, causes included
//! ("connecting to NATS at nats://nats:4222 (NATS_URL): timed out"), written through the
//! process's log format (one JSON object when `TOCSIN_LOG_FORMAT=json`), then a non-zero
//! exit. Never a multi-line `Error: … Caused by:` dump that log collectors split apart.

use std::process::ExitCode;

/// An error and its causes on one line, outermost first, separated by ": ". A cause whose
/// words the line already ends with (an error that prints its source itself) is not
/// repeated.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let words = cause.to_string().replace('\n', " ");
        if line.ends_with(&words) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&words);
    }
    line
}

/// The exit of a service's `main`: success, or the error logged as one line.
pub fn exit(service: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let error = one_line(&e);
            if tracing::dispatcher::has_been_set() {
                tracing::error!(%error, "{service} stopped");
            } else {
                eprintln!("{service}: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A connection URL fit for a log line: any password or token replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        // `user:password@` keeps the user; a lone `token@` (NATS token auth) is all secret.
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => format!("{scheme}://***@{host}{tail}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_read_once_on_one_line() {
        #[derive(Debug, thiserror::Error)]
        #[error("bus: {0}")]
        struct Wrapping(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("NATS unavailable: timed out")]
        struct Inner;
        let e = anyhow::Error::new(Wrapping(Inner)).context("running the resolver");
        assert_eq!(
            one_line(&e),
            "running the resolver: bus: NATS unavailable: timed out"
        );
    }

    #[test]
    fn passwords_are_hidden_and_the_rest_is_kept() {
        assert_eq!(
            redacted("postgres://tocsin:s3cret@db:5432/tocsin?sslmode=disable"),
            "postgres://tocsin:***@db:5432/tocsin?sslmode=disable"
        );
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redacted("nats://s3cret@nats:4222"), "nats://***@nats:4222");
        assert_eq!(redacted("not a url"), "not a url");
    }
}
