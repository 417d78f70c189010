# camgate's container image. Three stages: the binary is built on Debian 12 against its FFmpeg 5.1 dev
# packages, the dashboard's player is installed from the npm lock file, and the final image is a slim
# Debian 12 with only the FFmpeg runtime libraries, fonts, the binary and web/. Both Debian stages install
# their packages through scripts/install-deps.sh, so the image and a developer machine cannot drift apart.
#
#   docker build -t camgate .
#   docker run -p 7000:7000 camgate --config /etc/camgate/camgate.toml   (mount the file there)
#   docker compose up                                                    (camgate next to SRS)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN scripts/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
RUN cargo build --release --locked --bin camgate

FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
# The player only: the browser test's driver is a dev dependency.
RUN npm ci --omit=dev --no-audit --no-fund
COPY web/index.html web/dashboard.js web/dashboard.css ./

FROM debian:bookworm-slim
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin camgate
WORKDIR /app
COPY --from=build /src/target/release/camgate /usr/local/bin/camgate
COPY --from=web /web /app/web
USER camgate
# Listen on every interface inside the container; publish the port to choose who reaches it.
ENV CAMGATE_LISTEN=0.0.0.0:7000 \
    CAMGATE_WEB_DIR=/app/web
EXPOSE 7000
# Assumes the default port; change it here too when setting another listen address.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:7000/healthz >/dev/null || exit 1
ENTRYPOINT ["camgate"]
