# Paddock image: docker build --build-arg VERSION=v0.1.0 -t ghcr.io/paddock-csi/paddock:v0.1.0 .

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, so they stay cached while only the source changes.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/paddock ./cmd/paddock

FROM debian:bookworm-slim
# nfs-common: mount.nfs (and its helpers) for NFSv3/v4 mounts; netbase: /etc/services and
# /etc/protocols, which mount.nfs and the RPC library look up. mount (util-linux) is already in the
# base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nfs-common netbase \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/paddock /paddock
ENTRYPOINT ["/paddock"]
