//! Maps a serde key path (`decisions[2].modelRefs[0].model`) back to a line in block-style YAML,
//! so configuration errors can say where to look. Best effort: flow style (`{a: 1}`) resolves
//! to the line of the deepest block-style ancestor.

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(i) = stripped[..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#') && t != "---"
}

/// Does `content` (a line with its indentation and any `- ` item markers removed) start the key?
fn starts_key(content: &str, key: &str) -> bool {
    for quoted in [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")] {
        if let Some(rest) = content.strip_prefix(quoted.as_str())
            && (rest.is_empty() || rest.starts_with(' '))
        {
            return true;
        }
    }
    false
}

/// Returns the 1-based line the path points at, if it can be found.
pub(super) fn line_of(text: &str, path: &str) -> Option<usize> {
    // Unknown-field errors name the container; the caller appends the field when it can.
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    let mut end = lines.len();
    // Column at which the current node's own content starts (for list items, after `- `).
    let mut found: Option<usize> = None;
    let mut inline_item: Option<(usize, usize)> = None; // (line, column of content) of a `- key:` item
    for seg in segments(path) {
        match seg {
            Segment::Key(key) => {
                let mut hit = None;
                if let Some((line, col)) = inline_item.take()
                    && starts_key(&lines[line][col..], key)
                {
                    hit = Some((line, col));
                }
                if hit.is_none() {
                    let Some(child_indent) = (start..end)
                        .filter(|&i| is_content(lines[i]))
                        .map(|i| indent(lines[i]))
                        .min()
                    else {
                        break;
                    };
                    hit = (start..end)
                        .filter(|&i| is_content(lines[i]) && indent(lines[i]) == child_indent)
                        .find(|&i| starts_key(&lines[i][child_indent..], key))
                        .map(|i| (i, child_indent));
                }
                // Not in block style (e.g. inside `{...}`): the deepest ancestor found is the answer.
                let Some((line, col)) = hit else { break };
                found = Some(line);
                start = line + 1;
                // The value is the block below; YAML lets a sequence sit at the key's own indent.
                end = (start..end)
                    .find(|&i| {
                        let (ind, t) = (indent(lines[i]), lines[i].trim_start());
                        is_content(lines[i]) && (ind < col || (ind == col && !(t == "-" || t.starts_with("- "))))
                    })
                    .unwrap_or(end);
            }
            Segment::Index(n) => {
                let items: Vec<usize> = (start..end)
                    .filter(|&i| is_content(lines[i]))
                    .filter(|&i| {
                        let t = lines[i].trim_start();
                        t == "-" || t.starts_with("- ")
                    })
                    .collect();
                let Some(item_indent) = items.iter().map(|&i| indent(lines[i])).min() else {
                    break;
                };
                let items: Vec<usize> = items.into_iter().filter(|&i| indent(lines[i]) == item_indent).collect();
                let Some(&line) = items.get(n) else { break };
                found = Some(line);
                let next = items.get(n + 1).copied().unwrap_or(end);
                let content_col = item_indent + 2;
                inline_item = (lines[line].len() > content_col).then_some((line, content_col));
                start = line + 1;
                end = (start..next)
                    .find(|&i| is_content(lines[i]) && indent(lines[i]) <= item_indent)
                    .unwrap_or(next);
            }
        }
    }
    found.map(|l| l + 1)
}

#[cfg(test)]
mod tests {
    use super::line_of;

    const DOC: &str = "\
# comment
providers:
  - name: a
    base_url: http://x
  - name: b
    base_url: http://y
decisions:
- name: d1
  rules:
    operator: AND
    conditions:
      - type: keyword
        name: k1
      - {type: language, name: fr}
routing:
  default_model: m
";

    #[test]
    fn finds_nested_keys_and_items() {
        assert_eq!(line_of(DOC, "providers"), Some(2));
        assert_eq!(line_of(DOC, "providers[1].base_url"), Some(6));
        assert_eq!(line_of(DOC, "providers[0].name"), Some(3));
        assert_eq!(line_of(DOC, "decisions[0].rules.conditions[0].name"), Some(13));
        assert_eq!(line_of(DOC, "decisions[0].rules.conditions[1]"), Some(14));
        assert_eq!(line_of(DOC, "routing.default_model"), Some(16));
        assert_eq!(line_of(DOC, "nope"), None);
    }

    #[test]
    fn flow_style_resolves_to_the_deepest_block_ancestor() {
        assert_eq!(line_of(DOC, "decisions[0].rules.conditions[1].name"), Some(14));
        assert_eq!(line_of(DOC, "routing.default_model.extra"), Some(16));
        let flow = "decisions:\n  - name: d\n    plugins: [{type: header_mutation, configuration: {add: [{name: x, value: y}]}}]\n";
        assert_eq!(
            line_of(flow, "decisions[0].plugins[0].configuration.add[0].name"),
            Some(3)
        );
    }
}
