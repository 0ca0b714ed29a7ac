//! Success rules: how a receiver says, inside a `2xx` answer, that it did not take a message.
//!
//! Many enterprise APIs answer `200 OK` and put the failure in the body. A system's
//! `success:` names one of the presets below, or a condition over the answer body in the
//! language of `when:` (docs/configuration.md#success):
//!
//! ```yaml
//! success: kingdee                                            # Result.ResponseStatus.IsSuccess
//! success: { when: { path: code, equals: 0 }, message: msg }  # anything else
//! ```
//!
//! A body that is not JSON, or that lacks the fields a preset reads, counts as success: the
//! rule recognises a failure, it does not demand a shape.

use serde_json::Value;

use crate::condition::Condition;
use crate::mapping::{Scope, SourcePath};

/// The presets, by the name written in config.
pub const PRESETS: [&str; 4] = ["kingdee", "qimen", "dingtalk", "salesforce"];

#[derive(Clone, Debug)]
pub enum SuccessRule {
    /// Kingdee K/3 Cloud WebAPI: `Result.ResponseStatus.IsSuccess == false` is a failure;
    /// the message lists `Errors[].FieldName: Message`.
    Kingdee,
    /// Qimen (奇门) WMS: `flag == "failure"`, with `message`.
    Qimen,
    /// DingTalk (钉钉) open API: a non-zero `errcode`, with `errmsg`.
    DingTalk,
    /// Salesforce REST: `success == false`, with `errors`.
    Salesforce,
    /// The answer is a success when `holds` holds for its body; `message`, when set, is read
    /// from the body for the failure's detail.
    Condition(Box<OwnRule>),
}

/// A system's own success rule.
#[derive(Clone, Debug)]
pub struct OwnRule {
    pub holds: Condition,
    pub message: Option<SourcePath>,
}

impl SuccessRule {
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "kingdee" => Self::Kingdee,
            "qimen" => Self::Qimen,
            "dingtalk" => Self::DingTalk,
            "salesforce" => Self::Salesforce,
            _ => return None,
        })
    }

    /// The receiver's own words when `body` says the call failed; `None` when it succeeded.
    pub fn failure(&self, body: &Value) -> Option<String> {
        match self {
            Self::Kingdee => kingdee(body),
            Self::Qimen => (body.get("flag")?.as_str()? == "failure").then(|| {
                let msg = body.get("message").and_then(Value::as_str).unwrap_or("");
                format!("flag is failure: {msg}")
            }),
            Self::DingTalk => {
                let code = body.get("errcode")?.as_i64()?;
                (code != 0).then(|| {
                    let msg = body.get("errmsg").and_then(Value::as_str).unwrap_or("");
                    format!("errcode {code}: {msg}")
                })
            }
            Self::Salesforce => (!body.get("success")?.as_bool()?)
                .then(|| format!("success is false: {}", body.get("errors").unwrap_or(&Value::Null))),
            Self::Condition(rule) => {
                let OwnRule { holds, message } = &**rule;
                let scope = Scope { current: body, document: body, vars: &Value::Null };
                match holds.holds(&scope) {
                    Ok(true) => None,
                    Ok(false) => Some(match message.as_ref().and_then(|m| m.resolve(&scope)) {
                        Some(Value::String(s)) => format!("the success rule does not hold: {s}"),
                        Some(v) if !v.is_null() => format!("the success rule does not hold: {v}"),
                        _ => "the success rule does not hold".to_string(),
                    }),
                    // The answer cannot be confirmed as a success: say so rather than
                    // report the message delivered.
                    Err(e) => Some(format!("the success rule could not be evaluated: {e}")),
                }
            }
        }
    }
}

fn kingdee(body: &Value) -> Option<String> {
    let status = body.pointer("/Result/ResponseStatus")?;
    if status.get("IsSuccess")?.as_bool()? {
        return None;
    }
    let errors = status
        .get("Errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| {
                    let msg = e.get("Message")?.as_str()?;
                    Some(match e.get("FieldName").and_then(Value::as_str) {
                        Some(f) if !f.is_empty() => format!("{f}: {msg}"),
                        _ => msg.to_string(),
                    })
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    Some(if errors.is_empty() { "IsSuccess is false".to_string() } else { errors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kingdee_failure_inside_a_200_is_seen() {
        let body = json!({"Result":{"ResponseStatus":{"IsSuccess":false,"MsgCode":11,
            "Errors":[{"FieldName":"FCustId","Message":"客户不存在","DIndex":0}]}}});
        assert_eq!(SuccessRule::Kingdee.failure(&body).unwrap(), "FCustId: 客户不存在");
        let ok = json!({"Result":{"ResponseStatus":{"IsSuccess":true,"Errors":[]}}});
        assert_eq!(SuccessRule::Kingdee.failure(&ok), None);
    }

    #[test]
    fn qimen_dingtalk_and_salesforce_failures_are_seen() {
        assert!(SuccessRule::Qimen.failure(&json!({"flag":"failure","message":"库存不足"})).is_some());
        assert!(SuccessRule::Qimen.failure(&json!({"flag":"success"})).is_none());
        assert!(SuccessRule::DingTalk.failure(&json!({"errcode":40014,"errmsg":"bad token"})).is_some());
        assert!(SuccessRule::DingTalk.failure(&json!({"errcode":0})).is_none());
        assert!(SuccessRule::Salesforce.failure(&json!({"success":false,"errors":["x"]})).is_some());
        assert!(SuccessRule::Salesforce.failure(&json!({"success":true})).is_none());
    }

    #[test]
    fn bodies_of_other_shapes_are_not_failures() {
        for name in PRESETS {
            let rule = SuccessRule::preset(name).unwrap();
            assert_eq!(rule.failure(&json!({"anything": 1})), None, "{name}");
            assert_eq!(rule.failure(&json!([1, 2])), None, "{name}");
        }
        assert!(SuccessRule::preset("sap").is_none());
    }
}
