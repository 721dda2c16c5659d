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
# The packages listed in build/image/packages (mount.nfs and what it looks up; mount and umount
# are already in the base image). hack/image.sh builds the same image from the same list
# without a registry (make image-archive).
COPY build/image/packages /tmp/packages
RUN apt-get update \
    && sed -e 's/#.*//' /tmp/packages | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/packages
COPY --from=build /out/paddock /paddock
ENTRYPOINT ["/paddock"]
