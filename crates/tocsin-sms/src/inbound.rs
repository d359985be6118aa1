//! Texts readers send back: the opt-out and opt-in keywords carriers and Twilio honour.
//!
//! A reply is a keyword when, trimmed and in any case, it is one of the words below and
//! nothing else ("Stop" is; "please stop texting me" is not, as Twilio itself reads it).
//! Twilio's Advanced Opt-Out also says which it matched in `OptOutType`; when present, that
//! wins, so a keyword the operator added in Twilio's console counts too.

/// What a reply asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// No more texts to this number.
    Stop,
    /// Texts again.
    Start,
    /// What is this and how do I stop it.
    Help,
    /// Anything else: not a request Tocsin acts on.
    Other,
}

const STOP_WORDS: [&str; 8] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
];
const START_WORDS: [&str; 3] = ["START", "YES", "UNSTOP"];
const HELP_WORDS: [&str; 2] = ["HELP", "INFO"];

impl Reply {
    /// Reads a reply's `Body` and, when Twilio sent one, its `OptOutType`.
    pub fn read(body: &str, opt_out_type: Option<&str>) -> Reply {
        match opt_out_type
            .map(|t| t.trim().to_ascii_uppercase())
            .as_deref()
        {
            Some("STOP") => return Reply::Stop,
            Some("START") => return Reply::Start,
            Some("HELP") => return Reply::Help,
            _ => {}
        }
        let word = body
            .trim()
            .trim_end_matches(['.', '!'])
            .to_ascii_uppercase();
        if STOP_WORDS.contains(&word.as_str()) {
            Reply::Stop
        } else if START_WORDS.contains(&word.as_str()) {
            Reply::Start
        } else if HELP_WORDS.contains(&word.as_str()) {
            Reply::Help
        } else {
            Reply::Other
        }
    }
}

/// The TwiML answer to a reply. Twilio answers STOP, START and HELP itself on numbers with
/// its default opt-out handling, so those get an empty response (no second confirmation);
/// any other text gets one line saying what this number is for.
pub fn twiml(reply: Reply, company: &str) -> String {
    match reply {
        Reply::Stop | Reply::Start | Reply::Help => {
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>".to_owned()
        }
        Reply::Other => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>{} sends service \
             status alerts from this number and cannot read replies. Reply STOP to opt out, \
             START to opt back in.</Message></Response>",
            xml_escape(company)
        ),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_whole_replies_in_any_case() {
        for (body, reply) in [
            ("STOP", Reply::Stop),
            (" stop ", Reply::Stop),
            ("Unsubscribe.", Reply::Stop),
            ("start", Reply::Start),
            ("UNSTOP", Reply::Start),
            ("help", Reply::Help),
            ("please stop texting me", Reply::Other),
            ("", Reply::Other),
        ] {
            assert_eq!(Reply::read(body, None), reply, "{body:?}");
        }
        // Twilio's own reading wins: a keyword added in its console counts.
        assert_eq!(Reply::read("ARRET", Some("STOP")), Reply::Stop);
        assert_eq!(Reply::read("STOP", Some("")), Reply::Stop);
    }

    #[test]
    fn only_other_texts_get_an_answer_and_it_is_escaped() {
        assert!(!twiml(Reply::Stop, "Acme").contains("<Message>"));
        let answer = twiml(Reply::Other, "A&B <Cloud>");
        assert!(
            answer.contains("A&amp;B &lt;Cloud&gt; sends service status alerts"),
            "{answer}"
        );
        assert!(answer.contains("Reply STOP to opt out"), "{answer}");
    }
}
