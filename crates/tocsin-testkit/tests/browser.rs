//! The WebDriver client against a real headless Chromium: a form served by a bare TCP server
//! is filled in and posted, and the server's record of the post is the proof it happened.

use std::sync::{Arc, Mutex};

use tocsin_testkit::browser::{Browser, WebDriverError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

const FORM_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Say something</title></head>
<body>
<form method="post" action="/answer">
  <label for="word">Your word</label>
  <input id="word" name="word" type="text">
  <label><input id="loud" name="loud" type="checkbox" value="yes"> Loudly</label>
  <button id="send" type="submit">Send</button>
</form>
</body></html>"#;

/// The bodies of the form posts the server received, in order.
type Posts = Arc<Mutex<Vec<String>>>;

#[tokio::test]
async fn browser_fills_in_and_posts_a_form() -> anyhow::Result<()> {
    tocsin_testkit::init_tracing();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let posts = Posts::default();
    tokio::spawn(serve(listener, Arc::clone(&posts)));

    let browser = Browser::start().await?;
    browser.goto(&format!("http://{addr}/")).await?;
    assert_eq!(browser.title().await?, "Say something");
    assert!(browser.page_source().await?.contains(r#"action="/answer""#));

    let input = browser.find("#word").await?;
    assert_eq!(input.attribute("name").await?.as_deref(), Some("word"));
    assert_eq!(input.attribute("data-absent").await?, None);
    assert_eq!(
        browser.find("label[for=word]").await?.text().await?,
        "Your word"
    );
    // What clear() leaves behind would reach the server, so the post below checks it too.
    input.send_keys("typo").await?;
    input.clear().await?;
    input.send_keys("hello").await?;

    let loud = browser.find("#loud").await?;
    assert!(!loud.is_selected().await?);
    loud.click().await?;
    assert!(loud.is_selected().await?);
    assert_eq!(browser.find_all("input").await?.len(), 2);
    assert!(browser.find_all("textarea").await?.is_empty());

    browser.find("#send").await?.click().await?;
    // find() waits out the navigation the click started.
    let answer = browser.find("#answer").await?.text().await?;
    assert!(answer.contains("hello"), "answer page says {answer:?}");
    assert_eq!(
        browser.current_url().await?,
        format!("http://{addr}/answer")
    );
    assert_eq!(posts.lock().unwrap().as_slice(), ["word=hello&loud=yes"]);

    let png = browser.screenshot_png().await?;
    assert!(
        png.starts_with(PNG_SIGNATURE),
        "not a PNG: {:?}",
        &png[..png.len().min(16)]
    );
    // A blank page still compresses to a few hundred bytes; a rendered one is more.
    assert!(
        (2_000..10_000_000).contains(&png.len()),
        "{} bytes",
        png.len()
    );
    let (width, height) = png_size(&png);
    assert_eq!(width, 1280, "the window is 1280 wide");
    assert!((500..=1000).contains(&height), "height {height}");

    let missing = browser.find("#nowhere").await.unwrap_err().to_string();
    assert!(
        missing.contains("`#nowhere`") && missing.contains("/answer"),
        "{missing}"
    );
    let refused = browser.goto("not a url").await.unwrap_err();
    let refused = refused
        .downcast_ref::<WebDriverError>()
        .expect("a WebDriver error, typed");
    assert_eq!(refused.error, "invalid argument", "{refused}");
    assert!(refused.command.contains("navigate to"), "{refused}");

    browser.quit().await?;
    Ok(())
}

/// The width and height from a PNG's IHDR chunk, which always comes first.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[12..16], b"IHDR");
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

async fn serve(listener: TcpListener, posts: Posts) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream, Arc::clone(&posts)));
    }
}

/// One request per connection (`Connection: close`), which is all a test page needs.
async fn answer(mut stream: TcpStream, posts: Posts) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut chunk = [0; 4096];
    let head_end = loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..read]);
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < head_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..read]);
    }
    let body = String::from_utf8_lossy(&request[head_end..]).into_owned();
    let mut start = head.split(' ');
    let (status, page) = match (start.next(), start.next()) {
        (Some("GET"), Some("/")) => ("200 OK", FORM_PAGE.to_owned()),
        (Some("POST"), Some("/answer")) => {
            posts.lock().unwrap().push(body.clone());
            ("200 OK", answer_page(&body))
        }
        _ => ("404 Not Found", "<title>Not found</title>".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{page}",
        page.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn answer_page(form: &str) -> String {
    let word = form
        .split('&')
        .find_map(|pair| pair.strip_prefix("word="))
        .map(decode)
        .unwrap_or_default();
    let escaped = word
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Answer</title></head>\
         <body><p id=\"answer\">You said: {escaped}</p></body></html>"
    )
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
