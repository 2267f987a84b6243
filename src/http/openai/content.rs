//! A message's `content` as OpenAI sends it: a string, or an array of parts of which lit-mux
//! takes `text` and `image_url`. Images are checked here, once, so that every backend gets
//! well-formed ones: a data URL of a PNG, JPEG, GIF or WebP image in base64 of at most
//! [`MAX_IMAGE_BYTES`], or an `http(s)` URL that lit-mux passes on and never fetches.

use serde_json::Value;

use crate::backends::{Image, ImageSource};
use crate::chat::completion::CompletionError;

/// Largest image accepted, decoded: OpenAI's own limit per image. The request's body limit
/// (`server.max_body_bytes`, 4 MiB unless raised) usually bounds it first.
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// Longest image URL accepted: far more than any real one, far less than a body.
const MAX_URL_CHARS: usize = 8 * 1024;

const MEDIA_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const DETAILS: [&str; 3] = ["auto", "low", "high"];

/// What the client's content parts are to lit-mux: the text, and the images at their places.
#[derive(Debug, Default)]
pub struct Parts {
    pub text: String,
    pub images: Vec<Image>,
}

/// The parts of `messages[index]`, in order.
pub fn parts(index: usize, parts: Vec<Value>) -> Result<Parts, CompletionError> {
    let mut content = Parts::default();
    for (position, part) in parts.into_iter().enumerate() {
        let at = |what: String| CompletionError::InvalidField {
            field: "messages".to_owned(),
            message: format!("messages[{index}].content[{position}]: {what}"),
        };
        match part.get("type").and_then(Value::as_str) {
            Some("text") => match part.get("text") {
                Some(Value::String(text)) => content.text.push_str(text),
                _ => return Err(at("a text part needs text (a string)".to_owned())),
            },
            Some("image_url") => {
                let (source, detail) = image_url(part.get("image_url")).map_err(at)?;
                content.images.push(Image {
                    source,
                    detail,
                    at: content.text.len(),
                });
            }
            Some(other) => {
                return Err(at(format!(
                    "content parts of type {} are not supported; send text and image_url parts",
                    quoted(other)
                )));
            }
            None => {
                return Err(at(
                    "a content part needs a type: text or image_url".to_owned()
                ));
            }
        }
    }
    Ok(content)
}

/// `{"url": ..., "detail": ...}` (or the URL alone, as some clients send it) as an image.
fn image_url(value: Option<&Value>) -> Result<(ImageSource, Option<String>), String> {
    let (url, detail) = match value {
        Some(Value::String(url)) => (url.as_str(), None),
        Some(Value::Object(object)) => {
            let Some(Value::String(url)) = object.get("url") else {
                return Err("image_url needs a url (a string)".to_owned());
            };
            let detail = match object.get("detail") {
                None | Some(Value::Null) => None,
                Some(Value::String(detail)) if DETAILS.contains(&detail.as_str()) => {
                    Some(detail.clone())
                }
                Some(_) => {
                    return Err(format!(
                        "image_url.detail must be one of {}",
                        DETAILS.join(", ")
                    ));
                }
            };
            (url.as_str(), detail)
        }
        _ => return Err("an image_url part needs image_url: {\"url\": ...}".to_owned()),
    };
    Ok((image_source(url)?, detail))
}

/// A data URL's media type and data, or a remote URL.
fn image_source(url: &str) -> Result<ImageSource, String> {
    if let Some(rest) = strip_prefix_ignoring_case(url, "data:") {
        return data_url(rest);
    }
    if url.chars().count() > MAX_URL_CHARS {
        return Err(format!(
            "an image URL may be at most {MAX_URL_CHARS} characters"
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|err| format!("the image URL is not a valid URL ({err})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "an image URL must be http(s) or a data URL (data:image/png;base64,...), got a {} \
             URL",
            parsed.scheme()
        ));
    }
    Ok(ImageSource::Url(url.to_owned()))
}

/// `image/png;base64,DATA` (what follows `data:`).
fn data_url(rest: &str) -> Result<ImageSource, String> {
    let Some((header, data)) = rest.split_once(',') else {
        return Err("a data URL needs a comma before its data".to_owned());
    };
    let Some(media_type) = strip_suffix_ignoring_case(header, ";base64") else {
        return Err(
            "a data URL for an image must be base64 (data:image/png;base64,...)".to_owned(),
        );
    };
    let media_type = media_type.to_ascii_lowercase();
    if !MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(format!(
            "images of type {} are not supported; send one of {}",
            quoted(&media_type),
            MEDIA_TYPES.join(", ")
        ));
    }
    check_base64(data)?;
    let bytes = ImageSource::decoded_bytes(data);
    if bytes > MAX_IMAGE_BYTES {
        return Err(format!(
            "the image is {bytes} bytes; at most {MAX_IMAGE_BYTES} are accepted"
        ));
    }
    if bytes == 0 {
        return Err("the image's data is empty".to_owned());
    }
    Ok(ImageSource::Base64 {
        media_type,
        data: data.to_owned(),
    })
}

