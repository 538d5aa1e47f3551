# traffikd container image.
#   docker build -t traffik:0.1.0 .        (or: podman build --format docker ...)
#   docker run -p 50051:50051 -p 9464:9464 traffik:0.1.0
# The config is read from /etc/traffik/traffik.yaml (mount your own there, e.g. from
# a ConfigMap as the Helm chart in charts/traffik does). The image's default config
# serves tenant "default" on the in-memory backend on 0.0.0.0:50051, metrics on :9464.
# .ci/image-test builds and runs this image with podman on every CI run.

ARG DEBIAN_IMAGE=debian:bookworm
ARG DEBIAN_SLIM_IMAGE=debian:bookworm-slim

# ---- build: the same Debian packages as a developer machine (.ci/deps) ----------
FROM ${DEBIAN_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
COPY .ci/deps /src/.ci/deps
RUN bash /src/.ci/deps && rm -rf /var/lib/apt/lists/*
# The whole source tree (.dockerignore keeps out build dirs, .git, charts, docs).
COPY . /src
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DTRAFFIK_BUILD_TESTS=OFF -DTRAFFIK_BUILD_BENCH=OFF \
        -Wno-dev >/dev/null \
 && cmake --build /build -j"$(nproc)" --target traffikd \
 && strip --strip-unneeded -o /traffikd /build/server/traffikd \
 && /traffikd --version

# ---- runtime: bookworm-slim + the shared libraries traffikd links ---------------
# (ldd build/server/traffikd, mapped to packages with dpkg -S; libc6, libstdc++6,
# libgcc-s1 and zlib1g are already in the slim image.)
FROM ${DEBIAN_SLIM_IMAGE} AS runtime
ARG TRAFFIK_UID=10001
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libabsl20220623 libc-ares2 libevent-2.1-7 libevent-openssl-2.1-7 libgrpc++1.51 libgrpc29 \
      libhiredis0.14 libprometheus-cpp-core1.0 libprotobuf32 libre2-9 libssl3 \
      libyaml-cpp0.7 >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && groupadd --system --gid "${TRAFFIK_UID}" traffik \
 && useradd --system --uid "${TRAFFIK_UID}" --gid traffik --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin traffik
COPY --from=build /traffikd /usr/local/bin/traffikd
RUN mkdir -p /etc/traffik && printf '%s\n' \
      '# Default config of the traffikd image; mount your own over /etc/traffik/traffik.yaml.' \
      'listen: "0.0.0.0:50051"' \
      'metrics_listen: "0.0.0.0:9464"' \
      'tenants:' \
      '  - name: default' \
      '    backend: memory' \
      'default_tenant: default' \
      'shutdown_grace: 10s' \
      > /etc/traffik/traffik.yaml \
 && chmod 0644 /etc/traffik/traffik.yaml
RUN /usr/local/bin/traffikd --check-config --config /etc/traffik/traffik.yaml
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER ${TRAFFIK_UID}:${TRAFFIK_UID}
EXPOSE 50051/tcp 9464/tcp
# traffikd turns health NOT_SERVING on SIGTERM, waits drain_delay, then lets in-flight
# calls finish for up to shutdown_grace and exits 0 (it handles signals as PID 1).
STOPSIGNAL SIGTERM
# Health from inside the image, no extra tools: the binary's own gRPC health client.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/traffikd", "--health-check", "127.0.0.1:50051"]
ENTRYPOINT ["/usr/local/bin/traffikd"]
CMD ["--config", "/etc/traffik/traffik.yaml"]
