//! The shipped example CRM order with generated order lines, for the benches' larger inputs.

use serde_json::{Value, json};

/// `example` (routes/examples/crm-order.json) with its order lines replaced by `items` (each
/// one order line as JSON text), laid out like the example: one order line per text line.
pub fn with_lines(example: &[u8], items: &[String]) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(example).expect("the example order is JSON");
    let order_items = &mut doc["records"][0]["OrderItems"];
    order_items["totalSize"] = json!(items.len());
    order_items["records"] = json!("@ORDER_LINES@");
    let text = serde_json::to_string_pretty(&doc).expect("serializes");
    let lines_text = format!("[\n          {}\n        ]", items.join(",\n          "));
    text.replacen("\"@ORDER_LINES@\"", &lines_text, 1).into_bytes()
}
