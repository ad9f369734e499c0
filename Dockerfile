# syntax=docker/dockerfile:1
# SOM: one `som` binary that migrates, serves and works.

# --- builder: dependencies first (cached while only sources change), then SOM itself --------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
# How SQLite is compiled (LIBSQLITE3_FLAGS), for the dependency layer too.
COPY .cargo .cargo
COPY som-core/Cargo.toml som-core/Cargo.toml
COPY som-server/Cargo.toml som-server/Cargo.toml
COPY som-cli/Cargo.toml som-cli/Cargo.toml
# Stub sources so that the dependency graph builds on its own layer.
RUN mkdir -p src som-core/src som-server/src som-cli/src examples \
    && echo '' > src/lib.rs \
    && echo 'fn main() {}' > examples/embed.rs \
    && echo '' > som-core/src/lib.rs \
    && echo '' > som-server/src/lib.rs \
    && echo 'fn main() {}' > som-cli/src/main.rs \
    && cargo build --release --locked -p som-cli \
    && rm -rf src som-core/src som-server/src som-cli/src examples
COPY . .
# Make sure cargo sees the real sources as newer than the stubs.
RUN touch som-core/src/lib.rs som-server/src/lib.rs som-cli/src/main.rs \
    && cargo build --release --locked -p som-cli \
    && cp target/release/som /usr/local/bin/som

# --- runtime: a slim Debian with the binary and a non-root user ------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/som --create-home som
COPY --from=builder /usr/local/bin/som /usr/local/bin/som
USER som
WORKDIR /var/lib/som
# The SQLite database (som.db, the default SOM_DATABASE_URL) lives here: mount a volume on it.
VOLUME ["/var/lib/som"]
ENV SOM_LISTEN=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["som", "healthcheck", "--url", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["som"]
CMD ["serve"]
