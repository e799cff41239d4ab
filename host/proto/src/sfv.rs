//! A strict parser for the few RFC 8941 structured-field shapes that signature headers use.
//! Errors are short lowercase strings that become [`crate::SigError::Malformed`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The parameters of one signature (`Signature-Input` member).
#[derive(Debug)]
pub(crate) struct SignatureParams {
    /// Covered component names, in order.
    pub(crate) components: Vec<String>,
    /// `created`: Unix seconds.
    pub(crate) created: u64,
    /// `nonce`.
    pub(crate) nonce: String,
    /// `keyid`.
    pub(crate) keyid: String,
    /// `alg`.
    pub(crate) alg: String,
}

/// Splits a dictionary into `(key, raw member value)` pairs, without interpreting the values.
pub(crate) fn dictionary_members(text: &str) -> Result<Vec<(&str, &str)>, String> {
    if !text.is_ascii() {
        return Err("header is not ascii".into());
    }
    let bytes = text.as_bytes();
    let mut members = Vec::new();
    let (mut start, mut depth, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'(' => depth += 1,
            b')' => depth = depth.checked_sub(1).ok_or("unbalanced parenthesis")?,
            b',' if depth == 0 => {
                members.push(member(&text[start..i])?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_string || depth != 0 {
        return Err("unterminated string or inner list".into());
    }
    members.push(member(&text[start..])?);
    Ok(members)
}

fn member(raw: &str) -> Result<(&str, &str), String> {
    let raw = raw.trim_matches([' ', '\t']);
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("dictionary member `{}` has no value", clip(raw)))?;
    if !is_key(key) {
        return Err(format!("invalid dictionary key `{}`", clip(key)));
    }
    Ok((key, value))
}

fn is_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'*'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*'))
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses `("c1" "c2" ...);created=N;nonce="..";keyid="..";alg=".."` (parameters in any order).
pub(crate) fn parse_signature_params(text: &str) -> Result<SignatureParams, String> {
    let mut cur = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    cur.expect(b'(')?;
    let mut components = Vec::new();
    loop {
        cur.skip_spaces();
        if cur.eat(b')') {
            break;
        }
        if !components.is_empty() && cur.bytes.get(cur.pos.wrapping_sub(1)) != Some(&b' ') {
            return Err("covered components must be separated by spaces".into());
        }
        components.push(cur.string()?);
        if cur.peek() == Some(b';') {
            return Err("covered components must not have parameters".into());
        }
    }
    let (mut created, mut nonce, mut keyid, mut alg) = (None, None, None, None);
    while cur.eat(b';') {
        cur.skip_spaces();
        let key = cur.key()?;
        cur.expect(b'=')?;
        let slot_taken = match key.as_str() {
            "created" => created.replace(cur.integer()?).is_some(),
            "nonce" => nonce.replace(cur.string()?).is_some(),
            "keyid" => keyid.replace(cur.string()?).is_some(),
            "alg" => alg.replace(cur.string()?).is_some(),
            other => return Err(format!("unsupported signature parameter `{}`", clip(other))),
        };
        if slot_taken {
            return Err(format!("signature parameter `{key}` appears twice"));
        }
    }
    if cur.pos != cur.bytes.len() {
        return Err(format!(
            "unexpected text at byte {} of the signature input",
            cur.pos
        ));
    }
    Ok(SignatureParams {
        components,
        created: created.ok_or("signature parameter `created` is missing")?,
        nonce: nonce.ok_or("signature parameter `nonce` is missing")?,
        keyid: keyid.ok_or("signature parameter `keyid` is missing")?,
        alg: alg.ok_or("signature parameter `alg` is missing")?,
    })
}

/// Parses a byte sequence `:<base64>:` without parameters.
pub(crate) fn parse_byte_sequence(text: &str) -> Result<Vec<u8>, String> {
    let inner = text
        .strip_prefix(':')
        .and_then(|t| t.strip_suffix(':'))
        .filter(|inner| !inner.contains(':'))
        .ok_or("the signature must be a byte sequence `:<base64>:` without parameters")?;
    BASE64
        .decode(inner)
        .map_err(|e| format!("the signature is not valid base64: {e}"))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", b as char, self.pos))
        }
    }

    fn skip_spaces(&mut self) {
        while self.eat(b' ') {}
    }

    fn key(&mut self) -> Result<String, String> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if !matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*') {
                break;
            }
            self.pos += 1;
        }
        let key = String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned();
        if is_key(&key) {
            Ok(key)
        } else {
            Err(format!("invalid parameter name at byte {start}"))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let b = self.peek().ok_or("unterminated string")?;
            self.pos += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => {
                    let next = self.peek().ok_or("unterminated string")?;
                    if next != b'"' && next != b'\\' {
                        return Err("invalid escape in string".into());
                    }
                    self.pos += 1;
                    out.push(next as char);
                }
                0x20..=0x7e => out.push(b as char),
                _ => return Err("invalid character in string".into()),
            }
        }
    }

    fn integer(&mut self) -> Result<u64, String> {
        if self.peek() == Some(b'-') {
            return Err("`created` must not be negative".into());
        }
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.pos - start;
        if digits == 0 || digits > 15 {
            return Err(format!(
                "expected an integer of 1 to 15 digits at byte {start}"
            ));
        }
        std::str::from_utf8(&self.bytes[start..self.pos])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("invalid integer at byte {start}"))
    }
}
