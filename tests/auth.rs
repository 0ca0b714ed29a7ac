//! Ingress authentication through the real binary: API keys and bearer JWTs (HS256, RS256,
//! ES256), 401 with `WWW-Authenticate` against 403 out of scope, the client's name on the
//! access line (never its key), a JWKS file re-read on reload, and the admin token.

mod common;

use std::path::Path;

use common::otlp::{self, Collector};
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const CRM_KEY: &str = "crm-key-7f3a9c2e5b8d1f4a";
const CRM_KEY_2: &str = "crm-key-rotated-0b1c2d3e4f";
const OA_KEY: &str = "oa-key-9e8d7c6b5a4f3e2d";
const HS_SECRET: &str = "hs256-secret-for-tests-0123456789abcdef";
const SAVE: &str = "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc";

fn keys() -> std::path::PathBuf {
    fixture("auth/keys")
}

/// A config directory with an ERP, four routes and two clients; the JWKS is `jwks-1.json`.
fn config(dir: &Path) {
    let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    w("systems.yaml", "systems:\n  erp:\n    kind: erp\n    http: { base_url: \"${ERP_URL}\" }\n");
    w(
        "routes.yaml",
        &format!(
            r#"routes:
  orders:
    from: {{ http: {{ path: /orders }} }}
    auth: required
    map:
      formid: {{ const: SAL_SaleOrder }}
      data.Model.FID: {{ const: 0 }}
      data.Model.FBillNo: no
    to: {{ system: erp, path: "{SAVE}" }}
  approvals:
    from: {{ http: {{ path: /approvals }} }}
    auth: required
    map:
      formid: {{ const: PUR_PurchaseOrder }}
      data.Model.FID: {{ const: 0 }}
    to: {{ system: erp, path: "{SAVE}" }}
  passthrough:
    from: {{ http: {{ path: "/erp/k3cloud/{{*op}}", methods: [POST] }} }}
    auth: required
    to: {{ system: erp, path: "/k3cloud/{{op}}" }}
  public:
    from: {{ http: {{ path: /public }} }}
    auth: optional
    map:
      formid: {{ const: SAL_SaleOrder }}
      data.Model.FID: {{ const: 0 }}
    to: {{ system: erp, path: "{SAVE}" }}
"#
        ),
    );
    w(
        "clients.yaml",
        r#"auth:
  issuer: https://id.test
  audience: [qiao]
  leeway_s: 30
  algorithms: [HS256, RS256, ES256]
  jwks_file: jwks.json
  hs256_secret: ${TEST_HS_SECRET}
clients:
  crm:
    api_key: ${CRM_KEY}
    api_key_file: crm.keys
    jwt: { subject: crm-svc }
    routes: [orders, "pass*", public]
  oa:
    api_keys: ["${OA_KEY}"]
    routes: [approvals]
"#,
    );
    w("crm.keys", &format!("# rotated in\n{CRM_KEY_2}\n"));
    std::fs::copy(keys().join("jwks-1.json"), dir.join("jwks.json")).unwrap();
}

async fn start() -> (Stubs, Qiao, tempfile::TempDir) {
    start_exporting(None).await
}

async fn start_exporting(collector: Option<&Collector>) -> (Stubs, Qiao, tempfile::TempDir) {
    let stubs = Stubs::start().await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path());
    let mut env = stubs.env();
    env.extend([
        ("CRM_KEY".into(), CRM_KEY.into()),
        ("OA_KEY".into(), OA_KEY.into()),
        ("TEST_HS_SECRET".into(), HS_SECRET.into()),
        ("QIAO_LOG_FORMAT".into(), "json".into()),
        ("QIAO_ADMIN_TOKEN".into(), "admin-token-for-tests".into()),
    ]);
    if let Some(c) = collector {
        env.push(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(), c.endpoint()));
    }
    let qiao = Qiao::run(dir.path(), &env).await;
    (stubs, qiao, dir)
}

