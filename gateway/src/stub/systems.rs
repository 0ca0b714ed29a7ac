//! What each stub system answers, in the shape of the real system's API.
//! Facts about the real APIs: shared/PAYLOADS.md in the project's planning notes.

use std::sync::atomic::Ordering;

use crate::config::SystemKind;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::StubState;

pub fn answer(
    state: &StubState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &Value,
    seq: u64,
) -> (StatusCode, Value) {
    match state.kind {
        SystemKind::Erp => kingdee(state, method, path, body),
        SystemKind::Crm => salesforce(method, path, seq),
        SystemKind::Oa => dingtalk(method, path, query, seq),
        SystemKind::Wms => qimen(path, query, body, seq),
        SystemKind::Mes => b2mml(method, path, body, seq),
    }
}

fn not_found(kind: SystemKind, path: &str) -> (StatusCode, Value) {
    (StatusCode::NOT_FOUND, json!({"error": format!("the {kind} stub has no endpoint {path}")}))
}

/// Kingdee K/3 Cloud WebAPI: `POST /k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.{Op}.common.kdsvc`.
fn kingdee(state: &StubState, method: &Method, path: &str, body: &Value) -> (StatusCode, Value) {
    const PREFIX: &str = "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.";
    let Some(service) = path.strip_prefix(PREFIX).and_then(|s| s.strip_suffix(".common.kdsvc")) else {
        return not_found(SystemKind::Erp, path);
    };
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, json!({"error": "Kingdee WebAPI takes POST"}));
    }
    if service.starts_with("AuthService.") {
        return (
            StatusCode::OK,
            json!({"LoginResultType": 1, "Message": null, "Context": {"UserName": "qiao", "DBid": "5f8e2c1a9b7d3e40"}}),
        );
    }
    let op = service.strip_prefix("DynamicFormService.").unwrap_or(service);
    // Current envelope {"formid", "data"} or legacy {"parameters": [formid, data]}.
    let (formid, data) = match (body.get("formid"), body.get("parameters")) {
        (Some(f), _) => (f.as_str().unwrap_or(""), body.get("data").cloned().unwrap_or(Value::Null)),
        (None, Some(Value::Array(p))) => {
            (p.first().and_then(Value::as_str).unwrap_or(""), p.get(1).cloned().unwrap_or(Value::Null))
        }
        _ => ("", Value::Null),
    };
    let failure = |code: u32, field: &str, message: &str| {
        (
            StatusCode::OK,
            json!({"Result": {"ResponseStatus": {"ErrorCode": 500, "IsSuccess": false, "MsgCode": code,
                "Errors": [{"FieldName": field, "Message": message, "DIndex": 0}], "SuccessEntitys": [], "SuccessMessages": []}}}),
        )
    };
    if formid.is_empty() {
        return failure(9, "formid", "formid 不能为空 (formid is required)");
    }
    match op {
        "Save" | "BatchSave" | "Draft" => {
            let Some(model) = data.get("Model") else {
                return failure(9, "Model", "Model 不能为空 (data.Model is required)");
            };
            if let Some(cust) = model.pointer("/FCustId/FNumber").and_then(Value::as_str)
                && cust.is_empty()
            {
                return failure(11, "FCustId", "客户不能为空 (customer is required)");
            }
            let n = state.bills.fetch_add(1, Ordering::Relaxed) + 1;
            let number = format!("{}{n:06}", bill_prefix(formid));
            let id = 100_000 + n;
            (
                StatusCode::OK,
                json!({"Result": {"ResponseStatus": {"ErrorCode": 0, "IsSuccess": true, "Errors": [],
                    "SuccessEntitys": [{"Id": id, "Number": number, "DIndex": 0}], "SuccessMessages": [], "MsgCode": 0},
                    "Id": id, "Number": number, "NeedReturnData": [{"FBillNo": number}]}}),
            )
        }
        "Submit" | "Audit" | "UnAudit" | "Delete" => {
            let numbers = data.get("Numbers").cloned().unwrap_or(json!([]));
            let entities: Vec<Value> = numbers
                .as_array()
                .map(|ns| ns.iter().enumerate().map(|(i, n)| json!({"Id": 0, "Number": n, "DIndex": i})).collect())
                .unwrap_or_default();
            (
                StatusCode::OK,
                json!({"Result": {"ResponseStatus": {"IsSuccess": true, "Errors": [], "SuccessEntitys": entities, "MsgCode": 0}}}),
            )
        }
        "View" | "ExecuteBillQuery" | "BillQuery" => (StatusCode::OK, json!([])),
        other => failure(9, "", &format!("unknown operation {other}")),
    }
}

