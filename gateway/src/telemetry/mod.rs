//! Traces, metrics and log correlation.
//!
//! - Spans through the OpenTelemetry API, one per phase of a message, with the semantic
//!   conventions for HTTP and messaging; W3C trace context (and baggage) is read from HTTP
//!   and AMQP headers and written into every outgoing request and message.
//! - Export over OTLP (HTTP/protobuf or gRPC), batched on a small runtime of its own: a
//!   slow or unreachable collector fills a bounded queue and loses spans, never time.
//! - Prometheus metrics (`metrics.rs`), served on the admin listener.
//! - JSON log lines carry `trace_id` and `span_id` (`logjson.rs`).

pub mod logjson;
pub mod metrics;
pub mod trace;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};

/// Where spans go. Resolved from the config, then from the standard `OTEL_*` variables.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetrySettings {
    /// OTLP endpoint; `None` turns export off (spans are still created, unsampled, so trace
    /// context still propagates).
    pub endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// Share of new traces kept, 0.0–1.0; a sampled parent is always followed.
    pub sample_ratio: f64,
    pub service_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    HttpProtobuf,
    Grpc,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self { endpoint: None, protocol: OtlpProtocol::HttpProtobuf, sample_ratio: 1.0, service_name: "qiao".into() }
    }
}

impl TelemetrySettings {
    /// Fills what the config left open from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME` and
    /// `OTEL_TRACES_SAMPLER_ARG`.
    pub fn with_env(mut self) -> Self {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        if self.endpoint.is_none() {
            self.endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
                var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| match self.protocol {
                    // The generic endpoint is a base URL for HTTP: the signal path goes after it.
                    OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                    OtlpProtocol::Grpc => base,
                })
            });
        }
        if let Some(p) = var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            self.protocol = if p == "grpc" { OtlpProtocol::Grpc } else { OtlpProtocol::HttpProtobuf };
        }
        if let Some(n) = var("OTEL_SERVICE_NAME") {
            self.service_name = n;
        }
        if let Some(r) = var("OTEL_TRACES_SAMPLER_ARG").and_then(|r| r.parse().ok()) {
            self.sample_ratio = r;
        }
        self
    }
}

/// Keeps the exporter's runtime alive; flushes spans on drop.
pub struct Telemetry {
    provider: SdkTracerProvider,
    _runtime: Option<tokio::runtime::Runtime>,
    pub exporting_to: Option<String>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global propagator and tracer provider.
pub fn init(settings: &TelemetrySettings) -> Result<Telemetry, String> {
    trace::install_propagator();
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let Some(endpoint) = &settings.endpoint else {
        // Nothing to export to: spans exist (so trace context propagates with new span ids)
        // but are never recorded, which costs next to nothing.
        let provider = SdkTracerProvider::builder().with_sampler(Sampler::AlwaysOff).with_resource(resource).build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        return Ok(Telemetry { provider, _runtime: None, exporting_to: None });
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("qiao-telemetry")
        .enable_all()
        .build()
        .map_err(|e| format!("telemetry runtime: {e}"))?;
    let _in_runtime = runtime.enter();
    let exporter = match settings.protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build(),
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build(),
    }
    .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(8192)
        .with_max_export_batch_size(512)
        .with_scheduled_delay(Duration::from_millis(500))
        .with_max_export_timeout(Duration::from_secs(5))
        .build();
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .with_batch_config(batch)
    .build();
    let ratio = settings.sample_ratio.clamp(0.0, 1.0);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    drop(_in_runtime);
    Ok(Telemetry { provider, _runtime: Some(runtime), exporting_to: Some(endpoint.clone()) })
}
