# The tms binary in a small image, for docker-compose.yml. Every role is the
# same binary: the service's command picks serve, ingress or worker.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/tms ./cmd/tms

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tms /tms
# Public API and internal ("within VPN") listeners.
EXPOSE 8080 8081
ENTRYPOINT ["/tms"]
CMD ["help"]