fn bill_prefix(formid: &str) -> &'static str {
    match formid {
        "SAL_SaleOrder" => "XSDD",
        "PUR_PurchaseOrder" => "CGDD",
        "STK_InStock" => "CGRK",
        "SAL_DELIVERYNOTICE" => "FHTZD",
        "SAL_OUTSTOCK" => "XSCKD",
        "PRD_MO" => "MO",
        "PRD_INSTOCK" => "SCRK",
        "PRD_PickMtrl" => "SCLLD",
        _ => "BILL",
    }
}

/// Salesforce REST: `/services/data/vXX.X/sobjects/{Object}/[{Id}]`, `/query`.
fn salesforce(method: &Method, path: &str, seq: u64) -> (StatusCode, Value) {
    let Some(rest) = path.strip_prefix("/services/data/") else {
        return not_found(SystemKind::Crm, path);
    };
    let mut parts = rest.splitn(2, '/');
    let _version = parts.next();
    let rest = parts.next().unwrap_or("");
    if let Some(obj) = rest.strip_prefix("sobjects/") {
        let segs: Vec<&str> = obj.trim_end_matches('/').split('/').collect();
        return match (method, segs.as_slice()) {
            (&Method::POST, [_object]) => {
                (StatusCode::CREATED, json!({"id": format!("801J00000{seq:09}AAA"), "success": true, "errors": []}))
            }
            (&Method::PATCH, [_object, _id]) => (StatusCode::NO_CONTENT, Value::Null),
            (&Method::GET, [object, id]) => (StatusCode::OK, json!({"attributes": {"type": object}, "Id": id})),
            _ => not_found(SystemKind::Crm, path),
        };
    }
    if rest.starts_with("query") {
        return (StatusCode::OK, json!({"totalSize": 0, "done": true, "records": []}));
    }
    not_found(SystemKind::Crm, path)
}

/// DingTalk: old `topapi` and new `v1.0` endpoints.
fn dingtalk(method: &Method, path: &str, query: Option<&str>, seq: u64) -> (StatusCode, Value) {
    match (method, path) {
        (&Method::POST, "/topapi/message/corpconversation/asyncsend_v2") => (
            StatusCode::OK,
            json!({"errcode": 0, "errmsg": "ok", "task_id": 256_271_667_526 + seq, "request_id": format!("req-{seq}")}),
        ),
        (&Method::POST, "/topapi/processinstance/create") => (
            StatusCode::OK,
            json!({"errcode": 0, "errmsg": "ok", "process_instance_id": format!("a3f7c2e1-6b1d-4e59-9c2a-{seq:012}"), "request_id": format!("req-{seq}")}),
        ),
        (&Method::POST, "/topapi/processinstance/get") | (&Method::GET, "/v1.0/workflow/processInstances") => {
            let id = query
                .and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "processInstanceId")
                        .map(|(_, v)| v.into_owned())
                })
                .unwrap_or_default();
            (
                StatusCode::OK,
                json!({"errcode": 0, "errmsg": "ok", "result": {"title": "李娜提交的采购申请", "status": "COMPLETED", "result": "agree",
                    "businessId": "202503180001", "processInstanceId": id, "formComponentValues": []}}),
            )
        }
        (&Method::POST, p) if p.starts_with("/v1.0/") || p.starts_with("/topapi/") => {
            (StatusCode::OK, json!({"errcode": 0, "errmsg": "ok"}))
        }
        _ => not_found(SystemKind::Oa, path),
    }
}

/// Alibaba Qimen WMS: `POST /qimen/router?method=taobao.qimen.<api>`.
fn qimen(path: &str, query: Option<&str>, body: &Value, seq: u64) -> (StatusCode, Value) {
    if path != "/qimen/router" {
        return not_found(SystemKind::Wms, path);
    }
    let method = query
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "method").map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    let fail = |msg: &str| (StatusCode::OK, json!({"flag": "failure", "code": "ILLEGAL_PARAM", "message": msg}));
    match method.as_str() {
        "taobao.qimen.entryorder.create" => {
            if body.pointer("/entryOrder/entryOrderCode").is_none() {
                return fail("entryOrder.entryOrderCode 不能为空");
            }
            (
                StatusCode::OK,
                json!({"flag": "success", "code": "0", "message": "", "entryOrderId": format!("ASN{seq:010}")}),
            )
        }
        "taobao.qimen.stockout.create" | "taobao.qimen.deliveryorder.create" => {
            if body.pointer("/deliveryOrder/deliveryOrderCode").is_none() {
                return fail("deliveryOrder.deliveryOrderCode 不能为空");
            }
            (
                StatusCode::OK,
                json!({"flag": "success", "code": "0", "message": "", "deliveryOrderId": format!("DO{seq:010}")}),
            )
        }
        "taobao.qimen.entryorder.confirm"
        | "taobao.qimen.stockout.confirm"
        | "taobao.qimen.deliveryorder.confirm"
        | "taobao.qimen.stockchange.report"
        | "taobao.qimen.inventory.report" => (StatusCode::OK, json!({"flag": "success", "code": "0", "message": ""})),
        "" => fail("missing method parameter"),
        other => fail(&format!("Invalid method {other}")),
    }
}

