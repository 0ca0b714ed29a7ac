//! A small real OTLP collector on one port: OTLP/HTTP (`POST /v1/traces`, protobuf) and
//! OTLP/gRPC (`TraceService/Export` over cleartext HTTP/2). It keeps every span so that a
//! test can look at the tree.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use tokio::net::TcpListener;

/// One received span, ids as lowercase hex (empty parent for a root).
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub name: String,
    /// 1 internal, 2 server, 3 client, 4 producer, 5 consumer (OTLP's enum).
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    pub service: String,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const PRODUCER: i32 = 4;
pub const CONSUMER: i32 = 5;

pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<usize>>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (s, r) = (spans.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (s, r) = (s.clone(), r.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let keep = |bytes: &[u8]| match ExportTraceServiceRequest::decode(bytes) {
                                Ok(export) => {
                                    *r.lock().unwrap() += 1;
                                    s.lock().unwrap().extend(flatten(export));
                                    true
                                }
                                Err(_) => false,
                            };
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            Ok::<_, std::convert::Infallible>(match path.as_str() {
                                "/v1/traces" => {
                                    let status = if keep(&body) { 200 } else { 400 };
                                    reply(status, "application/x-protobuf", Bytes::from(answer), None)
                                }
                                GRPC_EXPORT => {
                                    // One length-prefixed message (flag 0: not compressed).
                                    let ok = body.len() >= 5 && body[0] == 0 && keep(&body[5..]);
                                    let mut framed = vec![0u8];
                                    framed.extend_from_slice(&(answer.len() as u32).to_be_bytes());
                                    framed.extend_from_slice(&answer);
                                    let status = if ok { "0" } else { "3" };
                                    reply(200, "application/grpc", Bytes::from(framed), Some(status))
                                }
                                _ => reply(404, "text/plain", Bytes::new(), None),
                            })
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { addr, spans, requests }
    }

    /// For `OTEL_EXPORTER_OTLP_ENDPOINT` with `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// For `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    pub fn export_requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }

    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

type ReplyBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>>;

/// An answer; gRPC puts its status in trailers after the body.
fn reply(
    status: u16,
    content_type: &'static str,
    body: Bytes,
    grpc_status: Option<&str>,
) -> hyper::Response<ReplyBody> {
    let mut frames = vec![Ok(Frame::data(body))];
    if let Some(code) = grpc_status {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_str(code).unwrap());
        frames.push(Ok(Frame::trailers(trailers)));
    }
    let mut resp = hyper::Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert("content-type", http::HeaderValue::from_static(content_type));
    resp
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref().and_then(|v| v.value.as_ref()).map(text))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Span {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, kv.value.and_then(|v| v.value).as_ref().map(text).unwrap_or_default()))
                        .collect(),
                    service: service.clone(),
                    status: span.status.map_or(0, |s| s.code),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                });
            }
        }
    }
    out
}

fn text(v: &AnyValue) -> String {
    match v {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of one trace as an indented tree with offsets and durations, as the docs show it.
pub fn tree(spans: &[Span]) -> String {
    let kind = |k: i32| ["", "internal", "server", "client", "producer", "consumer"].get(k as usize).copied();
    let t0 = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let mut out = String::new();
    fn walk(
        spans: &[Span],
        parent: &str,
        depth: usize,
        t0: u64,
        kind: &dyn Fn(i32) -> Option<&'static str>,
        out: &mut String,
    ) {
        let mut children: Vec<&Span> = spans.iter().filter(|s| s.parent == parent).collect();
        children.sort_by_key(|s| s.start_ns);
        for s in children {
            let mut attrs: Vec<String> = s
                .attributes
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("messaging.")
                        || k.starts_with("qiao.")
                        || k.starts_with("http.")
                        || k.as_str() == "url.full"
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            attrs.sort();
            out.push_str(&format!(
                "{:>8.2} ms {:>7.2} ms  {}{} [{}] {}\n",
                (s.start_ns - t0) as f64 / 1e6,
                (s.end_ns.saturating_sub(s.start_ns)) as f64 / 1e6,
                "  ".repeat(depth),
                s.name,
                kind(s.kind).unwrap_or("?"),
                attrs.join(" ")
            ));
            walk(spans, &s.span_id, depth + 1, t0, kind, out);
        }
    }
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut roots: Vec<&str> =
        spans.iter().filter(|s| !ids.contains(s.parent.as_str())).map(|s| s.parent.as_str()).collect();
    roots.sort();
    roots.dedup();
    for r in roots {
        walk(spans, r, 0, t0, &kind, &mut out);
    }
    out
}
