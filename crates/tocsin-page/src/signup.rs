//! `/subscribe`: self-service subscription with double opt-in.
//!
//! A visitor chooses channels (those the operator offers: `TOCSIN_SIGNUP_CHANNELS`), the
//! parts of the service and the lowest severity they care about. Nothing is sent from the web
//! request: the sign-up and its messages are written to PostgreSQL in one transaction and the
//! email and SMS workers send them ([`tocsin_core::account`]). An email address is confirmed
//! by the link in its message, a phone number by the code in its text; only a confirmed
//! address joins a subscriber, so nothing else ever reaches an address its owner did not
//! confirm. Unconfirmed sign-ups expire after a day (the code after 30 minutes, or five wrong
//! tries) and their addresses are deleted.
//!
//! | request | answer |
//! |---|---|
//! | `GET /subscribe` | the form, with an anti-forgery field tied to a cookie |
//! | `POST /subscribe`, valid | 200 "check your inbox", or 303 to the code form when a phone was given |
//! | `POST` with a field that does not hold | 400, the form with what to fix; nothing recorded |
//! | `POST` without a matching anti-forgery field | 403, a fresh form |
//! | `POST` past the client's hourly limit | 429 |
//! | `GET` / `POST /subscribe/confirm/{token}` | a button to confirm (link scanners follow GETs) / confirmed, with the preference link |
//! | `GET` / `POST /subscribe/verify/{token}` | the code form / confirmed, or 400 with tries left |
//! | an expired or used-up sign-up | 410 |
//!
//! The page never says whether an address is already subscribed: such an address gets a
//! message saying so (with its preference link) instead of a confirmation, and the visitor
//! sees exactly what anyone else sees. An address past its daily limit gets nothing, and the
//! visitor is told the same.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use rand::Rng;
use time::{Duration, OffsetDateTime};
use tocsin_core::account::AccountNotice;
use tocsin_core::links::{LinkClaims, LinkError, Purpose};
use tocsin_core::network::{UrlPolicy, WebhookUrl};
use tocsin_core::{Channel, ComponentFilter, Preferences, Severity, SubscriberId};
use tocsin_store::{
    CodeCheck, NewSignup, Signup, SignupAddress, SignupLimits, SignupRecorded, StoreError,
    SubscriberWrite,
};
use tracing::{error, info, instrument, warn};

use crate::{Pages, render};

/// How long a confirmation link works, and an unconfirmed sign-up lives.
const SIGNUP_LIFETIME: Duration = Duration::days(1);
/// How long a texted code works.
const CODE_LIFETIME: Duration = Duration::minutes(30);
/// Wrong codes accepted before a code is spent.
const MAX_CODE_TRIES: u32 = 5;
/// The anti-forgery cookie.
const CSRF_COOKIE: &str = "tocsin_csrf";
/// How long a preference link shown after confirming works.
const PREFERENCES_LINK_DAYS: i64 = 90;

/// What the operator allows visitors to sign up for.
#[derive(Debug, Clone)]
pub struct SignupConfig {
    /// The channels offered (email, SMS); none turns self-service sign-up off.
    pub channels: Vec<Channel>,
    pub limits: SignupLimits,
    /// A header a trusted proxy in front of the page puts the client's address in
    /// (`X-Forwarded-For`: its last entry); without it, the connection's peer address.
    pub client_ip_header: Option<HeaderName>,
    /// Which webhook URLs visitors may give, when webhooks are offered: public https only,
    /// unless the development allow-list (`TOCSIN_WEBHOOK_ALLOW`) says otherwise.
    pub webhook_policy: UrlPolicy,
}

impl Default for SignupConfig {
    fn default() -> Self {
        SignupConfig {
            channels: vec![Channel::Email, Channel::Sms],
            limits: SignupLimits::default(),
            client_ip_header: None,
            webhook_policy: UrlPolicy::strict(),
        }
    }
}

/// The form as the visitor filled it, kept to show it again with a problem.
#[derive(Debug, Default)]
struct Filled {
    channels: BTreeSet<Channel>,
    email: String,
    phone: String,
    webhook_url: String,
    only: Option<BTreeSet<String>>,
    min_severity: String,
}