/// MES speaking B2MML verbs and nouns as JSON: `POST /api/b2mml/{Verb}{Noun}`.
fn b2mml(method: &Method, path: &str, body: &Value, seq: u64) -> (StatusCode, Value) {
    let Some(name) = path.strip_prefix("/api/b2mml/") else {
        return not_found(SystemKind::Mes, path);
    };
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, json!({"error": "B2MML messages are POSTed"}));
    }
    let (verb, noun) = ["Process", "Sync", "Get", "Change", "Cancel"]
        .iter()
        .find_map(|v| name.strip_prefix(v).map(|n| (*v, n)))
        .unwrap_or(("Process", name));
    if noun.is_empty() {
        return not_found(SystemKind::Mes, path);
    }
    let id = body.get(noun).and_then(|n| n.get("ID")).cloned().unwrap_or(Value::Null);
    (
        StatusCode::OK,
        json!({format!("Acknowledge{noun}"): {
            "ApplicationArea": {"Sender": {"LogicalID": "MES-STUB"}, "BODID": format!("BOD-{seq:08}")},
            "DataArea": {"Acknowledge": {"OriginalVerb": verb, "ResponseCriteria": {"ResponseExpression": {"actionCode": "Accepted"}}}, "ID": id}
        }}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kingdee_save_hands_out_bill_numbers_and_refuses_missing_models() {
        let st = StubState::new(SystemKind::Erp, 10);
        let path = "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc";
        let (s, a) = answer(
            &st,
            &Method::POST,
            path,
            None,
            &json!({"formid": "SAL_SaleOrder", "data": {"Model": {"FID": 0}}}),
            1,
        );
        assert_eq!(s, StatusCode::OK);
        assert_eq!(a["Result"]["ResponseStatus"]["IsSuccess"], true);
        assert_eq!(a["Result"]["Number"], "XSDD000001");
        let (_, a) = answer(&st, &Method::POST, path, None, &json!({"formid": "PUR_PurchaseOrder", "data": {}}), 2);
        assert_eq!(a["Result"]["ResponseStatus"]["IsSuccess"], false);
        assert!(crate::success::SuccessRule::Kingdee.failure(&a).unwrap().contains("Model"));
    }

    #[test]
    fn qimen_routes_on_the_method_parameter() {
        let st = StubState::new(SystemKind::Wms, 10);
        let (_, a) = answer(
            &st,
            &Method::POST,
            "/qimen/router",
            Some("method=taobao.qimen.stockout.create"),
            &json!({"deliveryOrder": {"deliveryOrderCode": "FHTZD1"}}),
            3,
        );
        assert_eq!(a["flag"], "success");
        let (_, a) = answer(&st, &Method::POST, "/qimen/router", Some("method=taobao.qimen.nope"), &json!({}), 4);
        assert_eq!(a["flag"], "failure");
    }

    #[test]
    fn salesforce_mes_and_dingtalk_shapes() {
        let crm = StubState::new(SystemKind::Crm, 10);
        let (s, a) = answer(&crm, &Method::POST, "/services/data/v62.0/sobjects/Order/", None, &json!({}), 7);
        assert_eq!((s, a["success"].clone()), (StatusCode::CREATED, json!(true)));
        let mes = StubState::new(SystemKind::Mes, 10);
        let (_, a) = answer(
            &mes,
            &Method::POST,
            "/api/b2mml/ProcessProductionPerformance",
            None,
            &json!({"ProductionPerformance": {"ID": "PP-1"}}),
            1,
        );
        assert_eq!(a["AcknowledgeProductionPerformance"]["DataArea"]["ID"], "PP-1");
        let oa = StubState::new(SystemKind::Oa, 10);
        let (_, a) = answer(&oa, &Method::POST, "/topapi/message/corpconversation/asyncsend_v2", None, &json!({}), 1);
        assert_eq!(a["errcode"], 0);
        let (s, _) = answer(&oa, &Method::GET, "/nope", None, &json!({}), 1);
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}
