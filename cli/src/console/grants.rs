//! Grants: the approve / change / revoke forms, the policy each would sign (shown as a diff
//! first), and signing it.

use super::*;

/// A comma-separated column list.
pub(super) fn columns(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// A dataset id (lowercase hex): anything else never reaches a request path.
pub(super) fn dataset_id(dataset: &str) -> Result<String, Problem> {
    if !dataset.is_empty()
        && dataset
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(dataset.to_string())
    } else {
        Err(Problem::bad_request(format!(
            "{dataset:?} is not a dataset id"
        )))
    }
}

pub(super) async fn grant_form(State(c): Shared, Query(form): Query<GrantForm>) -> Page {
    let dataset = dataset_id(&form.dataset)?;
    let policy = c
        .call(move |c, client| crate::remote::policy::current_on(&c.conn, client, &dataset))
        .await?;
    Ok(view::grant_form(&form, policy.as_ref()))
}

pub(super) fn parse_optional<T: std::str::FromStr>(
    field: &str,
    text: &str,
) -> Result<Option<T>, Problem> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| Problem::bad_request(format!("{field}: {text:?} is not a whole number")))
}

/// The policy a grant form would publish: the current one with this grant added (replacing
/// the module's grant with the same pinned params) and the form's dataset-wide rules.
pub(super) fn proposed(prev: Option<&SignedPolicy>, form: &GrantForm) -> Result<Policy, Problem> {
    let module = form.module.trim().to_string();
    if module.len() != 64 || hex::decode(&module).is_err() {
        return Err(Problem::bad_request(
            "the module must be a SHA-256 in hex (64 characters)",
        ));
    }
    let researchers: Vec<PartyId> = form
        .researchers
        .split([',', ' ', '\n'])
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| Problem::bad_request(format!("{s:?} is not a party id")))
        })
        .collect::<Result<_, _>>()?;
    let max_runs = parse_optional::<u64>("most runs", &form.max_runs)?;
    let expires = parse_optional::<u64>("expires in days", &form.expires_in_days)?;
    let min_group = parse_optional::<u64>("smallest group", &form.min_group)?;
    if researchers.is_empty() && max_runs.is_none() {
        return Err(Problem::bad_request(
            "a grant to any researcher needs a most-runs limit: name researchers or set one \
             (repeated runs enable differencing attacks)",
        ));
    }
    let params_digest = match (form.params.is_empty(), form.params_digest.trim()) {
        (false, d) => {
            let computed = cleanroom_proto::run::params_digest(&form.params);
            if !d.is_empty() && d != computed {
                return Err(Problem::bad_request(
                    "the params shown do not match the params digest: the request was altered",
                ));
            }
            Some(computed)
        }
        (true, "") => None,
        (true, d) => Some(d.to_string()),
    };
    let mut inputs = BTreeMap::new();
    for spec in form.inputs.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, dataset) = spec
            .trim()
            .split_once('=')
            .ok_or_else(|| Problem::bad_request(format!("input {spec:?} is not NAME=DATASET")))?;
        inputs.insert(name.to_string(), dataset.to_string());
    }
    let now = now();
    let mut policy = match prev {
        Some(p) => {
            let mut policy = p.policy.clone();
            policy.version += 1;
            policy
        }
        None => Policy {
            dataset: form.dataset.clone(),
            version: 1,
            grants: Vec::new(),
            hidden_columns: Vec::new(),
            identifier_columns: Vec::new(),
            output: Default::default(),
            dp: None,
            issued_at: now,
        },
    };
    policy.issued_at = now;
    policy
        .grants
        .retain(|g| !(g.module == module && g.params_digest == params_digest));
    policy.grants.push(Grant {
        module,
        researchers: if researchers.is_empty() {
            Researchers::Any
        } else {
            Researchers::Only(researchers)
        },
        params_digest,
        expires_at: expires.map(|d| now + d * 86_400),
        max_runs,
        note: Some(form.note.trim().to_string()).filter(|n| !n.is_empty()),
        inputs: (!inputs.is_empty()).then_some(inputs),
        unlimited: false,
    });
    policy.output.review_required = form.review.is_some();
    if let Some(list) = &form.identifiers {
        policy.identifier_columns = columns(list);
    }
    if let Some(list) = &form.hidden {
        policy.hidden_columns = columns(list);
    }
    if let Some(k) = min_group {
        policy.output.min_group_count = k;
    }
    policy
        .validate()
        .map_err(|e| Problem::bad_request(format!("the policy would be invalid: {e}")))?;
    Ok(policy)
}

pub(super) async fn grant_preview(State(c): Shared, Form(form): Form<GrantForm>) -> Page {
    let dataset = dataset_id(&form.dataset)?;
    let prev = c
        .call(move |c, client| crate::remote::policy::current_on(&c.conn, client, &dataset))
        .await?;
    let next = proposed(prev.as_ref(), &form)?;
    Ok(view::confirm(prev.as_ref(), &next))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeForm {
    dataset: String,
    module: String,
    #[serde(default)]
    params_digest: String,
}

pub(super) async fn revoke_preview(State(c): Shared, Form(form): Form<RevokeForm>) -> Page {
    let dataset = dataset_id(&form.dataset)?;
    let prev = c
        .call(move |c, client| crate::remote::policy::current_on(&c.conn, client, &dataset))
        .await?
        .ok_or_else(|| Problem::bad_request("this dataset has no policy: nothing to revoke"))?;
    let mut next = prev.policy.clone();
    let pin = Some(form.params_digest.clone()).filter(|d| !d.is_empty());
    next.grants
        .retain(|g| !(g.module == form.module && g.params_digest == pin));
    next.version += 1;
    next.issued_at = now();
    Ok(view::confirm(Some(&prev), &next))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignForm {
    /// The exact policy the confirmation page showed, as JSON.
    policy: String,
}

/// Sign exactly the policy the confirmation page showed, if the server's current version is
/// still the one it was computed from (else the owner reviews the new state first).
pub(super) async fn sign_policy(State(c): Shared, Form(form): Form<SignForm>) -> Page {
    let policy: Policy = serde_json::from_str(&form.policy)
        .map_err(|e| Problem::bad_request(format!("not a policy: {e}")))?;
    dataset_id(&policy.dataset)?;
    let (signed, stored) = c
        .call(move |c, client| {
            let prev = crate::remote::policy::current_on(&c.conn, client, &policy.dataset)?;
            let expected = prev.as_ref().map_or(1, |p| p.policy.version + 1);
            if policy.version != expected {
                return Err(anyhow!(
                    "the policy changed since you reviewed it (now v{}): review the change again",
                    expected - 1
                ));
            }
            policy
                .validate()
                .map_err(|e| anyhow!("invalid policy: {e}"))?;
            crate::remote::policy::sign_and_put(&c.conn, client, policy)
        })
        .await?;
    Ok(view::signed(&signed, &stored))
}
