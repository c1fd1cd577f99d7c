# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on distroless (CA certificates, a
# non-root user, nothing else).
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
# Spool and keysafe live on /data; listen on all interfaces inside the
# container (publish the admin port on the host's 127.0.0.1 only).
ENV OAUTHRELAY_SPOOL_DIR=/data/spool \
    OAUTHRELAY_KEYSAFE_PATH=/data/keysafe.bin \
    OAUTHRELAY_LISTEN_ADDR=0.0.0.0:2525 \
    OAUTHRELAY_ADMIN_ADDR=0.0.0.0:8025
VOLUME ["/data"]
EXPOSE 2525 8025
USER 65532:65532
ENTRYPOINT ["oauthrelay"]
CMD ["serve"]
