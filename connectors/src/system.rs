//! The kinds of business systems Qiao connects.

use serde::{Deserialize, Serialize};

/// What a system is. The kind labels metrics and logs, picks the stub that stands in for the
/// system in demos and tests, and tells how the system reports a business failure inside a
/// successful HTTP answer (see [`SystemKind::business_failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    Erp,
    Crm,
    Oa,
    Wms,
    Mes,
}

impl SystemKind {
    pub const ALL: [SystemKind; 5] = [Self::Erp, Self::Crm, Self::Oa, Self::Wms, Self::Mes];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erp => "erp",
            Self::Crm => "crm",
            Self::Oa => "oa",
            Self::Wms => "wms",
            Self::Mes => "mes",
        }
    }

    /// Many enterprise APIs answer `200 OK` and put the failure in the body: Kingdee's
    /// `Result.ResponseStatus.IsSuccess == false`, Qimen's `flag == "failure"`, DingTalk's
    /// non-zero `errcode`. Returns the receiver's own message when the body says the call
    /// failed, so the gateway does not report a rejected order as delivered.
    pub fn business_failure(self, body: &serde_json::Value) -> Option<String> {
        match self {
            Self::Erp => {
                let status = body.pointer("/Result/ResponseStatus")?;
                if status.get("IsSuccess")?.as_bool()? {
                    return None;
                }
                let errors = status
                    .get("Errors")
                    .and_then(|e| e.as_array())
                    .map(|errors| {
                        errors
                            .iter()
                            .filter_map(|e| {
                                let msg = e.get("Message")?.as_str()?;
                                Some(match e.get("FieldName").and_then(|f| f.as_str()) {
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
            Self::Wms => {
                if body.get("flag")?.as_str()? == "failure" {
                    let msg = body.get("message").and_then(|m| m.as_str()).unwrap_or("");
                    Some(format!("flag is failure: {msg}"))
                } else {
                    None
                }
            }
            Self::Oa => {
                let code = body.get("errcode")?.as_i64()?;
                if code == 0 {
                    return None;
                }
                let msg = body.get("errmsg").and_then(|m| m.as_str()).unwrap_or("");
                Some(format!("errcode {code}: {msg}"))
            }
            Self::Crm => {
                // Salesforce: {"success": false, "errors": [...]}
                if body.get("success")?.as_bool()? {
                    None
                } else {
                    Some(format!("success is false: {}", body.get("errors").unwrap_or(&serde_json::Value::Null)))
                }
            }
            Self::Mes => None,
        }
    }
}

impl std::fmt::Display for SystemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kingdee_failure_inside_a_200_is_seen() {
        let body = json!({"Result":{"ResponseStatus":{"IsSuccess":false,"MsgCode":11,
            "Errors":[{"FieldName":"FCustId","Message":"客户不存在","DIndex":0}]}}});
        assert_eq!(SystemKind::Erp.business_failure(&body).unwrap(), "FCustId: 客户不存在");
        let ok = json!({"Result":{"ResponseStatus":{"IsSuccess":true,"Errors":[]}}});
        assert_eq!(SystemKind::Erp.business_failure(&ok), None);
    }

    #[test]
    fn qimen_and_dingtalk_failures_are_seen() {
        assert!(SystemKind::Wms.business_failure(&json!({"flag":"failure","message":"库存不足"})).is_some());
        assert!(SystemKind::Wms.business_failure(&json!({"flag":"success"})).is_none());
        assert!(SystemKind::Oa.business_failure(&json!({"errcode":40014,"errmsg":"bad token"})).is_some());
        assert!(SystemKind::Oa.business_failure(&json!({"errcode":0})).is_none());
    }

    #[test]
    fn bodies_of_other_shapes_are_not_failures() {
        for kind in SystemKind::ALL {
            assert_eq!(kind.business_failure(&json!({"anything": 1})), None);
            assert_eq!(kind.business_failure(&json!([1, 2])), None);
        }
    }
}
