//! The mock's OpenAI Responses dialect (`POST .../responses`): a `response` object as JSON, or the
//! SSE event sequence OpenAI sends (`response.created`, `response.in_progress`, the output item's
//! `response.output_item.added`, `response.output_text.delta` / `.done`, a `function_call` item
//! with `response.function_call_arguments.delta` when asked for one, `response.output_item.done`,
//! then `response.completed`, whose `response.usage` is the only place a stream reports tokens),
//! echoing what it received in `response.mock`. Errors are OpenAI-shaped, as the real API's are.

use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, Reply, full, named_events};

/// The answer to a Responses request.
pub(super) fn respond(r: Reply, created: u64) -> Response<Body> {
    let id = format!("resp_mock_{}", r.n);
    let msg_id = format!("msg_mock_{}", r.n);
    // Responses tools are flat: `{"type": "function", "name": ...}`.
    let tool = r.tool_call.as_ref().and_then(|args| {
        let name = r.request.pointer("/tools/0/name")?.as_str()?.to_string();
        Some((
            format!("fc_mock_{}", r.n),
            format!("call_mock_{}", r.n),
            name,
            args.clone(),
        ))
    });
    let usage = json!({
        "input_tokens": r.prompt_tokens,
        "input_tokens_details": {"cached_tokens": r.cached_tokens},
        "output_tokens": r.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": r.prompt_tokens + r.completion_tokens,
    });
    let text_item = |text: &str, status: &str| {
        json!({"type": "message", "id": msg_id, "status": status, "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": []}]})
    };
    let call_item = |args: &str, status: &str| {
        tool.as_ref().map(|(fc, call, name, _)| {
            json!({"type": "function_call", "id": fc, "call_id": call, "name": name,
                   "arguments": args, "status": status})
        })
    };
    let mut output = vec![text_item(&r.content, "completed")];
    output.extend(call_item(tool.as_ref().map_or("", |t| t.3.as_str()), "completed"));
    let response = |status: &str, output: Vec<Value>, usage: Value| {
        json!({"id": id, "object": "response", "created_at": created, "status": status,
               "model": r.model, "output": output, "usage": usage})
    };
    let stream = r.request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let mut body = response("completed", output, usage);
        body["mock"] = r.echo;
        return full(StatusCode::OK, "application/json", body.to_string().into_bytes());
    }

    // The streamed text is the chunks; `response.completed` repeats the whole output.
    let streamed: String = (0..r.chunks).map(|i| format!("tok{i} ")).collect();
    let mut created_ev = response("in_progress", vec![], Value::Null);
    created_ev["mock"] = r.echo;
    let mut events: Vec<(&str, Value)> = vec![
        (
            "response.created",
            json!({"type": "response.created", "response": created_ev}),
        ),
        (
            "response.in_progress",
            json!({"type": "response.in_progress", "response": response("in_progress", vec![], Value::Null)}),
        ),
        (
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0, "item": text_item("", "in_progress")}),
        ),
    ];
    for i in 0..r.chunks {
        events.push((
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": msg_id, "output_index": 0,
                   "content_index": 0, "delta": format!("tok{i} ")}),
        ));
    }
    events.push((
        "response.output_text.done",
        json!({"type": "response.output_text.done", "item_id": msg_id, "output_index": 0,
               "content_index": 0, "text": streamed}),
    ));
    events.push((
        "response.output_item.done",
        json!({"type": "response.output_item.done", "output_index": 0, "item": text_item(&streamed, "completed")}),
    ));
    let mut final_output = vec![text_item(&streamed, "completed")];
    if let Some((fc, _, _, args)) = &tool {
        events.push((
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 1, "item": call_item("", "in_progress")}),
        ));
        // Arguments arrive in pieces, cut mid-value.
        let cut = (0..=args.len() / 2)
            .rev()
            .find(|&i| args.is_char_boundary(i))
            .unwrap_or(0);
        for part in [&args[..cut], &args[cut..]] {
            events.push((
                "response.function_call_arguments.delta",
                json!({"type": "response.function_call_arguments.delta", "item_id": fc, "output_index": 1, "delta": part}),
            ));
        }
        events.push((
            "response.function_call_arguments.done",
            json!({"type": "response.function_call_arguments.done", "item_id": fc, "output_index": 1, "arguments": args}),
        ));
        events.push((
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": 1, "item": call_item(args, "completed")}),
        ));
        final_output.extend(call_item(args, "completed"));
    }
    events.push((
        "response.completed",
        json!({"type": "response.completed", "response": response("completed", final_output, usage)}),
    ));
    for (i, (_, data)) in events.iter_mut().enumerate() {
        data["sequence_number"] = json!(i);
    }
    named_events(events, r.delay)
}
