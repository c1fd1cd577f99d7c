# syntax=docker/dockerfile:1
# oauthrelay: a static binary on distroless (CA certificates, a non-root
# user, nothing else). Configure it with OAUTHRELAY_* variables alone, or
# mount a YAML file and pass --config.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/oauthrelay ./cmd/oauthrelay \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/oauthrelay /usr/local/bin/oauthrelay
COPY --from=build --chown=65532:65532 /out/data /data
# Spool, keysafe, keysafe key and generated admin token live on /data.
# The listener accepts the networks the container is attached to (loopback
# and each interface's subnet, resolved at start: the app beside it), not
# every private range. With --network host that is the host's networks, so
# list the app's address instead; never publish 2525, and publish 8025 on
# the host's 127.0.0.1 only.
ENV OAUTHRELAY_SPOOL_DIR=/data/spool \
    OAUTHRELAY_KEYSAFE_PATH=/data/keysafe.bin \
    OAUTHRELAY_LISTEN_ADDR=0.0.0.0:2525 \
    OAUTHRELAY_LISTEN_HOSTNAME=oauthrelay \
    OAUTHRELAY_LISTEN_ALLOWED_NETWORKS=attached \
    OAUTHRELAY_ADMIN_ADDR=0.0.0.0:8025 \
    OAUTHRELAY_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 2525 8025
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["oauthrelay", "health"]
ENTRYPOINT ["oauthrelay"]
CMD ["serve"]
