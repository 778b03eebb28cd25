//! W3C Trace Context (`traceparent`) as inputs carry it: checking one, and continuing the
//! trace of an input in the work it causes.

/// `version-traceid-parentid-flags`, lowercase hex of 2-32-16-2 digits, as W3C Trace Context
/// parses it: version `ff` and all-zero ids are invalid; a version above `00` may carry more
/// fields after the flags, version `00` may not.
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |p: &str| p.bytes().all(|b| b == b'0');
    match parts.as_slice() {
        [version, trace, parent, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && !zero(trace)
                && hex(parent, 16)
                && !zero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// The trace context for work caused by an input: the input's trace id (a new one when the
/// input carried none) with a new span id, sampled.
pub fn child_traceparent(parent: Option<&str>) -> String {
    let trace_id = parent
        .filter(|p| is_traceparent(p))
        .and_then(|p| p.split('-').nth(1).map(str::to_owned))
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>().max(1)));
    format!("00-{trace_id}-{:016x}-01", rand::random::<u64>().max(1))
}

/// The trace id of a traceparent.
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

/// The span (parent) id of a traceparent.
pub fn span_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_trace_context_continues_the_parent_trace() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = child_traceparent(Some(parent));
        assert!(is_traceparent(&child));
        assert_eq!(trace_id(&child), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(child, parent);
        assert!(is_traceparent(&child_traceparent(None)));
    }
}
