# Stage 1: Base
FROM golang:1.21-alpine AS base

WORKDIR /app
COPY go.mod go.sum ./
RUN go mod download

# Stage 2: Development
FROM base AS development

COPY . .
RUN go build -o main .

CMD ["./main"]

# Stage 3: Production
FROM base AS production

COPY . .
RUN CGO_ENABLED=0 go build -ldflags="-w -s" -o main .

FROM alpine:latest AS production-runtime

COPY --from=production /app/main .
CMD ["./main"]
