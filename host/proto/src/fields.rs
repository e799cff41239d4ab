//! The structured fields of the signature headers (RFC 8941 / RFC 9651), parsed and
//! serialised by the `sfv` crate; this module only maps them to what RFC 9421 signing with
//! our one profile needs. Errors are short lowercase strings that become
//! [`crate::SigError::Malformed`].

use sfv::{BareItem, Dictionary, FieldType as _, InnerList, Item, KeyRef, ListEntry, Parser};

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
    /// The member's canonical serialisation: the `@signature-params` line of the base.
    pub(crate) serialized: String,
}

/// The member `label` of dictionary header `text` (other members are ignored; a repeated
/// key counts once, its last value, as RFC 8941 says).
pub(crate) fn member(text: &str, label: &str) -> Result<ListEntry, String> {
    let mut dict: Dictionary = Parser::new(text)
        .parse()
        .map_err(|e| format!("not a structured dictionary: {e}"))?;
    let key = KeyRef::from_str(label).map_err(|e| e.to_string())?;
    dict.shift_remove(key)
        .ok_or_else(|| format!("no `{label}` member"))
}

/// The covered components and parameters of a `Signature-Input` member, which must be
/// `("c1" "c2" ...);created=N;nonce="..";keyid="..";alg=".."` (parameters in any order, no
/// others, component names without parameters).
pub(crate) fn signature_params(entry: ListEntry) -> Result<SignatureParams, String> {
    let ListEntry::InnerList(list) = entry else {
        return Err("the signature input must be an inner list of component names".into());
    };
    let components = list
        .items
        .iter()
        .map(|item| {
            if !item.params.is_empty() {
                return Err("covered components must not have parameters".to_string());
            }
            item.bare_item
                .as_string()
                .map(|s| s.as_str().to_string())
                .ok_or_else(|| "covered components must be strings".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (mut created, mut nonce, mut keyid, mut alg) = (None, None, None, None);
    for (key, value) in &list.params {
        let text = || {
            value
                .as_string()
                .map(|s| s.as_str().to_string())
                .ok_or_else(|| format!("signature parameter `{}` must be a string", key.as_str()))
        };
        match key.as_str() {
            "created" => {
                let n = value
                    .as_integer()
                    .map(i64::from)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or("signature parameter `created` must be a non-negative integer")?;
                created = Some(n);
            }
            "nonce" => nonce = Some(text()?),
            "keyid" => keyid = Some(text()?),
            "alg" => alg = Some(text()?),
            other => {
                return Err(format!(
                    "unsupported signature parameter `{}`",
                    other.chars().take(40).collect::<String>()
                ));
            }
        }
    }
    let serialized = serialize_inner_list(list)?;
    Ok(SignatureParams {
        components,
        created: created.ok_or("signature parameter `created` is missing")?,
        nonce: nonce.ok_or("signature parameter `nonce` is missing")?,
        keyid: keyid.ok_or("signature parameter `keyid` is missing")?,
        alg: alg.ok_or("signature parameter `alg` is missing")?,
        serialized,
    })
}

/// The bytes of a `Signature` member: a byte sequence without parameters.
pub(crate) fn byte_sequence(entry: ListEntry) -> Result<Vec<u8>, String> {
    match entry {
        ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(bytes),
            params,
        }) if params.is_empty() => Ok(bytes),
        _ => Err("the signature must be a byte sequence `:<base64>:` without parameters".into()),
    }
}

/// The `Signature-Input` member for `components` and the parameters, serialised by `sfv`.
pub(crate) fn signature_input(
    components: &[&str],
    created: u64,
    nonce: &str,
    keyid: &str,
    alg: &str,
) -> Result<String, String> {
    let string = |s: &str| {
        sfv::StringRef::from_str(s)
            .map(|s| BareItem::String(s.to_owned()))
            .map_err(|e| e.to_string())
    };
    let items = components
        .iter()
        .map(|c| string(c).map(Item::new))
        .collect::<Result<Vec<_>, _>>()?;
    let created = i64::try_from(created).map_err(|e| e.to_string())?;
    let mut params = sfv::Parameters::new();
    params.insert(
        sfv::key_ref("created").to_owned(),
        BareItem::Integer(sfv::Integer::try_from(created).map_err(|e| e.to_string())?),
    );
    params.insert(sfv::key_ref("nonce").to_owned(), string(nonce)?);
    params.insert(sfv::key_ref("keyid").to_owned(), string(keyid)?);
    params.insert(sfv::key_ref("alg").to_owned(), string(alg)?);
    serialize_inner_list(InnerList { items, params })
}

fn serialize_inner_list(list: InnerList) -> Result<String, String> {
    vec![ListEntry::InnerList(list)]
        .serialize()
        .ok_or_else(|| "an empty signature input".to_string())
}
