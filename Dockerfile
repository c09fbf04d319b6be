# Builds the three binaries: smart-joiner (admin CLI and single-machine mode), producer, worker.
#
#   docker build -t smart-joiner .
#   docker run --rm smart-joiner smart-joiner --help

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p smart-joiner -p producer -p worker \
 && mkdir -p /out \
 && cp target/release/smart-joiner target/release/producer target/release/worker /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 joiner \
 && useradd --system --uid 10001 --gid joiner --home-dir /app --create-home joiner
COPY --from=build /out/ /usr/local/bin/
WORKDIR /app
USER 10001:10001
# Logs go to stdout; the file copy goes to /app/logs (mount a volume to keep it).
ENV LOG_DIR=/app/logs \
    ACCOUNTS_CONFIG=/etc/smart-joiner/accounts_config.json
EXPOSE 9090
CMD ["worker"]