async fn call(qiao: &Qiao, path: &str, auth: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(auth);
    request("POST", &qiao.url(path), &headers, br#"{"no":"SO-1"}"#.to_vec()).await.unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn token(alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(HS_SECRET.as_bytes()),
        Algorithm::RS256 => {
            let pem = std::fs::read(keys().join(format!("{}.pem", kid.unwrap()))).unwrap();
            EncodingKey::from_rsa_pem(&pem).unwrap()
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(&std::fs::read(keys().join("ec-1.pem")).unwrap()).unwrap(),
        _ => unreachable!(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(exp_in: i64, iss: &str, aud: &str) -> Value {
    json!({"sub": "crm-svc", "iss": iss, "aud": aud, "exp": now() + exp_in, "iat": now()})
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn assert_401(r: &Reply, detail: &str) {
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    let challenge = r.header("www-authenticate").unwrap_or_else(|| panic!("a challenge: {r:?}"));
    assert!(challenge.starts_with("Bearer realm=\"qiao\""), "{challenge}");
    let p = r.json();
    assert_eq!(p["type"], "urn:qiao:problem:unauthenticated");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(p["detail"].as_str().unwrap().contains(detail), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_401_403_and_the_access_line_and_span_name_the_client_never_the_key() {
    let collector = Collector::start().await;
    let (stubs, qiao, _dir) = start_exporting(Some(&collector)).await;

    let r = call(&qiao, "/orders", &[]).await;
    assert_401(&r, "needs credentials");
    assert!(!r.header("www-authenticate").unwrap().contains("error="), "nothing sent: no error code");

    let r = call(&qiao, "/orders", &[("x-api-key", "crm-key-wrong-000000000")]).await;
    assert_401(&r, "API key is not known");
    assert!(r.header("www-authenticate").unwrap().contains("error=\"invalid_token\""));
    assert!(!String::from_utf8_lossy(&r.body).contains("crm-key-wrong"), "the key is not echoed");

    // A known client, a route out of its scope.
    let r = call(&qiao, "/orders", &[("x-api-key", OA_KEY)]).await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["type"], "urn:qiao:problem:forbidden");
    assert!(r.json()["detail"].as_str().unwrap().contains("`oa` may not call route `orders`"));
    assert!(r.header("www-authenticate").is_none());

    let received = stubs.get(qiao::config::SystemKind::Erp).state.received().len();
    assert_eq!(received, 0, "nothing refused reached the receiver");

    // Good keys: message route, proxy route (a glob), the rotated key, `Authorization: ApiKey`.
    let r = call(&qiao, "/orders", &[("x-api-key", CRM_KEY)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = br#"{"formid":"SAL_SaleOrder","data":{"Model":{"FID":0}}}"#.to_vec();
    let proxied = request(
        "POST",
        &qiao.url(&format!("/erp{SAVE}")),
        &[("content-type", "application/json"), ("authorization", &format!("ApiKey {CRM_KEY_2}"))],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(proxied.status, 200, "{}", String::from_utf8_lossy(&proxied.body));
    let r = request("POST", &qiao.url(&format!("/erp{SAVE}")), &[("content-type", "application/json")], body)
        .await
        .unwrap();
    assert_401(&r, "needs credentials");
    let r = call(&qiao, "/approvals", &[("x-api-key", OA_KEY)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Optional: anonymous passes, a bad key does not.
    assert_eq!(call(&qiao, "/public", &[]).await.status, 200);
    assert_401(&call(&qiao, "/public", &[("x-api-key", "crm-key-wrong-000000000")]).await, "not known");

    // Access lines: the client by name where known, the key nowhere in the logs.
    let access = qiao.access_lines(9, |_| true).await;
    let logs = qiao.logs();
    let names: Vec<(&str, u64, Option<&str>)> = access
        .iter()
        .map(|l| (l["route"].as_str().unwrap(), l["status"].as_u64().unwrap(), l["client_name"].as_str()))
        .collect();
    assert!(names.contains(&("orders", 200, Some("crm"))), "{names:?}");
    assert!(names.contains(&("passthrough", 200, Some("crm"))), "{names:?}");
    assert!(names.contains(&("approvals", 200, Some("oa"))), "{names:?}");
    assert!(names.contains(&("orders", 403, None)), "{names:?}");
    assert!(names.contains(&("public", 200, None)), "{names:?}");
    let errors: Vec<&str> = access.iter().filter_map(|l| l["error_kind"].as_str()).collect();
    assert!(errors.contains(&"unauthenticated") && errors.contains(&"forbidden"), "{errors:?}");
    for secret in [CRM_KEY, CRM_KEY_2, OA_KEY, "crm-key-wrong"] {
        assert!(!logs.contains(secret), "a key in the logs: {secret}\n{logs}");
    }

    // The server spans: `qiao.client` where a client was admitted, no key in any attribute.
    eventually(std::time::Duration::from_secs(10), "the server spans", || async {
        collector.spans().iter().filter(|s| s.kind == otlp::SERVER).count() >= 9
    })
    .await;
    let spans = collector.spans();
    let client_of = |route: &str, status: &str| {
        spans
            .iter()
            .filter(|s| s.kind == otlp::SERVER && s.attr("qiao.route") == Some(route))
            .find(|s| s.attr("http.response.status_code") == Some(status))
            .map(|s| s.attr("qiao.client").map(str::to_string))
            .unwrap_or_else(|| panic!("a {status} span of {route}:\n{}", otlp::tree(&spans)))
    };
    assert_eq!(client_of("orders", "200").as_deref(), Some("crm"));
    assert_eq!(client_of("passthrough", "200").as_deref(), Some("crm"));
    assert_eq!(client_of("orders", "403"), None);
    let all = format!("{spans:?}");
    for secret in [CRM_KEY, CRM_KEY_2, OA_KEY, "crm-key-wrong"] {
        assert!(!all.contains(secret), "a key in a span: {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_of_three_algorithms_expiry_issuer_audience_and_a_reloaded_jwks() {
    let (_stubs, qiao, dir) = start().await;
    let ok = |r: &Reply| assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let good = claims(300, "https://id.test", "qiao");

    for (alg, kid) in [(Algorithm::HS256, None), (Algorithm::RS256, Some("rsa-1")), (Algorithm::ES256, Some("ec-1"))] {
        let t = token(alg, kid, good.clone());
        ok(&call(&qiao, "/orders", &[("authorization", &bearer(&t))]).await);
    }
    // Within the leeway (expired 10 s ago, 30 s allowed), then beyond it.
    let t = token(Algorithm::RS256, Some("rsa-1"), claims(-10, "https://id.test", "qiao"));
    ok(&call(&qiao, "/orders", &[("authorization", &bearer(&t))]).await);
    let t = token(Algorithm::RS256, Some("rsa-1"), claims(-120, "https://id.test", "qiao"));
    let r = call(&qiao, "/orders", &[("authorization", &bearer(&t))]).await;
    assert_401(&r, "expired");
    assert!(r.header("www-authenticate").unwrap().contains("error_description=\"the token expired\""));
    let t = token(Algorithm::ES256, Some("ec-1"), claims(300, "https://id.test", "someone-else"));
    assert_401(&call(&qiao, "/orders", &[("authorization", &bearer(&t))]).await, "audience");
    let t = token(Algorithm::HS256, None, claims(300, "https://evil.test", "qiao"));
    assert_401(&call(&qiao, "/orders", &[("authorization", &bearer(&t))]).await, "issuer");
    // Signed by a key the JWKS does not hold under that kid.
    let t = token(Algorithm::RS256, Some("rsa-2"), good.clone());
    assert_401(&call(&qiao, "/orders", &[("authorization", &bearer(&t))]).await, "key id");
    let mut forged = token(Algorithm::RS256, Some("rsa-1"), good.clone());
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    assert_401(&call(&qiao, "/orders", &[("authorization", &bearer(&forged))]).await, "signature");
    // A valid token, a route out of the client's scope.
    let t = token(Algorithm::HS256, None, good.clone());
    assert_eq!(call(&qiao, "/approvals", &[("authorization", &bearer(&t))]).await.status, 403);

    // The issuer rotates its keys: the new JWKS applies on reload, the old kid is refused.
    std::fs::copy(keys().join("jwks-2.json"), dir.path().join("jwks.json")).unwrap();
    let reload = format!("http://127.0.0.1:{}/admin/reload", qiao.admin);
    let r = request("POST", &reload, &[], vec![]).await.unwrap();
    assert_eq!(r.status, 401, "reload needs the admin token");
    assert!(r.header("www-authenticate").is_some());
    let r = request("POST", &reload, &[("authorization", "Bearer admin-token-for-tests")], vec![]).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t = token(Algorithm::RS256, Some("rsa-2"), good.clone());
    ok(&call(&qiao, "/orders", &[("authorization", &bearer(&t))]).await);
    let t = token(Algorithm::RS256, Some("rsa-1"), good.clone());
    assert_401(&call(&qiao, "/orders", &[("authorization", &bearer(&t))]).await, "key id");
    let t = token(Algorithm::ES256, Some("ec-1"), good);
    ok(&call(&qiao, "/orders", &[("authorization", &bearer(&t))]).await);
}
