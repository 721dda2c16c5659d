# Paddock image, multi-arch (linux/amd64 and linux/arm64; any GOARCH Debian has a port for):
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/paddock-csi/paddock:v0.1.0 --push .
#   docker build -t ghcr.io/paddock-csi/paddock:v0.1.0 .          # the builder's own platform only
#
# The binary is cross-compiled on the builder's platform (pure Go, CGO_ENABLED=0) for the target's,
# so no emulation runs the compiler; only the image stage's apt-get runs as the target (buildx uses
# QEMU binfmt for a foreign one). paddock --version prints VERSION (the repository's VERSION file
# unless --build-arg VERSION=... says otherwise), the release the manifests pin this image at.
# make image-archive builds the same image from the same package list without a registry
# (hack/image.sh).

FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, so they stay cached while only the source changes.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Set by BuildKit for each platform of --platform (linux/arm64: TARGETOS=linux, TARGETARCH=arm64).
ARG TARGETOS
ARG TARGETARCH
ARG VERSION
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w -X main.version=${VERSION:-$(cat VERSION)}" -o /out/paddock ./cmd/paddock

FROM debian:bookworm-slim
# The packages listed in build/image/packages (mount.nfs and what it looks up; mount and umount
# are already in the base image), for the target's architecture. hack/image.sh builds the same
# image without a registry (make image-archive).
COPY build/image/packages /tmp/packages
RUN apt-get update \
    && sed -e 's/#.*//' /tmp/packages | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/packages
COPY --from=build /out/paddock /paddock
ENTRYPOINT ["/paddock"]
