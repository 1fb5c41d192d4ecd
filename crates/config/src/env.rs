//! `${VAR}` / `${VAR:-default}` substitution on YAML string scalars (`$$` escapes a dollar).

use serde_yaml::Value;

/// Replaces variables in every string scalar below `value`; errors carry the key path.
pub(super) fn substitute(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    match value {
        Value::String(s) if s.contains('$') => {
            let whole_reference = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            let expanded = expand(s, lookup).map_err(|m| (path.to_string(), m))?;
            // `port: ${PORT}` must stay a number: a value that is exactly one reference takes the
            // YAML type of what it expands to (numbers and booleans only).
            let typed = whole_reference
                .then(|| serde_yaml::from_str::<Value>(&expanded).ok())
                .flatten()
                .filter(|v| matches!(v, Value::Number(_) | Value::Bool(_)));
            match typed {
                Some(v) => *value = v,
                None => *s = expanded,
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), lookup)?;
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = k.as_str().map(str::to_owned).unwrap_or_else(|| format!("{k:?}"));
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                substitute(v, &child, lookup)?;
            }
        }
        Value::Tagged(t) => substitute(&mut t.value, path, lookup)?,
        _ => {}
    }
    Ok(())
}

fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            match lookup(name).filter(|v| !v.is_empty()).or(default.map(str::to_owned)) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME_X").then(|| "/home/x".to_string())
    }

    #[test]
    fn whole_references_keep_scalar_types() {
        let lookup = |n: &str| match n {
            "PORT" => Some("8080".to_string()),
            "FLAG" => Some("true".to_string()),
            _ => None,
        };
        let mut v: Value =
            serde_yaml::from_str("{a: '${PORT}', b: 'x${PORT}', c: '${FLAG}', d: '${NAME:-n}'}").unwrap();
        substitute(&mut v, "", &lookup).unwrap();
        assert_eq!(v["a"], Value::Number(8080.into()));
        assert_eq!(v["b"], Value::String("x8080".into()));
        assert_eq!(v["c"], Value::Bool(true));
        assert_eq!(v["d"], Value::String("n".into()));
    }

    #[test]
    fn expands_defaults_and_escapes() {
        assert_eq!(expand("${HOME_X}/a", &env).unwrap(), "/home/x/a");
        assert_eq!(expand("${NOPE:-d}", &env).unwrap(), "d");
        assert_eq!(expand("$$5 and $x", &env).unwrap(), "$5 and $x");
        assert!(expand("${NOPE}", &env).unwrap_err().contains("NOPE"));
        assert!(expand("${BAD NAME}", &env).is_err());
        assert!(expand("${OPEN", &env).is_err());
    }
}
