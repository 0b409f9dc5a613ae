# syntax=docker/dockerfile:1
#
# One Dockerfile for all four services; the build arg SERVICE picks the image:
#
#   docker build --build-arg SERVICE=payment -t eda-payment .
#
# Stages:
#   chef     rust toolchain + cargo-chef
#   planner  distils the Cargo manifests into recipe.json
#   builder  compiles the dependencies from recipe.json (a layer that survives
#            source edits), then all four service binaries at once. Nothing
#            before the final stage depends on SERVICE, so `docker compose
#            build` compiles the workspace once and the four images share it.
#   svc-*    one tiny runtime stage per service (distroless, non-root), which
#            differ only in entrypoint, exposed port and health check
#   final    `FROM svc-${SERVICE}`: BuildKit builds only the selected stage.
#
# SERVICE must be one of: order, payment, shipping, email (lower case). Any
# other value makes `FROM svc-${SERVICE}` look for an image of that name, so
# the build fails with "pull access denied ... svc-<value>".

ARG RUST_VERSION=1.95.0
ARG SERVICE=order

# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# ---------------------------------------------------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---------------------------------------------------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: cached until a Cargo.toml or Cargo.lock changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      -p order -p payment -p shipping -p email
COPY . .
RUN cargo build --release --locked \
      -p order -p payment -p shipping -p email \
 && mkdir -p /out \
 && cp target/release/order target/release/payment \
       target/release/shipping target/release/email /out/

# ---------------------------------------------------------------------------
# glibc + libgcc + CA certificates, no shell, no package manager.
# The :nonroot tag runs as uid/gid 65532. The binary stays owned by root, so
# the service cannot rewrite it. No configuration and no credentials are
# baked in: settings come from the environment and the NATS password from a
# secret file mounted at run time (NATS_PASSWORD_FILE); .dockerignore keeps
# deploy/ (and its development secrets) out of the build context altogether.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG SERVICE
COPY --from=builder /out/${SERVICE} /usr/local/bin/${SERVICE}
# Numeric, so that an orchestrator can verify "runs as non-root" (Kubernetes'
# runAsNonRoot) without looking the name up in the image.
USER 65532:65532
# The services drain in-flight messages and flush traces on SIGTERM.
STOPSIGNAL SIGTERM

# Exec-form ENTRYPOINT/HEALTHCHECK do not expand build args, hence one stage
# per service. `<binary> healthcheck` GETs http://127.0.0.1:<HTTP_ADDR port>/readyz
# and exits 0 when ready (the image has no shell or curl).

FROM runtime AS svc-order
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/order", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/order"]

FROM runtime AS svc-payment
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/payment", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/payment"]

FROM runtime AS svc-shipping
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/shipping", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/shipping"]

FROM runtime AS svc-email
EXPOSE 8083
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/email", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/email"]

# ---------------------------------------------------------------------------
FROM svc-${SERVICE}
