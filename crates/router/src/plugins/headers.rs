//! `header_mutation`: request headers added, updated or deleted on the way upstream. The checks
//! that keep configured header names away from what llmsoup and Envoy own are config rules
//! (`llmsoup_config::headers`).

use crate::config::{HeaderMutationPlugin, HeaderValue};

/// The plugin with names lower-cased, as HTTP/2 and Envoy's header maps want them.
pub fn normalise(p: &HeaderMutationPlugin) -> HeaderMutationPlugin {
    let lower = |v: &[HeaderValue]| -> Vec<HeaderValue> {
        v.iter()
            .map(|h| HeaderValue {
                name: h.name.to_ascii_lowercase(),
                value: h.value.clone(),
            })
            .collect()
    };
    HeaderMutationPlugin {
        add: lower(&p.add),
        update: lower(&p.update),
        delete: p.delete.iter().map(|d| d.to_ascii_lowercase()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_lowercases_names_only() {
        let p = normalise(&HeaderMutationPlugin {
            add: vec![HeaderValue {
                name: "X-Team".into(),
                value: "Blue".into(),
            }],
            update: vec![],
            delete: vec!["X-Debug".into()],
        });
        assert_eq!((p.add[0].name.as_str(), p.add[0].value.as_str()), ("x-team", "Blue"));
        assert_eq!(p.delete, ["x-debug"]);
    }
}
