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
use crate::json::Projection;
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

    /// The receiver's own words when the answer `body` says the call failed; `None` when
    /// it succeeded or is not JSON. A preset builds only the fields it reads.
    pub fn failure_in(&self, body: &[u8]) -> Option<String> {
        let body = match self.reads() {
            Some(fields) => crate::json::project(body, fields),
            None => serde_json::from_slice(body),
        };
        self.failure(&body.ok()?)
    }

    /// The fields of an answer the rule reads; `None`: any (an own rule's condition).
    fn reads(&self) -> Option<&'static Projection> {
        use Projection::{Keys, Whole};
        Some(match self {
            Self::Kingdee => {
                const STATUS: Projection = Keys(&[("IsSuccess", Whole), ("Errors", Whole)]);
                &Keys(&[("Result", Keys(&[("ResponseStatus", STATUS)]))])
            }
            Self::Qimen => &Keys(&[("flag", Whole), ("message", Whole)]),
            Self::DingTalk => &Keys(&[("errcode", Whole), ("errmsg", Whole)]),
            Self::Salesforce => &Keys(&[("success", Whole), ("errors", Whole)]),
            Self::Condition(_) => return None,
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
    // Not `pointer`, which allocates a string per step.
    let status = body.get("Result")?.get("ResponseStatus")?;
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

    /// Answers of every preset's shape, and shapes that trip a parser up.
    const ANSWERS: &[&str] = &[
        r#"{"Result":{"ResponseStatus":{"ErrorCode":500,"IsSuccess":false,"MsgCode":11,"Errors":[{"FieldName":"FCustId","Message":"客户不存在","DIndex":0},{"FieldName":"","Message":"单据未保存"}]},"Id":0}}"#,
        r#"{"Result":{"ResponseStatus":{"ErrorCode":0,"IsSuccess":true,"Errors":[],"SuccessEntitys":[{"Id":100001,"Number":"XSDD000001","DIndex":0}],"SuccessMessages":[],"MsgCode":0},"Id":100001,"Number":"XSDD000001","NeedReturnData":[{"FBillNo":"XSDD000001"}]}}"#,
        r#"{"Result":{"ResponseStatus":{"IsSuccess":false}},"Result":{"ResponseStatus":{"IsSuccess":true}}}"#,
        r#"{"Result":{"ResponseStatus":{"IsSuccess":true}},"Result":{"ResponseStatus":{"IsSuccess":false,"Errors":[{"Message":"后者为准"}]}}}"#,
        r#"{"Re\u0073ult":{"ResponseStatus":{"IsSuccess":false,"Errors":[{"Message":"转义的键"}]}},"x":"\ud83d\ude00"}"#,
        r#"{"Result":["ResponseStatus",{"IsSuccess":false}],"flag":["failure"]}"#,
        r#"{"Result":{"ResponseStatus":"IsSuccess false"},"errcode":"40014"}"#,
        r#"{"flag":"failure","message":"库存不足","code":"SKU_LACK","items":[1,2.5,-3e2,true,null]}"#,
        r#"{"flag":"success","message":"","flag":"failure"}"#,
        r#"{"errcode":40014,"errmsg":"不合法的access_token","request_id":"5x9k"}"#,
        r#"{"errcode":0,"errmsg":"ok","result":{"process_instance_id":"a1b2"}}"#,
        r#"{"id":"801J000000k3QpRIAU","success":false,"errors":[{"statusCode":"INVALID_FIELD","message":"No such column"}]}"#,
        r#"[{"success":false,"errors":["a list, not an object"]}]"#,
        r#"{"success":true,"errors":[]}"#,
    ];

    /// What a preset makes of `body` when the whole tree is built, as before projections.
    fn whole(rule: &SuccessRule, body: &[u8]) -> Option<String> {
        rule.failure(&serde_json::from_slice(body).ok()?)
    }

    #[test]
    fn reading_only_the_rules_fields_judges_as_the_whole_tree() {
        let presets: Vec<SuccessRule> = PRESETS.iter().map(|n| SuccessRule::preset(n).unwrap()).collect();
        let mut failures = 0;
        for answer in ANSWERS {
            for rule in &presets {
                let seen = rule.failure_in(answer.as_bytes());
                assert_eq!(seen, whole(rule, answer.as_bytes()), "{rule:?} on {answer}");
                failures += usize::from(seen.is_some());
            }
        }
        assert_eq!(failures, 7, "Kingdee 3, Qimen 2, DingTalk 1, Salesforce 1");
        assert_eq!(SuccessRule::Kingdee.failure_in(ANSWERS[3].as_bytes()).unwrap(), "后者为准");
    }

    #[test]
    fn broken_answers_are_refused_exactly_when_serde_json_refuses_them() {
        // Each answer with one byte dropped or replaced by a byte that breaks JSON in a
        // different way (structure, escapes, UTF-8, numbers), anywhere in the document: also
        // in the parts a preset skips, which must still be checked as a whole parse checks
        // them (a broken answer is no failure, whatever its IsSuccess says).
        let presets: Vec<SuccessRule> = PRESETS.iter().map(|n| SuccessRule::preset(n).unwrap()).collect();
        let mut broken = 0;
        for answer in ANSWERS {
            let bytes = answer.as_bytes();
            for at in 0..bytes.len() {
                let mut variants = vec![[&bytes[..at], &bytes[at + 1..]].concat()];
                for b in [b'"', b'{', b']', b',', b'\\', b'9', b'e', 0xff, 0x01] {
                    let mut v = bytes.to_vec();
                    v[at] = b;
                    variants.push(v);
                }
                for v in &variants {
                    broken += usize::from(serde_json::from_slice::<Value>(v).is_err());
                    for rule in &presets {
                        assert_eq!(rule.failure_in(v), whole(rule, v), "{rule:?} on {}", String::from_utf8_lossy(v));
                    }
                }
            }
        }
        assert!(broken > 1000, "most variants are not JSON: {broken}");
        // What a skipping parser would let through: a number out of range, a lone surrogate,
        // and nesting past serde_json's limit, all outside the fields read.
        let deep = format!(
            r#"{{"Result":{{"ResponseStatus":{{"IsSuccess":false}}}},"x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for skipped in [r#""x":1e400"#, r#""x":"\ud800""#] {
            let body = format!(r#"{{"Result":{{"ResponseStatus":{{"IsSuccess":false}}}},{skipped}}}"#);
            assert_eq!(SuccessRule::Kingdee.failure_in(body.as_bytes()), None, "{body}");
        }
        assert_eq!(SuccessRule::Kingdee.failure_in(deep.as_bytes()), None);
        let valid = r#"{"Result":{"ResponseStatus":{"IsSuccess":false}},"x":[[1e300]]}"#;
        assert_eq!(SuccessRule::Kingdee.failure_in(valid.as_bytes()).unwrap(), "IsSuccess is false");
    }
}
