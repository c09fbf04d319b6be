# Builds the three binaries: smart-joiner (admin CLI, single-machine mode and the pool
# exporter), producer, worker. A second target, `tgsim`, is the loopback Telegram DC the
# compose smoke test (deploy/smoke.sh) runs as Telegram; it is never part of the default image.
#
#   docker build -t smart-joiner .
#   docker build --target tgsim -t smart-joiner-tgsim .
#   docker run --rm smart-joiner smart-joiner --help

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p smart-joiner -p producer -p worker -p tgsim \
 && mkdir -p /out /out-tgsim \
 && cp target/release/smart-joiner target/release/producer target/release/worker /out/ \
 && cp target/release/tgsim /out-tgsim/

FROM debian:bookworm-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 joiner \
 && useradd --system --uid 10001 --gid joiner --home-dir /app --create-home joiner
WORKDIR /app
USER 10001:10001

FROM base AS tgsim
COPY --from=build /out-tgsim/tgsim /usr/local/bin/
ENTRYPOINT ["tgsim"]

FROM base AS runtime
COPY --from=build /out/ /usr/local/bin/
# Logs go to stdout; the file copy goes to /app/logs (mount a volume to keep it).
ENV LOG_DIR=/app/logs \
    ACCOUNTS_CONFIG=/etc/smart-joiner/accounts_config.json
EXPOSE 9090
CMD ["worker"]
