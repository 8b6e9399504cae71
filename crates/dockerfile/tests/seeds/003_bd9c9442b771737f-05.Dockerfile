# Stage 1: Dependencies
FROM golang:1.21-alpine AS deps

WORKDIR /app
COPY go.mod go.sum ./
RUN go mod download

# Stage 2: Build
FROM golang:1.21-alpine AS builder

WORKDIR /app
COPY --from=deps /go/pkg /go/pkg
COPY . .
RUN go build -o main .

# Stage 3: Runtime
FROM alpine:latest

COPY --from=builder /app/main .
CMD ["./main"]
