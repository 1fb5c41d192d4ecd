//! Writing one value back into a config file's text (`llmsoup calibrate --write`), keeping its
//! comments, order, quoting and `${VAR}` placeholders: the value's line is found with the
//! locator, the scalar replaced (or the key inserted into its list item, block or flow style),
//! and the result is accepted only if it parses to the original document with exactly that
//! value changed.

use serde_yaml::Value;

/// Sets the number at `item.key` (`item` a key path such as `signals.difficulty[0]`) in YAML
/// `text`, returning the new text. Fails, changing nothing, when the edit cannot be made and
/// verified (an unusual layout: anchors, multi-line flow mappings).
pub fn set_number(text: &str, item: &str, key: &str, value: f64) -> Result<String, String> {
    // Written with four decimals: compare with what will be read back.
    let value = (value * 1e4).round() / 1e4;
    let mut expected: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let node = navigate(&mut expected, item).ok_or_else(|| format!("`{item}` is not in the file"))?;
    let Value::Mapping(map) = node else {
        return Err(format!("`{item}` is not a mapping"));
    };
    map.insert(
        Value::String(key.into()),
        Value::Number(serde_yaml::Number::from(value)),
    );
    let edited = edit(text, item, key, value).ok_or_else(|| format!("cannot find where `{item}.{key}` goes"))?;
    let got: Value = serde_yaml::from_str(&edited).map_err(|e| format!("the edit broke the YAML: {e}"))?;
    if got != expected {
        return Err(format!(
            "editing `{item}.{key}` in place would change more than that value"
        ));
    }
    Ok(edited)
}

fn number(value: f64) -> String {
    let s = format!("{value:.4}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

fn edit(text: &str, item: &str, key: &str, value: f64) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let item_line = crate::key_line(text, item)? - 1;
    let v = number(value);
    // The key already there: on its own line (block style) or on the item's line (flow style).
    let at = crate::key_line(text, &format!("{item}.{key}"))? - 1;
    let pattern = regex::Regex::new(&format!(r"(^|[\s{{,]){}:(\s*)[^\s,}}#]+", regex::escape(key))).ok()?;
    let found = pattern.captures(&lines[at]).and_then(|m| {
        let lead = m.get(1).map_or("", |x| x.as_str());
        let space = m.get(2).map_or(" ", |x| x.as_str());
        Some((m.get(0)?.range(), format!("{lead}{key}:{space}{v}")))
    });
    if let Some((range, replaced)) = found {
        lines[at].replace_range(range, &replaced);
        return Some(join(text, lines));
    }
    // Not there: insert it into the item.
    let line = lines[item_line].clone();
    let dash = line
        .find("- ")
        .or_else(|| line.trim_end().ends_with('-').then(|| line.len() - 1))?;
    let content = &line[dash + 1..];
    if let Some(brace) = content.find('{') {
        let pos = dash + 1 + brace + 1;
        lines[item_line].insert_str(pos, &format!("{key}: {v}, "));
        return Some(join(text, lines));
    }
    let indent = if content.trim().is_empty() {
        // `-` alone: the keys start on the next line.
        let next = lines.get(item_line + 1)?;
        next.len() - next.trim_start().len()
    } else {
        dash + 1 + (content.len() - content.trim_start().len())
    };
    lines.insert(item_line + 1, format!("{}{key}: {v}", " ".repeat(indent)));
    Some(join(text, lines))
}

fn join(original: &str, lines: Vec<String>) -> String {
    let mut out = lines.join("\n");
    if original.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn navigate<'a>(root: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut node = root;
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            node = node.as_mapping_mut()?.get_mut(Value::String(key.into()))?;
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let end = stripped.find(']')?;
            let i: usize = stripped[..end].parse().ok()?;
            node = node.as_sequence_mut()?.get_mut(i)?;
            rest = &stripped[end + 1..];
        }
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "\
# the learned router
signals:
  difficulty:
    # the strong model's share
    - name: hard
      threshold: 0.5   # tuned by hand
    - name: other
  complexity:
    - {name: task, hard_from: 0.6}
    - {name: bare}
";

    #[test]
    fn replaces_a_value_keeping_comments() {
        let out = set_number(BLOCK, "signals.difficulty[0]", "threshold", 0.6125).unwrap();
        assert!(out.contains("      threshold: 0.6125   # tuned by hand\n"), "{out}");
        assert!(out.starts_with("# the learned router\n"));
        let out = set_number(BLOCK, "signals.complexity[0]", "hard_from", 0.25).unwrap();
        assert!(out.contains("- {name: task, hard_from: 0.25}"), "{out}");
    }

    #[test]
    fn inserts_a_missing_key() {
        let out = set_number(BLOCK, "signals.difficulty[1]", "threshold", 0.7).unwrap();
        assert!(out.contains("    - name: other\n      threshold: 0.7\n"), "{out}");
        let out = set_number(BLOCK, "signals.complexity[1]", "hard_from", 0.4).unwrap();
        assert!(out.contains("- {hard_from: 0.4, name: bare}"), "{out}");
    }

    #[test]
    fn refuses_what_it_cannot_verify() {
        assert!(set_number(BLOCK, "signals.difficulty[5]", "threshold", 0.1).is_err());
        assert!(set_number("a: [", "a", "b", 0.1).is_err());
        let flow = "signals: {difficulty: [{name: hard}]}\n";
        assert!(set_number(flow, "signals.difficulty[0]", "threshold", 0.1).is_err());
    }
}