/// Standard base64 with its padding, as every provider takes it: the alphabet, whole groups of
/// four, and `=` only at the end.
fn check_base64(data: &str) -> Result<(), String> {
    let invalid = || Err("the data URL's data is not valid base64".to_owned());
    if !data.len().is_multiple_of(4) {
        return invalid();
    }
    let body = data.trim_end_matches('=');
    if data.len() - body.len() > 2 {
        return invalid();
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return invalid();
    }
    Ok(())
}

fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn strip_suffix_ignoring_case<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(suffix.len())?;
    let tail = text.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &text[..cut])
}

/// A name from the client, quoted as plain text and cut short: a message never shows a
/// megabyte of the client's own input back.
fn quoted(name: &str) -> String {
    const MAX: usize = 40;
    match name.char_indices().nth(MAX) {
        Some((cut, _)) => format!("\"{}…\"", &name[..cut]),
        None => format!("\"{name}\""),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn one(part: Value) -> Result<Parts, String> {
        parts(0, vec![part]).map_err(|err| err.to_string())
    }

    #[test]
    fn images_sit_between_the_texts_they_were_given_between() {
        let got = parts(
            2,
            vec![
                json!({"type": "text", "text": "look: "}),
                json!({"type": "image_url", "image_url": {"url": "data:image/PNG;base64,iVBORw0KGgo=", "detail": "low"}}),
                json!({"type": "text", "text": " and "}),
                json!({"type": "image_url", "image_url": "https://example.com/cat.jpg"}),
            ],
        )
        .unwrap();
        assert_eq!(got.text, "look:  and ");
        assert_eq!(got.images[0].at, 6);
        assert_eq!(got.images[0].detail.as_deref(), Some("low"));
        assert_eq!(
            got.images[0].source,
            ImageSource::Base64 {
                media_type: "image/png".to_owned(),
                data: "iVBORw0KGgo=".to_owned()
            }
        );
        assert_eq!(got.images[1].at, 11);
        assert_eq!(
            got.images[1].source,
            ImageSource::Url("https://example.com/cat.jpg".to_owned())
        );
    }

    #[test]
    fn bad_images_are_refused_with_what_is_accepted() {
        let image = |url: &str| json!({"type": "image_url", "image_url": {"url": url}});
        let cases = [
            (image("data:image/bmp;base64,AAAA"), "\"image/bmp\""),
            (image("data:image/png,AAAA"), "must be base64"),
            (image("data:image/png;base64,AA*A"), "not valid base64"),
            (image("data:image/png;base64,AAA"), "not valid base64"),
            (image("data:image/png;base64,"), "empty"),
            (image("ftp://example.com/a.png"), "a ftp URL"),
            (image("file:///etc/passwd"), "a file URL"),
            (image("not a url"), "not a valid URL"),
            (
                json!({"type": "image_url", "image_url": {"url": "https://x.y/a.png", "detail": "max"}}),
                "auto, low, high",
            ),
            (json!({"type": "image_url"}), "needs image_url"),
            (
                json!({"type": "input_audio", "input_audio": {}}),
                "\"input_audio\"",
            ),
            (json!({"text": "no type"}), "needs a type"),
        ];
        for (part, expected) in cases {
            let message = one(part.clone()).unwrap_err();
            assert!(message.contains(expected), "{part}: {message}");
            assert!(message.starts_with("messages[0].content[0]: "), "{message}");
            assert!(!message.contains("Some("), "{message}");
        }
    }

    #[test]
    fn the_size_bound_counts_decoded_bytes() {
        assert_eq!(ImageSource::decoded_bytes("iVBORw0KGgo="), 8);
        assert_eq!(ImageSource::decoded_bytes("AAAA"), 3);
        let over = "A".repeat((MAX_IMAGE_BYTES / 3 + 1) * 4);
        let message = one(json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{over}")}}))
            .unwrap_err();
        assert!(message.contains("at most 20971520"), "{message}");
    }
}
