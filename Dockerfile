# Keelson: a multi-stage build. The runtime image holds the `keelson` binary and nothing else
# (no shell, no package manager) and runs as a non-root user.
#
#   docker build -t keelson:0.1 .
#   docker run --rm keelson:0.1 --help

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY runtime/Cargo.toml runtime/
COPY rules/Cargo.toml rules/
COPY actors/Cargo.toml actors/
COPY gateway/Cargo.toml gateway/
COPY bridge/Cargo.toml bridge/
COPY chaos/Cargo.toml chaos/
COPY . .
RUN cargo build --release --locked --bin keelson \
    && strip target/release/keelson

# glibc and libgcc only; user 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/keelson /usr/local/bin/keelson
USER 65532:65532
EXPOSE 8080 4701 9101
ENTRYPOINT ["/usr/local/bin/keelson"]
CMD ["--help"]