fn field_values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn first<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    field_values(fields, name)
        .first()
        .copied()
        .unwrap_or_default()
}

/// The anti-forgery field for `cookie`: only a page that read the cookie can fill it in.
fn csrf_field(pages: &Pages, cookie: &str) -> String {
    hex::encode(pages.config.link_secret.digest("csrf", cookie.as_bytes()))
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The sign-up form, setting the anti-forgery cookie when the visitor has none.
async fn form(
    pages: &Pages,
    headers: &HeaderMap,
    status: StatusCode,
    filled: &Filled,
    problem: Option<String>,
) -> Response {
    let config = &pages.config.signup;
    if config.channels.is_empty() {
        return render(
            pages,
            StatusCode::NOT_FOUND,
            "notice.html",
            context! {
                title => "Sign-up is closed",
                paragraphs => vec![format!("{} does not take subscriptions on this page. Ask {0} to add you.", pages.config.company)],
            },
        );
    }
    let catalogue = match pages.store.components().await {
        Ok(catalogue) => catalogue,
        Err(e) => return unavailable(pages, &e),
    };
    let (cookie, fresh) = match cookie_value(headers, CSRF_COOKIE) {
        Some(cookie) => (cookie, false),
        None => (hex::encode(rand::rng().random::<[u8; 16]>()), true),
    };
    let channels: Vec<minijinja::Value> = config
        .channels
        .iter()
        .map(|c| {
            context! {
                id => c.as_str(),
                on => filled.channels.contains(c) || filled.channels.is_empty() && *c == Channel::Email,
            }
        })
        .collect();
    let components: Vec<minijinja::Value> = catalogue
        .iter()
        .map(|c| {
            context! {
                id => &c.id,
                name => &c.name,
                on => filled.only.as_ref().is_some_and(|o| o.contains(&c.id)),
            }
        })
        .collect();
    let severities: Vec<minijinja::Value> = severity_choices()
        .into_iter()
        .map(|(s, words)| {
            let on = if filled.min_severity.is_empty() {
                s == Severity::Minor
            } else {
                s.as_str() == filled.min_severity
            };
            context! { id => s.as_str(), words => words, on => on }
        })
        .collect();
    let mut response = render(
        pages,
        status,
        "subscribe.html",
        context! {
            error => problem,
            csrf => csrf_field(pages, &cookie),
            channels => channels,
            email => &filled.email,
            phone => &filled.phone,
            webhook_url => &filled.webhook_url,
            components => components,
            all_components => filled.only.is_none(),
            severities => severities,
        },
    );
    if fresh {
        let secure = if pages.config.public_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        // SameSite=Strict: no other site's form can send it; HttpOnly: no script reads it.
        let cookie = format!(
            "{CSRF_COOKIE}={cookie}; Path=/subscribe; HttpOnly; SameSite=Strict; Max-Age=86400{secure}"
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

fn severity_choices() -> [(Severity, &'static str); 3] {
    [
        (Severity::Minor, "Every incident"),
        (Severity::Major, "Major and critical incidents"),
        (Severity::Critical, "Critical incidents only"),
    ]
}

fn unavailable(pages: &Pages, e: &StoreError) -> Response {
    error!(error = %e, "sign-up: PostgreSQL unavailable");
    crate::html::unavailable(pages)
}

/// `GET /subscribe`.
pub(crate) async fn show(State(pages): State<Pages>, headers: HeaderMap) -> Response {
    form(&pages, &headers, StatusCode::OK, &Filled::default(), None).await
}

/// The client's address: the trusted proxy's header when configured, else the peer.
fn client_ip(
    config: &crate::signup::SignupConfig,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> IpAddr {
    config
        .client_ip_header
        .as_ref()
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        // A proxy appends the address it saw: the last entry is the one it vouches for.
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| peer.ip())
}

/// `POST /subscribe`.
#[instrument(skip_all, fields(signup_id))]
pub(crate) async fn submit(
    State(pages): State<Pages>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let offered = &pages.config.signup.channels;
    let filled = Filled {
        channels: field_values(&fields, "channel")
            .into_iter()
            .filter_map(|c| c.parse().ok())
            .filter(|c| offered.contains(c))
            .collect(),
        email: first(&fields, "email").trim().to_owned(),
        phone: first(&fields, "phone").trim().to_owned(),
        webhook_url: first(&fields, "webhook_url").trim().to_owned(),
        only: (first(&fields, "components") == "only").then(|| {
            field_values(&fields, "component")
                .into_iter()
                .map(str::to_owned)
                .collect()
        }),
        min_severity: first(&fields, "min_severity").to_owned(),
    };
    let forged = match cookie_value(&headers, CSRF_COOKIE) {
        Some(cookie) => !constant_eq(&csrf_field(&pages, &cookie), first(&fields, "csrf")),
        None => true,
    };
    if forged || offered.is_empty() {
        warn!("a sign-up without a valid anti-forgery field");
        let problem = "This form was open too long or came from elsewhere. Please check your choices and send it again.";
        return form(
            &pages,
            &headers,
            StatusCode::FORBIDDEN,
            &filled,
            Some(problem.into()),
        )
        .await;
    }
    let Checked {
        email,
        phone,
        webhook_url,
        preferences,
    } = match check(&pages, &filled).await {
        Ok(checked) => checked,
        Err(Problem::Input(problem)) => {
            return form(
                &pages,
                &headers,
                StatusCode::BAD_REQUEST,
                &filled,
                Some(problem),
            )
            .await;
        }
        Err(Problem::Store(e)) => return unavailable(&pages, &e),
    };
    let id = SubscriberId::new();
    tracing::Span::current().record("signup_id", tracing::field::display(id));
    let now = OffsetDateTime::now_utc();
    let company = pages.config.company.clone();
    let mut signup = NewSignup {
        id,
        preferences,
        client_ip: client_ip(&pages.config.signup, &headers, peer),
        email: None,
        phone: None,
        phone_code: None,
        webhook_url,
        expires_at: now + SIGNUP_LIFETIME,
    };
    if let Some(address) = email {
        let known = match pages
            .store
            .subscriber_with_address(Channel::Email, &address)
            .await
        {
            Ok(known) => known,
            Err(e) => return unavailable(&pages, &e),
        };
        signup.email = Some(match known {
            Some((subscriber, false)) => SignupAddress {
                address,
                message: AccountNotice::AlreadySubscribed {
                    company: company.clone(),
                    preferences_url: Some(preferences_url(&pages, subscriber, now)),
                    status_page_url: Some(format!("{}/", pages.config.public_url)),
                },
                confirmable: false,
            },
            // Opted out, or new: confirming is the owner's own word.
            _ => {
                let token = pages.config.link_secret.sign(&LinkClaims {
                    subscriber_id: id,
                    purpose: Purpose::ConfirmSignup,
                    channel: Some(Channel::Email),
                    expires_at: signup.expires_at,
                });
                SignupAddress {
                    address,
                    message: AccountNotice::ConfirmEmail {
                        company: company.clone(),
                        confirm_url: format!(
                            "{}/subscribe/confirm/{token}",
                            pages.config.public_url
                        ),
                        expires_at: signup.expires_at,
                    },
                    confirmable: true,
                }
            }
        });
    }
    let verify_token = phone.as_ref().map(|_| {
        pages.config.link_secret.sign(&LinkClaims {
            subscriber_id: id,
            purpose: Purpose::VerifyPhone,
            channel: Some(Channel::Sms),
            expires_at: now + CODE_LIFETIME,
        })
    });
    if let Some(address) = phone {
        let known = match pages
            .store
            .subscriber_with_address(Channel::Sms, &address)
            .await
        {
            Ok(known) => known,
            Err(e) => return unavailable(&pages, &e),
        };
        signup.phone = Some(match known {
            Some((_, false)) => SignupAddress {
                address,
                message: AccountNotice::AlreadySubscribed {
                    company: company.clone(),
                    preferences_url: None,
                    status_page_url: None,
                },
                confirmable: false,
            },
            _ => {
                let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
                signup.phone_code = Some((code_digest(&pages, id, &code), now + CODE_LIFETIME));
                SignupAddress {
                    address,
                    message: AccountNotice::PhoneCode {
                        company: company.clone(),
                        code,
                        expires_at: now + CODE_LIFETIME,
                    },
                    confirmable: true,
                }
            }
        });
    }
    match pages
        .store
        .record_signup(&signup, pages.config.signup.limits)
        .await
    {
        Ok(SignupRecorded::Recorded { messages }) => {
            info!(messages = ?messages, "sign-up recorded");
            metrics::counter!("tocsin_signups_total", "outcome" => "recorded").increment(1);
        }
        Ok(SignupRecorded::ClientLimited) => {
            warn!(client = %signup.client_ip, "sign-up refused: too many from this client");
            metrics::counter!("tocsin_signups_total", "outcome" => "client_limited").increment(1);
            return render(
                &pages,
                StatusCode::TOO_MANY_REQUESTS,
                "notice.html",
                context! {
                    title => "Too many sign-ups",
                    paragraphs => vec!["We received many sign-ups from your network in the last hour. Please try again later."],
                },
            );
        }
        Err(e) => return unavailable(&pages, &e),
    }
    match verify_token {
        Some(token) => Redirect::to(&format!("/subscribe/verify/{token}")).into_response(),
        None => render(
            &pages,
            StatusCode::OK,
            "notice.html",
            context! {
                title => "Check your inbox",
                paragraphs => vec![
                    "We have sent you an email. Follow its link within a day to confirm your subscription.".to_owned(),
                    "Until you confirm, we send nothing else. If nothing arrives in a few minutes, check your spam folder.".to_owned(),
                ],
            },
        ),
    }
}

enum Problem {
    Input(String),
    Store(StoreError),
}

/// The form's choices, checked.
struct Checked {
    email: Option<String>,
    phone: Option<String>,
    webhook_url: Option<String>,
    preferences: Preferences,
}

/// The form's choices, checked: the addresses of the chosen channels and the preferences.
async fn check(pages: &Pages, filled: &Filled) -> Result<Checked, Problem> {
    if filled.channels.is_empty() {
        return Err(Problem::Input("Choose at least one way to be told.".into()));
    }
    let webhook_url = if filled.channels.contains(&Channel::Webhook) {
        if !filled.channels.contains(&Channel::Email) {
            return Err(Problem::Input(
                "A webhook is confirmed through an email address: choose email too, and give one."
                    .into(),
            ));
        }
        Some(webhook(pages, &filled.webhook_url).await?)
    } else {
        None
    };
    let email = if filled.channels.contains(&Channel::Email) {
        let raw = &filled.email;
        if raw.is_empty() {
            return Err(Problem::Input(
                "Give the email address to tell you at.".into(),
            ));
        }
        Some(tocsin_core::contact::email("email", raw).map_err(|_| {
            Problem::Input(format!(
                "{} does not look like an email address. Check it and try again.",
                shown(raw)
            ))
        })?)
    } else {
        None
    };
    let phone = if filled.channels.contains(&Channel::Sms) {
        let raw = &filled.phone;
        if raw.is_empty() {
            return Err(Problem::Input("Give the mobile number to text.".into()));
        }
        Some(tocsin_core::contact::phone("phone", raw).map_err(|_| {
            Problem::Input(format!(
                "{} is not a mobile number we can text. Write it with + and the country code, for example +44 7700 900123.",
                shown(raw)
            ))
        })?)
    } else {
        None
    };
    let components = match &filled.only {
        None => ComponentFilter::All,
        Some(only) => {
            let known = pages.store.components().await.map_err(Problem::Store)?;
            if only.is_empty() {
                return Err(Problem::Input(
                    "Choose at least one part of the service, or every part.".into(),
                ));
            }
            if let Some(unknown) = only.iter().find(|c| !known.iter().any(|k| &k.id == *c)) {
                return Err(Problem::Input(format!(
                    "{} is not a part of the service we know.",
                    shown(unknown)
                )));
            }
            ComponentFilter::Only(only.clone())
        }
    };
    let min_severity = severity_choices()
        .into_iter()
        .map(|(s, _)| s)
        .find(|s| s.as_str() == filled.min_severity)
        .unwrap_or(Severity::Minor);
    let preferences = Preferences {
        channels: filled.channels.clone(),
        components,
        min_severity,
        kinds: Default::default(),
        quiet_hours: None,
    };
    preferences
        .validate()
        .map_err(|e| Problem::Input(format!("That did not work: {e}.")))?;
    Ok(Checked {
        email,
        phone,
        webhook_url,
        preferences,
    })
}

/// A webhook URL a visitor may give: the same rules as the API's, names resolved too.
async fn webhook(pages: &Pages, raw: &str) -> Result<String, Problem> {
    if raw.is_empty() {
        return Err(Problem::Input("Give the URL to call.".into()));
    }
    let policy = &pages.config.signup.webhook_policy;
    let refused =
        |reason: String| Problem::Input(format!("We cannot call {}: {reason}.", shown(raw)));
    let url = WebhookUrl::parse(raw, policy).map_err(|e| refused(reason_of(e)))?;
    if url.literal_ip().is_none() {
        let host = url.as_url().host_str().unwrap_or_default().to_owned();
        let port = url.as_url().port_or_known_default().unwrap_or(443);
        tocsin_runtime::dns::resolve_publicly(policy, "webhook_url", &host, port)
            .await
            .map_err(|e| refused(reason_of(e)))?;
    }
    Ok(url.as_str().to_owned())
}

fn reason_of(e: tocsin_core::DomainError) -> String {
    match e {
        tocsin_core::DomainError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Input quoted back in a message: at most 60 characters, no control characters.
fn shown(raw: &str) -> String {
    let cleaned: String = raw.chars().filter(|c| !c.is_control()).take(60).collect();
    format!("“{cleaned}”")
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn code_digest(pages: &Pages, id: SubscriberId, code: &str) -> [u8; 32] {
    pages
        .config
        .link_secret
        .digest(&format!("phone-code|{id}"), code.trim().as_bytes())
}

fn preferences_url(pages: &Pages, subscriber: SubscriberId, now: OffsetDateTime) -> String {
    let token = pages.config.link_secret.sign(&LinkClaims {
        subscriber_id: subscriber,
        purpose: Purpose::Preferences,
        channel: None,
        expires_at: now + Duration::days(PREFERENCES_LINK_DAYS),
    });
    format!("{}/preferences/{token}", pages.config.public_url)
}

/// The sign-up a link names, or the page saying why there is none.
#[allow(clippy::result_large_err)] // Built once per request, on the refusal path.
async fn signup_for(pages: &Pages, token: &str, purpose: Purpose) -> Result<Signup, Response> {
    let gone = |pages: &Pages| {
        render(
            pages,
            StatusCode::GONE,
            "notice.html",
            context! {
                title => "This link has expired",
                paragraphs => vec!["Sign-up links work for a day, and codes for 30 minutes. Please sign up again on the status page."],
                link => "/subscribe",
                link_words => "Sign up again",
            },
        )
    };
    let claims = match pages
        .config
        .link_secret
        .verify(token, OffsetDateTime::now_utc())
    {
        Ok(claims) if claims.purpose == purpose => claims,
        Ok(_) | Err(LinkError::Invalid) => {
            warn!("a sign-up link that is not valid");
            return Err(crate::html::invalid_link(pages));
        }
        Err(LinkError::Expired) => return Err(gone(pages)),
    };
    match pages.store.signup(claims.subscriber_id).await {
        Ok(Some(signup)) => Ok(signup),
        Ok(None) => Err(gone(pages)),
        Err(e) => Err(unavailable(pages, &e)),
    }
}

/// `GET /subscribe/confirm/{token}`: a button, because mail scanners open links.
pub(crate) async fn confirm_page(
    State(pages): State<Pages>,
    Path(token): Path<String>,
) -> Response {
    match signup_for(&pages, &token, Purpose::ConfirmSignup).await {
        Ok(_) => render(
            &pages,
            StatusCode::OK,
            "notice.html",
            context! {
                title => "Confirm your subscription",
                paragraphs => vec![format!("Confirm that you want {} to email you about problems with its service.", pages.config.company)],
                button => "Confirm my subscription",
            },
        ),
        Err(page) => page,
    }
}

/// `POST /subscribe/confirm/{token}`: the email address joins its subscriber.
#[instrument(skip_all, fields(signup_id))]
pub(crate) async fn confirm(State(pages): State<Pages>, Path(token): Path<String>) -> Response {
    let signup = match signup_for(&pages, &token, Purpose::ConfirmSignup).await {
        Ok(signup) => signup,
        Err(page) => return page,
    };
    tracing::Span::current().record("signup_id", tracing::field::display(signup.id));
    confirmed(&pages, &signup, Channel::Email, "status_page_link").await
}

/// `GET /subscribe/verify/{token}`: the code form.
pub(crate) async fn verify_page(State(pages): State<Pages>, Path(token): Path<String>) -> Response {
    match signup_for(&pages, &token, Purpose::VerifyPhone).await {
        Ok(signup) => code_form(&pages, &signup, StatusCode::OK, None),
        Err(page) => page,
    }
}

fn code_form(
    pages: &Pages,
    signup: &Signup,
    status: StatusCode,
    problem: Option<String>,
) -> Response {
    render(
        pages,
        status,
        "verify.html",
        context! {
            error => problem,
            email_sent => signup.email.is_some(),
        },
    )
}

/// `POST /subscribe/verify/{token}`: the texted code confirms the phone number.
#[instrument(skip_all, fields(signup_id))]
pub(crate) async fn verify(
    State(pages): State<Pages>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let signup = match signup_for(&pages, &token, Purpose::VerifyPhone).await {
        Ok(signup) => signup,
        Err(page) => return page,
    };
    tracing::Span::current().record("signup_id", tracing::field::display(signup.id));
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let code: String = first(&fields, "code")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let digest = code_digest(&pages, signup.id, &code);
    match pages
        .store
        .try_phone_code(signup.id, &digest, MAX_CODE_TRIES)
        .await
    {
        Ok(CodeCheck::Matches) => {
            confirmed(&pages, &signup, Channel::Sms, "status_page_code").await
        }
        Ok(CodeCheck::Wrong { tries_left }) => code_form(
            &pages,
            &signup,
            StatusCode::BAD_REQUEST,
            Some(format!(
                "That code is not the one we sent. {tries_left} {} left.",
                if tries_left == 1 { "try" } else { "tries" }
            )),
        ),
        Ok(CodeCheck::Spent | CodeCheck::Gone) => render(
            &pages,
            StatusCode::GONE,
            "notice.html",
            context! {
                title => "This code can no longer be used",
                paragraphs => vec!["Codes work for 30 minutes and five tries. Please sign up again for a new one."],
                link => "/subscribe",
                link_words => "Sign up again",
            },
        ),
        Err(e) => unavailable(&pages, &e),
    }
}

/// Joins the sign-up's address on `channel` to its subscriber and says so, with the link to
/// the preference centre.
async fn confirmed(pages: &Pages, signup: &Signup, channel: Channel, source: &str) -> Response {
    match join(pages, signup, channel, source).await {
        Ok(Some(Joined {
            subscriber,
            webhook_secret,
            webhook_left_out,
        })) => {
            info!(%channel, %subscriber, "sign-up confirmed");
            metrics::counter!("tocsin_signups_confirmed_total", "channel" => channel.as_str())
                .increment(1);
            let how = match channel {
                Channel::Sms => "text you",
                _ if webhook_secret.is_some() => "email you and call your webhook",
                _ => "email you",
            };
            let mut paragraphs = vec![
                format!(
                    "Thank you. {} will {how} when something goes wrong with its service, and when it is fixed.",
                    pages.config.company
                ),
                "Every message has a link to change what you hear about, or to stop.".to_owned(),
            ];
            if webhook_left_out {
                paragraphs.push(format!(
                    "This email address was already subscribed, so your webhook was not added. Ask {} to add it.",
                    pages.config.company
                ));
            }
            render(
                pages,
                StatusCode::OK,
                "notice.html",
                context! {
                    title => "You are subscribed",
                    paragraphs => paragraphs,
                    secret => webhook_secret,
                    link => preferences_url(pages, subscriber, OffsetDateTime::now_utc()),
                    link_words => "Choose what you hear about",
                },
            )
        }
        Ok(None) => render(
            pages,
            StatusCode::GONE,
            "notice.html",
            context! {
                title => "There is nothing to confirm",
                paragraphs => vec!["This sign-up has nothing left to confirm. Please sign up again on the status page."],
                link => "/subscribe",
                link_words => "Sign up again",
            },
        ),
        Err(e) => unavailable(pages, &e),
    }
}

/// A fresh webhook signing secret (the thread's generator is not held across an await).
fn new_webhook_secret() -> String {
    let key: [u8; tocsin_core::webhook_secret::GENERATED_KEY_LEN] = rand::rng().random();
    tocsin_core::webhook_secret::encode(&key)
}

/// What confirming an address did.
struct Joined {
    subscriber: SubscriberId,
    /// The new webhook endpoint's signing secret, shown once.
    webhook_secret: Option<String>,
    /// A webhook was asked for but the email joined a subscriber that already had it.
    webhook_left_out: bool,
}

/// The address's subscriber after confirming: the one that already had the address (opted
/// back in, with the visitor's choices), or the sign-up's own. `None` when the sign-up holds
/// no such address. Every step repeats safely, so a confirmation that failed half-way is
/// simply confirmed again.
async fn join(
    pages: &Pages,
    signup: &Signup,
    channel: Channel,
    source: &str,
) -> Result<Option<Joined>, StoreError> {
    let store = &pages.store;
    let address = match channel {
        Channel::Email => signup.email.as_deref(),
        _ => signup.phone.as_deref(),
    };
    let Some(address) = address else {
        return Ok(None);
    };
    let mut webhook_secret = None;
    let mut webhook_left_out = false;
    let subscriber = match store.subscriber_with_address(channel, address).await? {
        Some((existing, opted_out)) if existing != signup.id => {
            if opted_out {
                store.opt_in_address(channel, address, source).await?;
            }
            let Some((current, _)) = store.subscriber_by_id(existing).await? else {
                return Ok(None);
            };
            let mut preferences = current.preferences.clone();
            preferences.channels.insert(channel);
            preferences.components = signup.preferences.components.clone();
            preferences.min_severity = signup.preferences.min_severity;
            store
                .set_own_preferences(existing, &preferences, source)
                .await?;
            webhook_left_out = channel == Channel::Email && signup.webhook_url.is_some();
            existing
        }
        _ => {
            // The sign-up's own subscriber, holding every address of it confirmed into it.
            let mut contacts = tocsin_core::Contacts::default();
            let joined = |c: Channel| signup.joined(c) == Some(signup.id) || c == channel;
            if joined(Channel::Email) {
                contacts.email = signup.email.clone();
            }
            if joined(Channel::Sms) {
                contacts.phone = signup.phone.clone();
            }
            // The webhook comes with the email that vouched for it.
            if joined(Channel::Email) {
                contacts.webhook_url = signup.webhook_url.clone();
            }
            let mut preferences = signup.preferences.clone();
            preferences
                .channels
                .retain(|c| contacts.address(*c).is_some());
            let upserted = store
                .upsert_signed_up(
                    signup.id,
                    &SubscriberWrite {
                        external_id: format!("self-service:{}", signup.id),
                        preferences,
                        contacts,
                        candidate_webhook_secret: new_webhook_secret(),
                        consent: None,
                    },
                )
                .await?;
            if upserted.subscriber.opted_out.contains(&channel) {
                store.opt_in_address(channel, address, source).await?;
            }
            webhook_secret = upserted.new_webhook_secret;
            signup.id
        }
    };
    store
        .confirm_signup(signup.id, channel, subscriber, source)
        .await?;
    Ok(Some(Joined {
        subscriber,
        webhook_secret,
        webhook_left_out,
    }))
}
