//! The rules a contact point must meet, shared by every way one comes in (the API, the
//! status page's sign-up form), with errors that name the field and say what to fix.
//!
//! Email addresses follow RFC 5321 through lettre's `Address`, the same parser the email
//! worker builds messages with, so an address accepted here is never refused at send time;
//! phone numbers must be valid E.164 numbers per libphonenumber's metadata (the `phonenumber`
//! crate) and are returned in E.164 form. Webhook URLs have their own rules in
//! [`crate::network`]; the name resolution they also need is I/O and lives with the callers.

use std::str::FromStr;

use crate::DomainError;

/// A checked email address, as lettre writes it; `field` names the input in the error.
pub fn email(field: &'static str, raw: &str) -> Result<String, DomainError> {
    let raw = raw.trim();
    lettre::Address::from_str(raw)
        .map(|address| address.to_string())
        .map_err(|e| DomainError::invalid(field, format!("{raw:?} is not an email address ({e})")))
}

/// A checked phone number in E.164 form (`+14155552671`); `field` names the input.
pub fn phone(field: &'static str, raw: &str) -> Result<String, DomainError> {
    let invalid = |reason: String| DomainError::invalid(field, reason);
    // Spaces, dots, dashes and brackets are how people write numbers; the rest must parse.
    let compact: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
        .collect();
    if !compact.starts_with('+') {
        return Err(invalid(format!(
            "{raw:?} must be in E.164 form, with + and the country code, e.g. +14155550100"
        )));
    }
    let number = phonenumber::parse(None, &compact)
        .map_err(|e| invalid(format!("{raw:?} is not a phone number ({e})")))?;
    if !phonenumber::is_valid(&number) {
        return Err(invalid(format!(
            "{raw:?} is not a valid number for its country"
        )));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses_are_normalised_and_bad_ones_name_the_field() {
        assert_eq!(email("e", " ops@example.com ").unwrap(), "ops@example.com");
        assert_eq!(phone("p", "+1 415 555 2671").unwrap(), "+14155552671");
        assert_eq!(phone("p", "+1 (415) 555-2671").unwrap(), "+14155552671");
        for bad in ["not-an-address", "a@b@c", ""] {
            let e = email("contacts.email", bad).unwrap_err().to_string();
            assert!(e.contains("contacts.email"), "{bad}: {e}");
        }
        for bad in ["4155552671", "+1 123", "+"] {
            let e = phone("contacts.phone", bad).unwrap_err().to_string();
            assert!(e.contains("contacts.phone"), "{bad}: {e}");
        }
    }
}
