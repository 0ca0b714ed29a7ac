//! The shipped routes, end to end: the real binary on `routes/`, stub systems behind it.

mod common;

use common::*;
use qiao::config::SystemKind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_order_arrives_at_the_erp_as_a_kingdee_sales_order() {
    let stubs = Stubs::start().await;
    let qiao = Qiao::run(&routes_dir(), &stubs.env()).await;

    let reply = request(
        "POST",
        &qiao.url("/crm/orders/801J000000k3QpRIAU"),
        &[("content-type", "application/json"), ("idempotency-key", "crm-801J000000k3QpRIAU-v1")],
        example("crm-order.json"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    // The ERP's own answer is relayed, with the bill number it created.
    assert_eq!(reply.json()["Result"]["ResponseStatus"]["IsSuccess"], true);
    assert!(reply.json()["Result"]["Number"].as_str().unwrap().starts_with("XSDD"));
    assert_eq!(
        reply.header("x-qiao-message-id"),
        Some("crm-801J000000k3QpRIAU-v1"),
        "Idempotency-Key is the message id"
    );

    let got = stubs.get(SystemKind::Erp).state.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.path, "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc");
    assert_eq!(r.message_id.as_deref(), Some("crm-801J000000k3QpRIAU-v1"));
    assert_eq!(r.headers.get("x-kdapi-acctid").map(String::as_str), Some("5f8e2c1a9b7d3e40"), "static system header");
    let b = &r.body;
    assert_eq!(b["formid"], "SAL_SaleOrder");
    assert_eq!(b["data"]["IsAutoSubmitAndAudit"], true);
    let m = &b["data"]["Model"];
    assert_eq!(m["FBillTypeID"], json!({"FNumber": "XSDD01_SYS"}));
    assert_eq!(m["FDate"], "2025-03-18");
    assert_eq!(m["FCustId"], json!({"FNumber": "CUST0042"}));
    assert_eq!(m["FSalerId"], json!({"FNumber": "YG0007"}), "owner wangq through the salers lookup");
    assert_eq!(m["FNote"], "CRM订单 00000105 / 客户PO HZ-PO-2025-088 / 801J000000k3QpRIAU");
    assert_eq!(m["FSaleOrderFinance"]["FSettleCurrId"], json!({"FNumber": "PRE001"}));
    let lines = m["FSaleOrderEntry"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["FMaterialId"], json!({"FNumber": "FG-BJ-3000"}));
    assert_eq!(lines[0]["FQty"], 20);
    assert_eq!(lines[0]["FTaxPrice"], 4520.0);
    assert_eq!(lines[1]["FMaterialId"], json!({"FNumber": "SP-FLT-08"}));
    assert_eq!(lines[1]["FEntryNote"], "空滤滤芯");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_purchase_request_becomes_an_erp_purchase_order() {
    let stubs = Stubs::start().await;
    let qiao = Qiao::run(&routes_dir(), &stubs.env()).await;
    let reply = post_json(&qiao.url("/oa/approvals/purchase"), example("oa-purchase-approval.json")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.json()["Result"]["Number"].as_str().unwrap().starts_with("CGDD"));

    let got = stubs.get(SystemKind::Erp).state.received();
    let m = &got[0].body["data"]["Model"];
    assert_eq!(got[0].body["formid"], "PUR_PurchaseOrder");
    assert_eq!(m["FSupplierId"], json!({"FNumber": "SUP-0107"}));
    assert_eq!(m["FPurchaseOrgId"], json!({"FNumber": "100"}));
    assert_eq!(m["FDate"], "2025-03-18", "finishTime in Beijing time");
    let lines = m["FPOOrderEntry"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        json!({"FMaterialId": {"FNumber": "RM-AL-6061"}, "FUnitId": {"FNumber": "kg"}, "FQty": 500, "FPrice": 21.5, "FDeliveryDate": "2025-03-28"})
    );
    assert_eq!(lines[1]["FUnitId"], json!({"FNumber": "Pcs"}), "default unit");

    // A refused request is not a purchase order: 422 naming the field.
    let mut refused: serde_json::Value = serde_json::from_slice(&example("oa-purchase-approval.json")).unwrap();
    refused["result"] = json!("refuse");
    let reply = post_json(&qiao.url("/oa/approvals/purchase"), serde_json::to_vec(&refused).unwrap()).await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.json()["errors"][0]["pointer"], "/result");
    assert_eq!(stubs.get(SystemKind::Erp).state.received().len(), 1, "nothing more reached the ERP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn material_issue_reaches_the_mes_as_consumed_lots() {
    let stubs = Stubs::start().await;
    let qiao = Qiao::run(&routes_dir(), &stubs.env()).await;
    let reply = post_json(&qiao.url("/wms/material-issues"), example("wms-material-issue.json")).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.json()["AcknowledgeProductionPerformance"].is_object());

    let got = stubs.get(SystemKind::Mes).state.received();
    assert_eq!(got[0].path, "/api/b2mml/ProcessProductionPerformance");
    let pp = &got[0].body["ProductionPerformance"];
    assert_eq!(pp["ID"], "WMS-SCLL-20250325-0007");
    assert_eq!(pp["PublishedDate"], "2025-03-25T07:40:12+08:00");
    let resp = &pp["ProductionResponse"][0];
    assert_eq!(resp["ProductionRequestID"], "MO250318-01");
    let actual = resp["SegmentResponse"][0]["MaterialActual"].as_array().unwrap();
    assert_eq!(actual.len(), 2);
    assert_eq!(
        actual[0],
        json!({"MaterialDefinitionID": "RM-AL-6061", "MaterialLotID": "L20250320-01", "MaterialUse": "Consumed",
               "Location": {"EquipmentID": "WH-HZ-01", "EquipmentElementLevel": "StorageZone"},
               "Quantity": [{"QuantityString": "96.5", "DataType": "decimal", "UnitOfMeasure": "KGM"}]})
    );
    assert_eq!(actual[1]["Quantity"][0]["QuantityString"], "20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_order_goes_through_whole() {
    let stubs = Stubs::start().await;
    let qiao = Qiao::run(&routes_dir(), &stubs.env()).await;
    let order = crm_order(8000);
    let body = serde_json::to_vec(&order).unwrap();
    assert!(body.len() > 1024 * 1024, "the order is {} bytes", body.len());
    let reply = post_json(&qiao.url("/crm/orders/801J000000k3QpRIAU"), body).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let got = stubs.get(SystemKind::Erp).state.received();
    let lines = got[0].body["data"]["Model"]["FSaleOrderEntry"].as_array().unwrap();
    assert_eq!(lines.len(), 8000);
    assert_eq!(lines[7999]["FMaterialId"]["FNumber"], "FG-BJ-7999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_route_streams_bodies_larger_than_64_kib_unchanged() {
    let stubs = Stubs::start().await;
    let qiao = Qiao::run(&routes_dir(), &stubs.env()).await;
    let filler = "仓".repeat(400_000);
    let body =
        serde_json::to_vec(&json!({"formid": "SAL_SaleOrder", "data": {"Number": "XSDD000001", "filler": filler}}))
            .unwrap();
    assert!(body.len() > 1024 * 1024);
    let reply = request(
        "POST",
        &qiao.url("/erp/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.View.common.kdsvc?trace=1"),
        &[("content-type", "application/json")],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.header("x-qiao-message-id").is_some());
    let got = stubs.get(SystemKind::Erp).state.received();
    assert_eq!(got[0].path, "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.View.common.kdsvc");
    assert_eq!(got[0].query.as_deref(), Some("trace=1"));
    assert_eq!(got[0].body["data"]["filler"].as_str().unwrap().len(), filler.len());
    assert_eq!(serde_json::to_vec(&got[0].body).unwrap(), body, "byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_crm_order_goes_to_a_dingtalk_approval_instead_of_the_erp() {
    let stubs = Stubs::start().await;
    let qiao = Qiao::run(&routes_dir(), &stubs.env()).await;
    let mut order: serde_json::Value = serde_json::from_slice(&example("crm-order.json")).unwrap();
    order["records"][0]["OrderItems"]["records"][0]["Quantity"] = json!(30); // 30 × 4520 + 40 × 85 = 139,000
    let reply = post_json(&qiao.url("/crm/orders/801J000000k3QpRIAU"), serde_json::to_vec(&order).unwrap()).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.json()["process_instance_id"].is_string(), "DingTalk's answer is relayed");
    assert!(stubs.get(SystemKind::Erp).state.received().is_empty());
    let approval = &stubs.get(SystemKind::Oa).state.received()[0];
    assert_eq!(approval.path, "/topapi/processinstance/create");
    assert_eq!(approval.body["process_code"], "PROC-SALES-BIG-ORDER");
    assert_eq!(approval.body["originator_user_id"], "0162381720862551", "the DingTalk user, not the ERP code");
    let form = approval.body["form_component_values"].as_array().unwrap();
    assert!(form.contains(&json!({"name": "含税金额", "value": "139000.0"})), "{form:?}");
    assert!(form.contains(&json!({"name": "客户", "value": "杭州恒泽机电设备有限公司"})));
}
