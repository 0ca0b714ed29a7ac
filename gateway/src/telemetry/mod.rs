//! Traces, metrics and log correlation.
//!
//! - Spans through the OpenTelemetry API, one per phase of a message, with the semantic
//!   conventions for HTTP and messaging; W3C trace context (and baggage) is read from HTTP
//!   and AMQP headers and written into every outgoing request and message.
//! - Export over OTLP (HTTP/protobuf or gRPC), batched on a small runtime of its own: a
//!   slow or unreachable collector fills a bounded queue and loses spans, never time.
//! - Prometheus metrics (`metrics.rs`), served on the admin listener.
//! - JSON log lines carry `trace_id` and `span_id` (`logjson.rs`).

pub mod access;
pub mod logjson;
pub mod metrics;
pub mod trace;
pub mod w3c;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};

/// Where spans go. What the config leaves open (`None`) comes from the standard `OTEL_*`
/// variables, then from the defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TelemetrySettings {
    /// OTLP endpoint; none turns export off (spans are still created, unsampled, so trace
    /// context still propagates).
    pub endpoint: Option<String>,
    /// Default HTTP/protobuf.
    pub protocol: Option<OtlpProtocol>,
    /// Share of new traces kept, 0.0–1.0 (default 1.0); a sampled parent is always followed.
    pub sample_ratio: Option<f64>,
    /// Default `qiao`.
    pub service_name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    HttpProtobuf,
    Grpc,
}

impl TelemetrySettings {
    /// Fills what the config left open from `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_SERVICE_NAME` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn with_env(self) -> Self {
        self.with_vars(|n| std::env::var(n).ok())
    }

    fn with_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |n: &str| var(n).filter(|v| !v.trim().is_empty());
        if self.protocol.is_none() {
            self.protocol = var("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| match p.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                other => {
                    // `http/json` is a valid OTLP protocol that this build does not export.
                    tracing::warn!(protocol = other, "OTEL_EXPORTER_OTLP_PROTOCOL not supported; using http/protobuf");
                    OtlpProtocol::HttpProtobuf
                }
            });
        }
        if self.endpoint.is_none() {
            self.endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
                var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| match self.protocol() {
                    // The generic endpoint is a base URL for HTTP: the signal path goes after it.
                    OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                    OtlpProtocol::Grpc => base,
                })
            });
        }
        if self.service_name.is_none() {
            self.service_name = var("OTEL_SERVICE_NAME");
        }
        if self.sample_ratio.is_none() {
            self.sample_ratio = var("OTEL_TRACES_SAMPLER_ARG").and_then(|r| r.trim().parse().ok());
        }
        self
    }

    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol.unwrap_or(OtlpProtocol::HttpProtobuf)
    }

    pub fn sample_ratio(&self) -> f64 {
        self.sample_ratio.unwrap_or(1.0).clamp(0.0, 1.0)
    }

    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or("qiao")
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
        .with_service_name(settings.service_name().to_string())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let Some(endpoint) = &settings.endpoint else {
        // Nothing to export to: spans exist (so trace context propagates with new span ids)
        // but are never recorded, which costs next to nothing.
        let provider = SdkTracerProvider::builder().with_sampler(Sampler::AlwaysOff).with_resource(resource).build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        trace::set_exporting(false);
        return Ok(Telemetry { provider, _runtime: None, exporting_to: None });
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("qiao-telemetry")
        .enable_all()
        .build()
        .map_err(|e| format!("telemetry runtime: {e}"))?;
    let _in_runtime = runtime.enter();
    let exporter = match settings.protocol() {
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
    let ratio = settings.sample_ratio();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    trace::set_exporting(true);
    drop(_in_runtime);
    Ok(Telemetry { provider, _runtime: Some(runtime), exporting_to: Some(endpoint.clone()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)], config: TelemetrySettings) -> TelemetrySettings {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        config.with_vars(|n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
    }

    #[test]
    fn the_generic_endpoint_gets_the_signal_path_only_over_http() {
        let http = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318/")], TelemetrySettings::default());
        assert_eq!(http.endpoint.as_deref(), Some("http://otel:4318/v1/traces"));
        let grpc = from(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            TelemetrySettings::default(),
        );
        assert_eq!(grpc.endpoint.as_deref(), Some("http://otel:4317"));
        assert_eq!(grpc.protocol(), OtlpProtocol::Grpc);
        let traces = from(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b/t")],
            TelemetrySettings::default(),
        );
        assert_eq!(traces.endpoint.as_deref(), Some("http://b/t"), "the signal's own variable wins");
    }

    #[test]
    fn the_config_wins_over_the_environment() {
        let config = TelemetrySettings {
            endpoint: Some("http://config:4317".into()),
            protocol: Some(OtlpProtocol::Grpc),
            sample_ratio: Some(0.25),
            service_name: Some("qiao-hz".into()),
        };
        let vars = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env/v1/traces"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_SAMPLER_ARG", "1"),
            ("OTEL_SERVICE_NAME", "other"),
        ];
        assert_eq!(from(&vars, config.clone()), config);
        let open = from(&vars, TelemetrySettings::default());
        assert_eq!(open.sample_ratio(), 1.0);
        assert_eq!(open.service_name(), "other");
        assert_eq!(open.protocol(), OtlpProtocol::HttpProtobuf);
        let none = from(&[], TelemetrySettings::default());
        assert_eq!((none.endpoint.as_deref(), none.sample_ratio(), none.service_name()), (None, 1.0, "qiao"));
    }
}
