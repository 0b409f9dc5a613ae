//! Tracing and OpenTelemetry, set up once per process.
//!
//! Spans are written with `tracing` and exported by `tracing-opentelemetry`
//! over OTLP/HTTP (protobuf) to Jaeger. The exporter uses the blocking HTTP
//! client on the SDK's own batch thread; the async client would need a Tokio
//! runtime on that thread and panics without one. The exporter, the sampler
//! and the resource all honour the standard `OTEL_*` variables.
//!
//! Trace context crosses NATS in W3C `traceparent`/`tracestate` headers via
//! [`inject`] and [`extract`]. The global propagator is a no-op until one is
//! installed, which [`init`] does; forgetting that silently breaks every trace.

use std::fmt;

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Installs the global subscriber: an env-filtered log formatter whose lines
/// carry trace and span ids, and the OpenTelemetry layer.
pub fn init(service: &'static str) -> anyhow::Result<Telemetry> {
    global::set_text_map_propagator(TraceContextPropagator::new());

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let service_name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    // Under load a service finishes thousands of spans a second (about ten
    // per order and service). The processor exports as soon as a batch is
    // full, so the queue only has to absorb the spans finished while one
    // export is on the wire: 4,096 spans is over a second of headroom at
    // full load. The queue is a channel allocated and touched in full at
    // start-up (about 400 bytes a slot), so its size is resident memory:
    // 32,768 slots cost 13 MB per service, which is why it is not larger.
    // The standard OTEL_BSP_* variables still override these defaults.
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(env_or("OTEL_BSP_MAX_QUEUE_SIZE", 4_096))
        .with_max_export_batch_size(env_or("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
        .with_scheduled_delay(std::time::Duration::from_millis(env_or(
            "OTEL_BSP_SCHEDULE_DELAY",
            500,
        )))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .build();
    let tracer = provider.tracer(service);

    // Our own spans are INFO; the libraries underneath (hyper, async-nats)
    // would flood the trace with internals, so the OTel layer only sees ours.
    let otel_filter = EnvFilter::new("info,h2=off,hyper=off,reqwest=off,tower=off,async_nats=off");
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // The layer's defaults add eight attributes to every span
                // (source file, line and module, thread id and name, target,
                // busy and idle time) and swap the active OpenTelemetry
                // context and read the clock each time an instrumented
                // future is polled. Our spans carry the messaging attributes
                // that matter and nothing here reads the active context
                // (propagation goes through `Span::context`), so all of that
                // was pure cost: about a fifth of the bytes exported to
                // Jaeger, and the layer's `on_enter` was the services'
                // hottest tracing function in the profile.
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_filter(otel_filter),
        )
        .with(
            tracing_subscriber::fmt::layer()
                // Colour only on a terminal: `make run` and the tests pipe
                // the output into files and prefixes.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .event_format(TraceIdFormat::default())
                .with_filter(log_filter),
        )
        .try_init()?;
    Ok(Telemetry { provider })
}

/// A numeric setting from the environment, or its default.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Telemetry {
    /// Exports every finished span still buffered. Blocking, so it runs on a
    /// blocking thread; called once at the very end of `main`.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("flushing spans failed: {error}"),
            Err(error) => eprintln!("flushing spans panicked: {error}"),
        }
    }
}

/// The trace id of the current span, in the 32-hex-digit W3C form.
pub fn current_trace_id() -> String {
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

/// Writes the context of `span` into NATS headers as `traceparent`/`tracestate`.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// Reads the producer's context from NATS headers.
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(headers))
        }),
        None => Context::new(),
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// The default log format with `trace_id=… span_id=…` in front, so a log line
/// can be looked up in Jaeger and a span's logs found by grep.
#[derive(Default)]
struct TraceIdFormat {
    inner: Format<Full>,
}

impl<S> FormatEvent<S, DefaultFields> for TraceIdFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, DefaultFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            write!(
                writer,
                "trace_id={} span_id={} ",
                span_context.trace_id(),
                span_context.span_id()
            )?;
        }
        <Format<Full> as FormatEvent<S, DefaultFields>>::format_event(
            &self.inner,
            ctx,
            writer,
            event,
        )
    }
}
