# wagate: build with cargo alone (protos compile in build.rs, no protoc),
# run as a non-root user on distroless with the store on a volume.
#
#   docker build -t wagate .
#   docker run -p 50051:50051 -p 9090:9090 -v wagate-data:/data wagate

FROM rust:1.88-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
# Cargo.toml declares [[bench]] targets; cargo refuses a manifest whose
# targets are missing, even when building only the binary.
COPY benches benches
RUN cargo build --release --locked --bin wagate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/wagate /usr/local/bin/wagate
ENV WAGATE_LISTEN=0.0.0.0:50051 \
    WAGATE_METRICS_LISTEN=0.0.0.0:9090 \
    WAGATE_DATA_DIR=/data \
    WAGATE_LOG_FORMAT=json
# distroless "nonroot": uid/gid 65532
USER 65532:65532
VOLUME ["/data"]
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/wagate"]
