//! Asking the operator before a command changes what cannot be undone (a deletion, a replay).
//!
//! A script has nobody to answer, so without a terminal on standard input the command is
//! refused unless `--yes` says the answer beforehand: silence never counts as consent.

use std::io::{BufRead, IsTerminal, Write};

use crate::client::CtlError;

/// Asks `question` on stderr and reads the answer from stdin; true when it starts with `y`.
/// `--yes` answers without asking; `flag_hint` says what the command would do with it
/// ("delete the subscriber").
pub(crate) fn confirm(question: &str, yes: bool, flag_hint: &str) -> Result<bool, CtlError> {
    if yes {
        return Ok(true);
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    ask(
        question,
        flag_hint,
        interactive,
        stdin.lock(),
        std::io::stderr(),
    )
}

fn ask(
    question: &str,
    flag_hint: &str,
    interactive: bool,
    mut input: impl BufRead,
    mut prompt: impl Write,
) -> Result<bool, CtlError> {
    if !interactive {
        return Err(CtlError::Usage(format!(
            "standard input is not a terminal, so nobody can confirm; pass --yes to \
             {flag_hint} without asking"
        )));
    }
    // A prompt that cannot be shown is still answered; the question is only a courtesy.
    let _ = write!(prompt, "{question} [y/N] ");
    let _ = prompt.flush();
    let mut answer = String::new();
    input
        .read_line(&mut answer)
        .map_err(|e| CtlError::Usage(format!("reading the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(interactive: bool, typed: &str) -> Result<bool, CtlError> {
        let mut shown = Vec::new();
        let result = ask(
            "Replay 3?",
            "replay",
            interactive,
            typed.as_bytes(),
            &mut shown,
        );
        if interactive {
            assert_eq!(String::from_utf8(shown).unwrap(), "Replay 3? [y/N] ");
        }
        result
    }

    #[test]
    fn only_an_explicit_yes_confirms() {
        assert!(answer(true, "y\n").unwrap());
        assert!(answer(true, "YES\n").unwrap());
        assert!(!answer(true, "\n").unwrap());
        assert!(!answer(true, "n\n").unwrap());
        assert!(!answer(true, "").unwrap(), "end of input is a no");
    }

    #[test]
    fn without_a_terminal_the_command_is_refused_and_told_about_yes() {
        let error = answer(false, "y\n").unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error.to_string().contains("pass --yes to replay"),
            "{error}"
        );
        assert!(
            confirm("Replay?", true, "replay").unwrap(),
            "--yes asks nobody"
        );
    }
}
