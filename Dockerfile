# The tms binary in a small image, for docker-compose.yml. Every role is the
# same binary: the service's command picks serve, ingress or worker.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/tms ./cmd/tms

# The debug variant of distroless static: the same base plus busybox in
# /busybox, whose wget runs the compose healthchecks against /readyz.
FROM gcr.io/distroless/static-debian12:debug-nonroot
COPY --from=build /out/tms /tms
# Public API and internal ("within VPN") listeners; a worker's ops
# listener (--ops-addr) in docker-compose.yml.
EXPOSE 8080 8081 8082
ENTRYPOINT ["/tms"]
CMD ["help"]
